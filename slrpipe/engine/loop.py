"""The one training loop (`fit`) that pretraining and every fine-tuning protocol run through, and
what it needs: SGD with a step schedule, the training loader and its per-epoch seeding, moving
batches to the device, a pass over a dataset in eval mode, BatchNorm recalibration.

A caller brings a model, a loss step and a validation hook; the loop owns the epochs, autocast,
the progress bar, the metric sums (kept on the device and read once an epoch, so a step never
waits for the GPU), dvclive logging and the epoch checkpoint, in that order.

Exact resume: everything random in an epoch (sample order, augmentations, dropout, any other
draw from the python, numpy or torch RNGs) is seeded from (seed, epoch, rank) when the epoch
starts, so a run resumed from an epoch checkpoint draws the same numbers as a run that was
never interrupted, whatever ran between epochs (the kNN monitor, validation) or was skipped.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from slrpipe.engine.checkpoints import Checkpointer
from slrpipe.engine.live import log_epoch, open_live
from slrpipe.engine.runtime import Runtime, use_bf16

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


def to_device(tree: Any, device: torch.device | None = None) -> Any:
    """A batch (nested dicts and lists of tensors or numpy arrays) as tensors on `device`; None
    leaves them where they are (numpy arrays become tensors sharing their memory)."""
    if isinstance(tree, dict):
        return {key: to_device(value, device) for key, value in tree.items()}
    if isinstance(tree, list):
        return [to_device(value, device) for value in tree]
    tensor = torch.as_tensor(tree)
    return tensor if device is None else tensor.to(device, non_blocking=True)


@torch.no_grad()
def run_eval(model: nn.Module, dataset: Dataset, batch_size: int,
             forward: Callable[[dict], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`forward` on every batch of `dataset` in order, in eval mode (the model's mode is restored
    after), its outputs concatenated as float tensors on the CPU: embeddings for the kNN monitor,
    scores for validation and the evaluate stage."""
    was_training = model.training
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size):
        for name, value in forward(batch).items():
            outputs.setdefault(name, []).append(value.detach().float().cpu())
    model.train(was_training)
    return {name: torch.cat(values) for name, values in outputs.items()}


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


# One training step: a batch in, (the loss to minimise, per-sample means to log as metrics) out.
Step = Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
# After each epoch's training, on the main process: validation metrics to log with it.
Validate = Callable[[int], dict[str, float]]


def fit(model: nn.Module, step: Step, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler: Any,
        checkpointer: Checkpointer, runtime: Runtime, *, epochs: int, first_epoch: int, bf16: bool, desc: str,
        live_dir: Any = None, validate: Validate | None = None, train_mode: Callable[[], None] | None = None,
        checkpoint_extra: Callable[[], dict] = dict, stop_after: int | None = None,
        stop_early: Callable[[int], bool] | None = None) -> tuple[int, dict[str, float]]:
    """Train epochs first_epoch .. epochs - 1 (or until `stop_after`, as if interrupted there, or
    until the main process's `stop_early(epochs done)` says so); return the number of epochs done
    and the last epoch's metrics.

    Each epoch: reseed (start_epoch), set the modes (`train_mode`, default model.train()), run
    `step` under bf16 autocast where the device has native bfloat16 (`bf16`), step the scheduler, then on the main process add
    `validate(epoch)`'s metrics, log the epoch and save the checkpoint with `checkpoint_extra()`.
    """
    live = open_live(live_dir, first_epoch) if runtime.is_main else None
    autocast = use_bf16(runtime, bf16, desc)
    last = epochs if stop_after is None else min(epochs, stop_after)
    metrics: dict[str, float] = {}
    done = first_epoch
    for epoch in range(first_epoch, last):
        # Asked at the top, so a run resumed after it stopped early trains nothing more.
        if epoch > 0 and stop_early is not None and _on_every_rank(runtime.is_main and stop_early(epoch), runtime):
            log.info("%s: stopping early after epoch %d of %d", desc, epoch, epochs)
            break
        start_epoch(loader, epoch)
        train_mode() if train_mode is not None else model.train()
        # Per-sample sums of every logged value, one vector on the device (names: their order):
        # reading a value back (.item()) would make the CPU wait for the GPU, so that happens once
        # an epoch, and stacking makes the step's bookkeeping two kernels, not two per value.
        names: list[str] = []
        sums: torch.Tensor | None = None
        seen, started = 0, time.perf_counter()
        for batch in tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", unit="batch", disable=not runtime.is_main,
                          dynamic_ncols=True, leave=False):
            with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, values = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            size = len(batch["label"])
            seen += size
            stacked = torch.stack([value.detach().float() for value in values.values()]) * size
            if sums is None:
                names, sums = list(values), stacked
            else:
                sums += stacked
        scheduler.step()
        means = [] if sums is None else (sums / max(seen, 1)).tolist()
        metrics = dict(zip(names, means))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["samples_per_second"] = seen * runtime.world_size / (time.perf_counter() - started)
        done = epoch + 1
        if runtime.is_main:
            if validate is not None:
                metrics.update(validate(epoch + 1))
            log.info("%s epoch %d/%d %s", desc, epoch + 1, epochs, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            log_epoch(live, metrics)
            checkpointer.save(epoch + 1, model, optimizer, scheduler, **checkpoint_extra())
    if live is not None:
        live.end()
    return done, metrics


def _on_every_rank(decision: bool, runtime: Runtime) -> bool:
    """Rank 0's decision, on every rank (only rank 0 validates): all ranks stop together."""
    if not runtime.distributed:
        return decision
    flag = torch.tensor([int(decision)], device=runtime.device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())
