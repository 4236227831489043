"""Devices, distributed training and atomic checkpoint writing, shared by the training stages.

Checkpoints are read with slrpipe.checkpoints.load_checkpoint (weights_only loading)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from slrpipe.errors import SlrpipeError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SlrpipeError("device is cuda but no GPU is visible (torch.cuda.is_available() is False): set device: cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start(device_setting: str) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Runtime(resolve_device(device_setting))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_setting, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def code_digest(*modules: str) -> str:
    """SHA-256 over the source of the named modules (a package: every .py file in it).

    Part of a training checkpoint's fingerprint, so that a code change makes a rerun train
    again instead of resuming a finished run, as a DVC user expects when a dep changes.
    """
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no source for module {name}")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations else [origin]
        for path in files:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(*sections: Any) -> str:
    """A short hash of the settings a checkpoint was made with (pydantic models or plain data)."""
    plain = [s.model_dump(mode="json") if hasattr(s, "model_dump") else s for s in sections]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, temporary)
    os.replace(temporary, path)
