"""A `manifest` dataset's files outside the project are tracked: `dvc repro` reruns extract when
one of them changes, and only then (a real DVC repository, extract of three pose files)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from slrpipe.config import DatasetParams
from slrpipe.pose.inputs import MISSING, path_digest, referenced_outside_root
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")


def _run(args, cwd) -> str:
    # The stages' `python` must be this interpreter, with slrpipe's requirements.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout + completed.stderr


def _dvc(project: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], project)


def _sequence(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.default_rng(seed).random((12, 258)).astype(np.float32))


def _manifest_project(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the project whose dataset is a manifest listing pose files in a folder beside it."""
    project, clips = tmp_path / "project", tmp_path / "clips"
    project.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, project / name)
    for folder in ("slrpipe", "stages", ".dvc"):
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    for index, gloss in enumerate(("hello", "hello", "thanks")):
        _sequence(clips / f"{gloss}{index}.npy", index)
    (project / "lists").mkdir()
    (project / "lists" / "all.csv").write_text(
        "path,gloss\n../../clips/hello0.npy,hello\n../../clips/hello1.npy,hello\n../../clips/thanks2.npy,thanks\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"ksl13": {**params["datasets"]["ksl13"], "source": "manifest", "root": "lists/all.csv"}}
    params["pretrain"]["corpus"] = ["ksl13"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], project)
    return project, clips


def test_changing_a_referenced_file_reruns_extract(tmp_path):
    project, clips = _manifest_project(tmp_path)
    first = _dvc(project, "repro", "extract@ksl13")
    assert "Running stage 'inputs@ksl13'" in first and "Running stage 'extract@ksl13'" in first
    assert "../../clips/thanks2.npy" in (project / "data" / "inputs" / "ksl13" / "digests.csv").read_text()
    again = _dvc(project, "repro", "extract@ksl13")
    assert "Running stage 'inputs@ksl13'" in again and "Running stage 'extract@ksl13'" not in again  # same digests
    assert "extract@ksl13:" not in _dvc(project, "status", "extract@ksl13")

    _sequence(clips / "thanks2.npy", 99)  # the same name and size, other content
    _dvc(project, "repro", "inputs@ksl13")  # what `dvc repro` runs first
    status = _dvc(project, "status", "extract@ksl13")
    assert "extract@ksl13:" in status and "modified:" in status and "data/inputs/ksl13/digests.csv" in status, status


def test_only_files_outside_a_folder_root_are_hashed(tmp_path):
    _sequence(tmp_path / "root" / "hello" / "0.npy", 0)
    folder = DatasetParams(source="mp_data", root=tmp_path / "root")
    assert referenced_outside_root(folder) == ([], 1)  # DVC hashes the root itself
    (tmp_path / "list.csv").write_text("path,gloss\nroot/hello/0.npy,hello\nabsent.npy,gone\n")
    listed = DatasetParams(source="manifest", root=tmp_path / "list.csv")
    assert referenced_outside_root(listed) == (["absent.npy", "root/hello/0.npy"], 2)
    assert path_digest(tmp_path / "absent.npy") == MISSING
    # A folder's digest changes with any file in it.
    before = path_digest(tmp_path / "root")
    _sequence(tmp_path / "root" / "hello" / "0.npy", 1)
    assert path_digest(tmp_path / "root") != before
