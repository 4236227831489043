"""The per-dataset DVC graph: a change to one dataset's params reruns its own branch and
pretraining onwards, the corpus stage follows pretrain.corpus, and pretrain.corpus_fraction 0
runs end to end. A project of its own, so it runs beside test_dvc_pipeline on another worker."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.dvc_project import dvc, make_project, ran_stages, set_param, stale_stages

pytestmark = [pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git"), pytest.mark.xdist_group("dvc_graph")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


def test_one_datasets_params_rerun_its_branch_and_pretraining_onwards_only(project):
    """Each dataset has its own extract@/preprocess@ stages: a change to
    the unlabelled member's entry reruns its branch, the corpus and what follows, never ksl13's
    extraction or preprocessing; a change to pretrain.corpus reruns the corpus stage onwards."""
    dvc(project, "repro")
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
