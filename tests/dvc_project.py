"""A copy of the project with a slice of the demo data, for the tests that run `dvc repro` as a
user does (test_dvc_pipeline)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY

# A five-sign slice of the demo (5 sessions x 2 recordings each) and the tests' tiny model: this
# test is about what reruns and whether every stage's outputs are well formed, not what is learned.
DEMO_WORDS = ("bad", "glad", "good", "no", "yes")
FYDPASL_WORDS = ("hello", "no")

def _run(args, cwd):
    completed = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout + completed.stderr


def make_project(copy: Path) -> Path:
    """The project's code and params (tiny model, one epoch each) with the demo slice, as a git repository."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy2(REPO / name, copy / name)
    for folder in ("slrpipe", "stages", ".dvc"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    demo = REPO / "data" / "demo"
    (copy / "data" / "demo").mkdir(parents=True)
    for name in ("LICENSE", "README.md"):  # the recordings' licence and attribution travel with them
        shutil.copy2(demo / name, copy / "data" / "demo" / name)
    for session in sorted(demo.glob("MP_Data*")):
        for word in DEMO_WORDS:
            shutil.copytree(session / word, copy / "data" / "demo" / session.name / word)
    # The demo's unlabelled corpus member, cut to 2 x 4 recordings.
    fydpasl = REPO / "data" / "fydpasl"
    (copy / "data" / "fydpasl").mkdir(parents=True)
    for name in ("LICENSE", "README.md"):
        shutil.copy2(fydpasl / name, copy / "data" / "fydpasl" / name)
    for word in FYDPASL_WORDS:
        for sequence in range(4):
            shutil.copytree(fydpasl / word / str(sequence), copy / "data" / "fydpasl" / word / str(sequence))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["model"] = {"size": "tiny", "sizes": {"tiny": TINY.model_dump(mode="json")}}
    # One torch thread per stage: the suite runs a test worker per core beside it.
    params["pretrain"].update(epochs=1, knn_every=1, num_workers=0, threads=1, lr_steps=[], bank_size=16, transfer_top_k=8)
    params["finetune"]["schedules"]["finetune"] = {"epochs": 1, "lr_steps": []}
    params["finetune"].update(num_workers=0, threads=1)
    params["augment"]["frames"] = 16
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], copy)
    # dvclive (pretrain) needs a repository with a commit, as every clone has.
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], copy)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], copy)
    return copy


STAGES = ("extract@ksl13", "extract@fydpasl", "preprocess@ksl13", "preprocess@fydpasl", "corpus", "pretrain",
          "finetune@ksl13", "evaluate@ksl13", "baseline@ksl13", "report")


def dvc(project: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], project)


def set_param(project: Path, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stale_stages(project: Path) -> set[str]:
    """The stages `dvc status` finds changed, less the inputs@ stages it always lists."""
    return {stage for stage in json.loads(dvc(project, "status", "--json")) if not stage.startswith("inputs@")}


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")} - {
        "inputs@ksl13", "inputs@fydpasl"}
