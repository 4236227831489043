"""Exact resume: a training stage killed with SIGKILL mid-epoch and rerun ends with the same
tensors, tensor for tensor, as a run that was never interrupted, and its dvclive curves have
each epoch once."""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import random
import signal
from pathlib import Path

import pytest
import torch
import yaml
from torch.optim.optimizer import register_optimizer_step_post_hook

from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.config import load_params
from slrpipe.data.dataset import PoseDataset
from slrpipe.finetune.train import run_finetune
from slrpipe.pretrain.train import run_pretrain
from tests.conftest import build_ksl_dataset, tiny_params

EPOCHS = 3
BATCH = 6


@pytest.fixture(scope="module")
def small_dataset(shared, tmp_path_factory):
    """Two real KSL signs x 5 sessions x 3 sequences (18 training samples: 3 batches of 6)."""
    return build_ksl_dataset(shared, tmp_path_factory.mktemp("ksl2"), ("bad", "yes"), 3)


def _write_params(root: Path, path: Path, stage: str, workers: int) -> Path:
    if stage == "pretrain":
        params = tiny_params(root, EPOCHS, knn_every=1, batch_size=BATCH, num_workers=workers, lr_steps=[2])
    else:
        schedule = {"epochs": EPOCHS, "lr_steps": [2]}
        params = tiny_params(root, 1, finetune={"protocol": "scratch", "batch_size": BATCH, "num_workers": workers,
                                                "schedules": dict.fromkeys(("finetune", "linear", "semi", "scratch"), schedule)})
    data = params.model_dump(mode="json")
    data["model"]["sizes"]["tiny"]["dropout"] = 0.2  # dropout draws from the global RNG every step
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _train(stage: str, params: Path, dataset: Path, out: Path) -> int:
    """Run the stage in this process (resuming from what is in `out`); returns the epochs it ran."""
    settings = load_params(params)
    if stage == "pretrain":
        return run_pretrain(settings, dataset, out / "model", out / "live", resume=True).epochs_run
    return run_finetune(settings, dataset, out / "none.pt", out / "model", out / "live", resume=True).epochs_run


def _train_until_killed(stage: str, params: Path, dataset: Path, out: Path, kill_after: int) -> None:
    """In a child process: train, and SIGKILL this process right after optimizer step `kill_after`,
    as `kill -9` would at that moment (no handler runs, nothing is cleaned up, workers are orphaned)."""
    steps = 0

    def count(optimizer, args, kwargs) -> None:
        nonlocal steps
        steps += 1
        if steps == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(count)
    _train(stage, params, dataset, out)


def _differences(expected, actual, where: str = "") -> list[tuple[str, float | str]]:
    """Every place two checkpoints differ: the largest absolute difference of a tensor, or what differs."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor) or expected.shape != actual.shape or expected.dtype != actual.dtype:
            return [(where, f"{actual!r} instead of {expected!r}")]
        return [] if torch.equal(expected, actual) else [(where, (expected.double() - actual.double()).abs().max().item())]
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return [(where, f"keys {sorted(map(str, actual))} instead of {sorted(map(str, expected))}")]
        return [found for key in expected for found in _differences(expected[key], actual[key], f"{where}/{key}")]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)) and len(expected) == len(actual):
        return [found for i, (e, a) in enumerate(zip(expected, actual)) for found in _differences(e, a, f"{where}[{i}]")]
    return [] if expected == actual else [(where, f"{actual!r} instead of {expected!r}")]


def _curves(live: Path) -> dict[str, list[tuple[str, str]]]:
    """Each dvclive metric's (step, value) rows; timing is left out (it differs from run to run)."""
    curves = {}
    for path in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        name = path.relative_to(live / "plots" / "metrics").with_suffix("").as_posix()
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        curves[name] = [(row["step"], row[path.stem] if name != "samples_per_second" else "") for row in rows]
    return curves


@pytest.mark.parametrize(("stage", "workers"), [("pretrain", 0), ("pretrain", 2), ("finetune", 1)])
def test_killed_mid_epoch_and_rerun_equals_one_run(small_dataset, tmp_path, stage, workers):
    root, dataset = small_dataset
    params = _write_params(root, tmp_path / "params.yaml", stage, workers)
    checkpoint = "checkpoint.pt" if stage == "pretrain" else "last.pt"
    steps_per_epoch = math.ceil(len(PoseDataset(dataset, tiny_params(root, 1).augment, split="train")) / BATCH)
    assert steps_per_epoch >= 2

    assert _train(stage, params, dataset, tmp_path / "whole") == EPOCHS

    # Anywhere in epoch 2, up to just before its checkpoint is written. A forked process, not a new
    # interpreter: importing torch again would take longer than the training.
    kill_after = random.randint(steps_per_epoch + 1, 2 * steps_per_epoch)
    context = f"killed after optimizer step {kill_after} ({steps_per_epoch} per epoch)"
    killed = multiprocessing.get_context("fork").Process(
        target=_train_until_killed, args=(stage, params, dataset, tmp_path / "split", kill_after))
    killed.start()
    killed.join(timeout=300)
    assert killed.exitcode == -signal.SIGKILL, context
    assert load_checkpoint(tmp_path / "split" / "model" / checkpoint)["epoch"] == 1, context
    assert _train(stage, params, dataset, tmp_path / "split") == EPOCHS - 1, context

    files = sorted(path.name for path in (tmp_path / "whole" / "model").glob("*.pt"))
    assert checkpoint in files and files == sorted(path.name for path in (tmp_path / "split" / "model").glob("*.pt"))
    for name in files:
        expected = load_checkpoint(tmp_path / "whole" / "model" / name)
        actual = load_checkpoint(tmp_path / "split" / "model" / name)
        differences = _differences(expected, actual)
        largest = max((d for _, d in differences if isinstance(d, float)), default=0.0)
        assert not differences, (f"{context}: {name} differs in {len(differences)} places, tensors by up to {largest:.3g}: "
                                 + ", ".join(f"{where} {d}" for where, d in differences[:3]))

    expected_curves = _curves(tmp_path / "whole" / "live")
    resumed_curves = _curves(tmp_path / "split" / "live")
    assert expected_curves and all(
        [step for step, _ in rows] == [str(e) for e in range(EPOCHS)] for rows in expected_curves.values())
    assert resumed_curves == expected_curves, context


@pytest.mark.parametrize(("logged", "first_epoch", "summary"), [(1, 1, None), (3, 2, None), (2, 2, None), (2, 2, "")])
def test_resumed_curves_go_on_at_the_checkpoint_epoch(tmp_path, logged, first_epoch, summary):
    """After 1 logged step dvclive's own resume logs step 0 again; rows logged after the last
    checkpoint (killed between the two writes) are logged again by the resumed run, once; a
    summary file cut short by the kill does not stop the resume."""
    from slrpipe.engine.live import log_epoch, open_live

    live = open_live(tmp_path, 0)
    for step in range(logged):
        log_epoch(live, {"loss": 10.0 + step})
    if summary is not None:
        (tmp_path / "metrics.json").write_text(summary, encoding="utf-8")
    live = open_live(tmp_path, first_epoch)
    for step in range(first_epoch, 4):
        log_epoch(live, {"loss": 20.0 + step})
    live.end()
    expected = [(str(step), str(10.0 + step if step < first_epoch else 20.0 + step)) for step in range(4)]
    assert _curves(tmp_path) == {"loss": expected}


def test_persistent_workers_augment_each_epoch_anew(small_dataset):
    """Persistent workers keep their own copy of the dataset: the epoch reaches them with the index,
    and starting an epoch's iterator leaves the global RNG alone."""
    from slrpipe.engine.runtime import Runtime
    from slrpipe.engine.loop import start_epoch, train_loader

    root, dataset = small_dataset
    augment = tiny_params(root, 1).augment

    def views(workers: int) -> list[torch.Tensor]:
        training_set = PoseDataset(dataset, augment, "pretrain", split="train")
        loader = train_loader(training_set, BATCH, workers, 0, Runtime(torch.device("cpu")))
        epochs = []
        for epoch in range(2):
            start_epoch(loader, epoch)
            seeded = torch.get_rng_state()
            epochs.append(torch.cat([batch["views"][0]["joint"]["trunk"] for batch in loader]))
            assert torch.equal(torch.get_rng_state(), seeded)  # workers' seeds come from the loader's generator
        return epochs

    in_process, in_workers = views(0), views(2)
    assert not torch.equal(in_process[0], in_process[1])
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))
