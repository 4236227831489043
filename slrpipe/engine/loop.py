"""The parts of a training loop that pretraining and fine-tuning share: SGD with a step
schedule, the training loader and its per-epoch seeding, moving batches to the device,
resumable checkpoints and dvclive logging.

Exact resume: everything random in an epoch (sample order, augmentations, dropout, any other
draw from the python, numpy or torch RNGs) is seeded from (seed, epoch, rank) when the epoch
starts, so a run resumed from an epoch checkpoint draws the same numbers as a run that was
never interrupted, whatever ran between epochs (the kNN monitor, validation) or was skipped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import write_text_atomic
from slrpipe.engine.runtime import Runtime, save_checkpoint

log = logging.getLogger(__name__)


def sgd_with_steps(parameters: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                   steps: Iterable[int], gamma: float) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD([p for p in parameters if p.requires_grad], lr=lr, momentum=momentum, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(steps), gamma=gamma)


class EpochSampler(Sampler):
    """This rank's share of the training set, in a new order each epoch (DistributedSampler),
    each index paired with its epoch: `(epoch, position)`.

    The epoch travels with the index because persistent worker processes keep the copy of the
    dataset they started with, so a `set_epoch` on the dataset in this process never reaches
    them: they would augment every epoch like the first one of the process (epoch 0 in one run,
    the resumed epoch in a resumed run).
    """

    def __init__(self, dataset: Dataset, runtime: Runtime, seed: int) -> None:
        self.order = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, position) for position in self.order)

    def __len__(self) -> int:
        return len(self.order)


def train_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int, runtime: Runtime) -> DataLoader:
    """The training loader over a dataset indexed by `(epoch, position)` (see EpochSampler).

    It has its own generator: otherwise every new iterator draws the workers' base seed from
    the global torch RNG, once per epoch, or only in the first epoch of the process with
    persistent workers, i.e. differently in a resumed run. The worker processes' own RNGs are
    seeded from it, but nothing draws from them: augmentations come from (seed, epoch, index).
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(dataset, runtime, seed), num_workers=num_workers,
                      pin_memory=runtime.device.type == "cuda", persistent_workers=num_workers > 0, generator=torch.Generator())


def start_epoch(loader: DataLoader, epoch: int) -> None:
    """Seed everything random in this epoch from (seed, epoch, rank) only (module docstring)."""
    sampler: EpochSampler = loader.sampler
    sampler.set_epoch(epoch)
    torch_seed, numpy_seed, python_seed, loader_seed = (
        int(word) for word in np.random.SeedSequence([sampler.order.seed, epoch, sampler.order.rank]).generate_state(4))
    torch.manual_seed(torch_seed)  # the CPU and every CUDA device
    np.random.seed(numpy_seed)
    random.seed(python_seed)
    loader.generator.manual_seed(loader_seed)


def to_device(tree: Any, device: torch.device) -> Any:
    """A batch (nested dicts and lists of tensors) on the device."""
    if isinstance(tree, dict):
        return {key: to_device(value, device) for key, value in tree.items()}
    if isinstance(tree, list):
        return [to_device(value, device) for value in tree]
    return tree.to(device, non_blocking=True)


class Checkpointer:
    """An epoch checkpoint at `path` that is resumed only when made with the same `fingerprint`."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, dict]:
        """Restore the training state; returns (epochs already done, the checkpoint's extra data)."""
        if not self.path.is_file():
            return 0, {}
        try:
            state = load_checkpoint(self.path)
        except SlrpipeError as error:
            # Cut off by a crash or a full disk: the run it held is lost either way, so start over
            # (the next epoch's checkpoint replaces it) rather than fail every `dvc repro`.
            log.warning("%s; starting from scratch", error)
            return 0, {}
        if state.get("fingerprint") != self.fingerprint:
            log.warning("%s was made with other settings or data: starting from scratch", self.path)
            return 0, {}
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log.info("resuming from %s after epoch %d", self.path, state["epoch"])
        return state["epoch"], state.get("extra", {})

    def save(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, **extra: Any) -> None:
        save_checkpoint({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "fingerprint": self.fingerprint,
            "extra": extra,
        }, self.path)


def open_live(live_dir: Path | None, first_epoch: int):
    """dvclive logger (None when not logging). A run resumed after `first_epoch` epochs goes on
    with the same curves at step `first_epoch`."""
    if live_dir is None:
        return None
    from dvclive import Live

    summary = live_dir / "metrics.json"
    if first_epoch > 0 and summary.is_file() and not _is_json(summary):
        # dvclive rewrites it in place: a run killed at that moment leaves it cut short, and
        # dvclive cannot resume from it. The next step writes it again in full.
        log.warning("%s is damaged (the run was killed while writing it): starting it again", summary)
        summary.unlink()
    live = Live(dir=str(live_dir), resume=first_epoch > 0, save_dvc_exp=False, dvcyaml=None)
    if first_epoch > 0:
        # dvclive's own resume step is the saved one + 1, except after step 0, which it cannot
        # tell from a fresh start: it would log step 0 twice. The checkpoint says where we are.
        _drop_steps_from(Path(live.plots_dir) / "metrics", first_epoch)
        live.step = first_epoch
    return live


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return True


def _drop_steps_from(metrics_dir: Path, first: int) -> None:
    """Remove the curve rows of steps >= first: a run killed after logging an epoch but before its
    checkpoint was written logs that epoch again when resumed."""
    for path in metrics_dir.rglob("*.tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = list(reader)
        kept = [row for row in rows if int(row["step"]) < first]
        if len(kept) < len(rows):
            text = io.StringIO()
            writer = csv.DictWriter(text, reader.fieldnames or [], delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            write_text_atomic(path, text.getvalue())


def log_epoch(live, metrics: dict[str, float]) -> None:
    """Log an epoch's metrics as one step; call it before the epoch's checkpoint is saved."""
    if live is None:
        return
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Any) -> None:
    """Set every BatchNorm's running mean and variance to their exact average over `batches`.

    Training normalizes each batch of augmented views by its own statistics, and the running
    averages follow those; evaluation sees un-augmented sequences, whose statistics differ. Each
    batch is passed to `forward` in train mode (no gradient); the model's mode is restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None = cumulative average over every batch seen since the reset
    was_training = model.training
    model.train()
    for batch in batches:
        forward(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
