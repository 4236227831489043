"""`augment.frames: auto`: the training split's median length, clamped to [16, 64], resolved once
when training starts and recorded in the checkpoint; evaluate uses the recorded number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slrpipe.config import AugmentParams
from slrpipe.data import frames as frames_module
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.frames import auto_frames, median_train_length, resolve_frames
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile
from slrpipe.evaluation import evaluate as evaluate_module
from slrpipe.evaluation.evaluate import run_evaluate
from slrpipe.finetune.train import run_finetune
from slrpipe.pretrain.train import run_pretrain
from tests.conftest import tiny_params
from tests.synthetic import write_dataset

# Training sequences of 20, 26 and 40 frames (median 26); validation and test ones much longer,
# so a median over every split would say otherwise.
LENGTHS = {"train": (20, 26, 40), "val": (90,), "test": (120,)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("frames") / "dataset.h5", per_signer=3, lengths=LENGTHS)


@pytest.mark.parametrize(("median", "expected"), [(3, 16), (16, 16), (26.4, 26), (63.6, 64), (150, 64)])
def test_auto_is_the_median_clamped_to_16_64(median, expected):
    assert auto_frames(median) == expected


def test_median_counts_the_training_split_only(dataset):
    assert median_train_length(dataset) == 26
    assert resolve_frames(AugmentParams(frames="auto"), dataset).frames == 26
    assert resolve_frames(AugmentParams(frames=40), dataset).frames == 40
    # A pretraining corpus: the chosen samples of every member (whatever their split), taken together.
    with RaggedFile(dataset) as data:
        ids, splits = list(data.column("sample_id")), list(data.column("split"))
        lengths = np.diff(data.offsets)
    chosen = [i for i, split in zip(ids, splits) if split != "train"]
    assert median_train_length({dataset: chosen}) == np.median([lengths[ids.index(i)] for i in chosen]) > 64
    with pytest.raises(SlrpipeError, match="no training samples"):
        median_train_length({dataset: []})


def test_the_loader_refuses_an_unresolved_auto(dataset):
    with pytest.raises(SlrpipeError, match="still 'auto'"):
        PoseDataset(dataset, AugmentParams(frames="auto"), "eval", split="test")


def test_checkpoints_record_the_number_and_evaluate_reads_it(dataset, tmp_path, monkeypatch):
    schedules = {name: {"epochs": 1, "lr_steps": []} for name in ("finetune", "linear", "semi", "scratch")}
    params = tiny_params(dataset.parent, 1, finetune={"schedules": schedules, "protocol": "scratch"})
    params = params.model_copy(update={"augment": params.augment.model_copy(update={"frames": "auto"})})
    run_pretrain(params, dataset, tmp_path / "pretrain", None, resume=False)
    assert torch.load(tmp_path / "pretrain" / "checkpoint.pt", weights_only=True)["extra"]["augment"]["frames"] == 26
    run_finetune(params, dataset, tmp_path / "none.pt", tmp_path / "model", None, resume=False)
    assert torch.load(tmp_path / "model" / "best.pt", weights_only=True)["augment"]["frames"] == 26

    # Evaluate takes the number from the model file: it never looks at the lengths again.
    def no_recomputation(_path):
        raise AssertionError("augment.frames was resolved again")

    monkeypatch.setattr(frames_module, "median_train_length", no_recomputation)
    seen = []
    original = evaluate_module.PoseDataset

    def spy(path, settings, *args, **kwargs):
        seen.append(settings.frames)
        return original(path, settings, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "PoseDataset", spy)
    result = run_evaluate(params, tmp_path / "model" / "best.pt", dataset, tmp_path / "eval")
    assert seen == [26] and result.samples == 9
    batch = original(dataset, AugmentParams(frames=26), "eval", split="test")[0]
    assert batch["view"]["joint"]["trunk"].shape[0] == 26
