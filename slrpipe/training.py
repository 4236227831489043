"""The parts of a training loop that pretraining and fine-tuning share: SGD with a step
schedule, moving batches to the device, resumable checkpoints and dvclive logging."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slrpipe.checkpoints import load_checkpoint
from slrpipe.errors import SlrpipeError
from slrpipe.runtime import save_checkpoint

log = logging.getLogger(__name__)


def sgd_with_steps(parameters: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                   steps: Iterable[int], gamma: float) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.SGD([p for p in parameters if p.requires_grad], lr=lr, momentum=momentum, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(steps), gamma=gamma)


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
        torch.set_rng_state(state["rng"])
        log.info("resuming from %s after epoch %d", self.path, state["epoch"])
        return state["epoch"], state.get("extra", {})

    def save(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, **extra: Any) -> None:
        save_checkpoint({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch,
            "fingerprint": self.fingerprint,
            "extra": extra,
        }, self.path)


def open_live(live_dir: Path | None, resumed: bool):
    """dvclive logger (None when not logging); a resumed run continues the same curves."""
    if live_dir is None:
        return None
    from dvclive import Live

    return Live(dir=str(live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)


def log_epoch(live, metrics: dict[str, float]) -> None:
    if live is None:
        return
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()
