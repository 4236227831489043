"""Stage outputs do not depend on where the project lies, and stages find the project's files
from anywhere: what makes dvc.lock the same on every clone."""

from __future__ import annotations

import hashlib
import shutil

import yaml
from typer.testing import CliRunner

from slrpipe.config import load_params
from slrpipe.pose.extract import run_extract
from slrpipe.h5io import RaggedFile
from slrpipe.data.preprocess import run_preprocess
from stages.cli import app
from tests.conftest import REPO, one_dataset

DEMO = REPO / "data" / "demo"
# Four samples of the demo: two signs by two signers (frame folders of MediaPipe vectors).
SAMPLES = ("MP_Data/bad/0", "MP_Data/glad/1", "MP_Data1/bad/0", "MP_Data1/glad/1")


def _demo_copy(root):
    for sample in SAMPLES:
        shutil.copytree(DEMO / sample, root / sample)
    return root


def _project(folder, dataset: dict, **sections):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(one_dataset(dataset, "demo", **sections)))
    return folder / "params.yaml"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_clones_give_the_same_extract_outputs(tmp_path):
    outputs = []
    for clone in (tmp_path / "alice" / "slr", tmp_path / "bob" / "work" / "projects" / "slr"):
        _demo_copy(clone / "data" / "demo")
        params = load_params(_project(clone, {"source": "mp_data", "root": "data/demo"},
                                      preprocess={"split": "random", "label_fractions": []}))
        run_extract(params, clone / "data" / "extract", None)
        run_preprocess(params, clone / "data" / "extract" / "keypoints.h5", clone / "data" / "preprocess")
        outputs.append(clone / "data" / "extract")
    first, second = outputs
    assert _digest(first.parent / "preprocess" / "dataset.h5") == _digest(second.parent / "preprocess" / "dataset.h5")
    manifest = (first / "manifest.csv").read_text()
    assert manifest == (second / "manifest.csv").read_text()
    assert "\nMP_Data/bad/0,MP_Data/bad/0,mp_frames," in manifest  # sample id, then its path in the dataset
    with RaggedFile(first / "keypoints.h5") as one, RaggedFile(second / "keypoints.h5") as other:
        assert list(one.column("path")) == list(other.column("path")) == list(SAMPLES)
        assert one.attr("dataset") == other.attr("dataset")
    for name in ("keypoints.h5", "manifest.csv", "glosses.txt", "extract_report.csv"):
        assert _digest(first / name) == _digest(second / name), name


def test_manifest_csv_paths_are_relative_to_its_folder(tmp_path):
    manifests = []
    for clone in (tmp_path / "one", tmp_path / "two" / "deeper"):
        _demo_copy(clone / "recordings")
        lines = ["path,gloss,signer"] + [f"../recordings/{s},{s.split('/')[1]},{s.split('/')[0]}" for s in SAMPLES]
        (clone / "lists").mkdir(parents=True)
        (clone / "lists" / "all.csv").write_text("\n".join(lines) + "\n")
        params = load_params(_project(clone, {"source": "manifest", "root": "lists/all.csv"}))
        result = run_extract(params, clone / "out", None)
        assert result.extracted == len(SAMPLES)
        manifests.append((clone / "out" / "manifest.csv").read_text())
    assert manifests[0] == manifests[1]
    assert "../recordings/MP_Data/bad/0" in manifests[0]


def test_a_stage_run_from_another_folder_writes_into_the_project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    _demo_copy(project / "data" / "demo")
    _project(project, {"source": "mp_data", "root": "data/demo"}, preprocess={"split": "random", "label_fractions": []})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["extract", "--params", "../project/params.yaml"])
    assert result.exit_code == 0, result.output
    assert (project / "data" / "extract" / "demo" / "keypoints.h5").is_file()  # the dataset's own folder
    assert not (elsewhere / "data").exists()
    # The next stage finds the extract stage's output in the project too.
    result = CliRunner().invoke(app, ["preprocess", "--params", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert (project / "data" / "preprocess" / "demo" / "preprocess_report.csv").is_file() and not (elsewhere / "data").exists()
    # A path given on the command line is taken from the current folder, as usual.
    result = CliRunner().invoke(app, ["extract", "--params", "../project/params.yaml", "--out-dir", "mine"])
    assert result.exit_code == 0 and (elsewhere / "mine" / "manifest.csv").is_file()
