"""The pipeline as a user runs it: `dvc repro` on a copy of the project with the demo data."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from slrpipe.model.classifier import load_model
from slrpipe.h5io import RaggedFile
from tests.dvc_project import DEMO_WORDS, STAGES, dvc, make_project, ran_stages, set_param, stale_stages

# One project for the module's tests, which run in order on one test worker.
pytestmark = [pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git"), pytest.mark.xdist_group("dvc_pipeline")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


def test_repro_then_nothing_then_only_what_changed(project):
    first = dvc(project, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first
    # Every stage's outputs exist and are well formed (the CI smoke run of the whole chain).
    recordings = len(list((project / "data" / "demo").glob("MP_Data*/*/*")))
    with RaggedFile(project / "data" / "extract" / "ksl13" / "keypoints.h5") as keypoints:
        assert len(keypoints) == recordings == 5 * len(DEMO_WORDS) * 2
        assert len(set(keypoints.column("signer"))) == 5
    skipped = (project / "data" / "preprocess" / "ksl13" / "preprocess_report.csv").read_text().count("\n") - 1
    with RaggedFile(project / "data" / "preprocess" / "ksl13" / "dataset.h5") as dataset:
        assert len(dataset) == recordings - skipped and set(dataset.column("split")) == {"train", "val", "test"}
        tested = list(dataset.column("split")).count("test")
        trained = list(dataset.column("split")).count("train")
    with RaggedFile(project / "data" / "preprocess" / "fydpasl" / "dataset.h5") as unlabelled:
        assert set(unlabelled.column("split")) == {"train"} and set(unlabelled.column("label")) == {-1}
        unlabelled_count = len(unlabelled)
    summary = json.loads((project / "data" / "corpus" / "corpus_summary.json").read_text())
    assert summary["members"]["ksl13"]["chosen"] == trained and summary["members"]["fydpasl"]["chosen"] == unlabelled_count > 0
    assert summary["unlabelled"] == unlabelled_count and summary["samples"] == trained + unlabelled_count
    assert (project / "data" / "models" / "pretrain" / "checkpoint.pt").is_file()
    assert "knn_top1" in json.loads((project / "data" / "dvclive" / "pretrain" / "metrics.json").read_text())["val"]
    model, meta = load_model(project / "data" / "models" / "finetune" / "ksl13" / "best.pt")
    assert len(meta["glosses"]) == len(DEMO_WORDS)
    metrics = json.loads((project / "reports" / "eval" / "ksl13" / "metrics.json").read_text())
    assert list(metrics) == ["test", "selected"]
    assert 0 <= metrics["test"]["per_instance"]["top1"] <= 1 and "top5" in metrics["test"]["per_class"]
    assert metrics["test"]["samples"] == tested
    assert metrics["selected"]["epoch"] == 1 and set(metrics["selected"]) == {"epoch", "val"}  # finetune.select: val
    results = (project / "reports" / "results.md").read_text()
    assert "P-I top-1" in results and "| Model selection | epoch 1 of 1, the best validation top-1" in results
    for figure in ("tsne.png", "curves.png"):
        assert (project / "reports" / "figures" / figure).stat().st_size > 10_000

    second = dvc(project, "repro")
    # inputs@<dataset> rehashes every time
    assert "Running stage" not in second.replace("Running stage 'inputs@ksl13'", "").replace("Running stage 'inputs@fydpasl'", "")

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["extract"]["max_bad_fraction"] = 0.2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status")
    assert "params.yaml" in status and "modified:           extract" in status
    third = dvc(project, "repro")
    for stage in ("extract@ksl13", "extract@fydpasl"):
        assert f"Running stage '{stage}'" in third
    assert "Running stage 'pretrain'" not in third  # the same dataset.h5 files came out: nothing below reruns

    params["preprocess"]["max_frames"] = 20
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fourth = dvc(project, "repro")
    assert "Running stage 'preprocess@ksl13'" in fourth and "Running stage 'extract@ksl13'" not in fourth
    assert "Running stage 'pretrain'" in fourth

    # (`dvc exp run` is the next test's: its corpus_fraction 0 experiment.)
    with RaggedFile(project / "data" / "preprocess" / "ksl13" / "dataset.h5") as dataset:
        assert max(np.diff(dataset.offsets)) == 20


def test_one_datasets_params_rerun_its_branch_and_pretraining_onwards_only(project):
    """Run after the repro test. Each dataset has its own extract@/preprocess@ stages: a change to
    the unlabelled member's entry reruns its branch, the corpus and what follows, never ksl13's
    extraction or preprocessing; a change to pretrain.corpus reruns the corpus stage onwards."""
    dvc(project, "repro")  # up to date (or made so when this test runs alone)
    assert stale_stages(project) == set()

    # The unlabelled member's frame shape: its coordinates change, so pretraining reads other data.
    set_param(project, "datasets.fydpasl.frame_size", [640, 240])
    # corpus depends on all of `datasets` (labelled, pretrain_splits); report prints every section
    assert stale_stages(project) == {"extract@fydpasl", "corpus", "report"}
    ran = ran_stages(dvc(project, "repro"))
    assert ran == {"extract@fydpasl", "preprocess@fydpasl", "corpus", "pretrain", "finetune@ksl13", "evaluate@ksl13",
                   "report"}, ran

    # Leaving the unlabelled member out of the corpus: no dataset is extracted or preprocessed again
    # (pretrain reads the whole pretrain section, so it is stale at once; finetune once it has run).
    set_param(project, "pretrain.corpus", ["ksl13"])
    assert stale_stages(project) == {"corpus", "pretrain", "report"}
    assert ran_stages(dvc(project, "repro", "--dry", "corpus")) == {"corpus"}
    dvc(project, "repro", "corpus")
    summary = json.loads((project / "data" / "corpus" / "corpus_summary.json").read_text())
    assert list(summary["members"]) == ["ksl13"] and summary["unlabelled"] == 0
    assert stale_stages(project) == {"pretrain", "report"}
    set_param(project, "pretrain.corpus", ["ksl13", "fydpasl"])
    dvc(project, "repro", "corpus")
    assert stale_stages(project) == set()  # the same corpus.csv as before: nothing below needs a rerun

    # The README's Table VI pair, its 0 end: no pretraining, fine-tuning from random weights.
    zero = ran_stages(dvc(project, "exp", "run", "-S", "pretrain.corpus_fraction=0"))
    assert zero == {"corpus", "pretrain", "finetune@ksl13", "evaluate@ksl13", "report"}, zero
    checkpoint = torch.load(project / "data" / "models" / "pretrain" / "checkpoint.pt", weights_only=True)
    assert checkpoint.get("untrained") is True
    summary = json.loads((project / "data" / "corpus" / "corpus_summary.json").read_text())
    assert summary["samples"] == 0 and summary["fraction"] == 0
    assert "No pretraining: `pretrain.corpus_fraction: 0`" in (project / "reports" / "results.md").read_text()


def test_push_to_and_pull_from_a_local_remote(project, tmp_path):
    """Run after the repro test: the outputs go to a directory remote and come back identical."""
    import hashlib

    outputs = [project / "data" / "extract" / "ksl13" / "keypoints.h5", project / "data" / "preprocess" / "ksl13" / "dataset.h5",
               project / "data" / "models" / "finetune" / "ksl13" / "best.pt"]
    if not all(path.is_file() for path in outputs):
        dvc(project, "repro")
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in outputs}
    dvc(project, "remote", "add", "-f", "-d", "storage", str(tmp_path / "remote"))
    dvc(project, "push")
    for path in outputs:
        path.unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, "pull")
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in outputs} == digests
