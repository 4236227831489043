"""Devices, distributed training and torch threads for a training or evaluation process."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from slrpipe.errors import SlrpipeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    threads_before: int | None = None  # torch's intra-op threads before `start` set them; `stop` restores them
    joined: bool = False  # in a torch.distributed process group (torchrun), even one of a single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.joined


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SlrpipeError("device is cuda but no GPU is visible (torch.cuda.is_available() is False): set device: cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def available_cores() -> int:
    """The CPU cores this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_threads(setting: int | str, num_workers: int, cores: int | None = None,
                   environ: Mapping[str, str] = os.environ) -> int:
    """Torch intra-op threads for one training process.

    `auto`: the cores left to this process (its share when torchrun starts several on the
    machine) after its loader workers, at least 1, since threads that outnumber the cores
    spin against each other and the workers. An OMP_NUM_THREADS set by the user (or by
    torchrun) wins over the guess. Loader workers need nothing here: PyTorch already runs each
    with one thread.
    """
    if setting != "auto":
        return int(setting)
    if environ.get("OMP_NUM_THREADS", "").isdigit() and int(environ["OMP_NUM_THREADS"]) > 0:
        return int(environ["OMP_NUM_THREADS"])
    processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = available_cores() if cores is None else cores
    return max(1, cores // processes - num_workers)


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """torchrun (torch.distributed.elastic) sets TORCHELASTIC_RUN_ID in every process it starts."""
    return int(environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in environ


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs (gloo would copy every all-reduce and gather through the host), gloo on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX (oneDNN's bfloat16 matrix products). Elsewhere bfloat16 is emulated and
    slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(probe is not None and probe() for probe in probes)
    return False


def use_bf16(runtime: Runtime, wanted: bool, desc: str) -> bool:
    """bf16 autocast for a training run: when the params ask for it (`bf16: true`) and the device
    computes it natively; said in the log either way, since it changes the numbers a run gives."""
    chosen = wanted and native_bf16(runtime.device)
    if runtime.is_main:
        reason = "" if chosen or not wanted else f" ({runtime.device.type} without native bfloat16)"
        log.info("%s: %s on %s%s", desc, "bfloat16 autocast" if chosen else "float32", runtime.device, reason)
    return chosen


def start(device_setting: str, threads: int | str | None = None, num_workers: int = 0) -> Runtime:
    """Join the process group when launched by torchrun, else run alone; then set torch's threads
    from `threads` (None: leave them). A torchrun launch of one process also joins (a group of
    one, DDP-wrapped), so `torchrun --nproc-per-node=1` tests the multi-GPU path on one GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    joined = launched_by_torchrun()
    if not joined:
        device, rank = resolve_device(device_setting), 0
    else:
        device = resolve_device(device_setting, int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend_for(device))
        rank, world_size = dist.get_rank(), dist.get_world_size()
        log.info("process group: rank %d of %d on %s, backend %s", rank, world_size, device, dist.get_backend())
    threads_before = None
    if threads is not None:
        threads_before = torch.get_num_threads()
        torch.set_num_threads(choose_threads(threads, num_workers))
        log.info("torch threads: %d (threads: %s, %d cores, %d loader workers)",
                 torch.get_num_threads(), threads, available_cores(), num_workers)
    return Runtime(device, rank, world_size, threads_before, joined)


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
    if runtime.threads_before is not None:  # a caller in the same process (a test, a notebook) gets its threads back
        torch.set_num_threads(runtime.threads_before)


def distribute(model: torch.nn.Module, runtime: Runtime, broadcast_buffers: bool = True) -> torch.nn.Module:
    """The model wrapped for DistributedDataParallel under torchrun; the model itself alone."""
    if not runtime.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                                   broadcast_buffers=broadcast_buffers)
