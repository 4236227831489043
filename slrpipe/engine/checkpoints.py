"""Checkpoints: atomic saving, loading without running pickled code, and resuming a training run
only when it was made with the same settings, data and code (its fingerprint).

Loading PyTorch / OpenMMLab checkpoints:
OpenMMLab checkpoints keep numpy arrays and scalars in ``meta`` (e.g. the dataset's keypoint
sigmas), which ``torch.load(weights_only=True)`` refuses by default. We allow exactly the numpy
globals needed to rebuild plain numeric arrays, scalars and dtypes, and nothing else: a
checkpoint that pickles any other class or function is refused, never loaded with
``weights_only=False``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slrpipe.errors import SlrpipeError, restore_hint

log = logging.getLogger(__name__)

# Plain numeric dtypes; object, string and structured arrays are not allowed (they could carry
# arbitrary Python objects or are never used in checkpoint metadata).
_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)  # fmt: skip


def _numpy_safe_globals() -> list[Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2 (1.26 also ships this alias)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype]
    # A checkpoint pickled under numpy 1.x names numpy.core.multiarray, under 2.x
    # numpy._core.multiarray; both names map to the running numpy's function.
    for func in (multiarray._reconstruct, multiarray.scalar):
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed.append((func, f"{module}.{func.__name__}"))
    # Unpickling a dtype calls __setstate__ on an instance of its concrete class
    # (numpy.dtypes.Float32DType etc. since numpy 1.25), so those classes must be allowed too.
    allowed.extend({type(np.dtype(name)) for name in _DTYPES})
    return allowed


def _refusal_reason(message: str) -> str:
    """The one line of torch's long weights_only error that says what was refused."""
    tail = message.split("WeightsUnpickler error:", 1)[-1].strip()
    reason = tail.splitlines()[0] if tail else "unknown reason"
    found = re.match(r"Unsupported global: GLOBAL ([\w.]+)", reason)
    if found:
        return f"it pickles {found.group(1)}, which is not a tensor, numpy number array or plain Python value"
    return reason


def load_checkpoint(path: str | Path, output: bool = False) -> dict:
    """Load a checkpoint onto the CPU with ``weights_only=True``; return its top-level dict.

    `output`: the file is a pipeline output, so an unreadable one is best restored: say how.
    """
    path = Path(path)
    if not path.is_file():
        raise SlrpipeError(f"checkpoint not found: {path}")
    unreadable = f"{path}: not a readable PyTorch checkpoint (damaged, truncated or another kind of file)"
    if output:
        unreadable += f": {restore_hint(path)}"
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Also raised for files that are not pickles at all, as an unsupported operand.
        reason = _refusal_reason(str(exc))
        if reason.startswith("Unsupported operand"):
            raise SlrpipeError(unreadable) from None
        raise SlrpipeError(f"{path}: refused by weights_only loading: {reason}") from None
    except Exception:  # noqa: BLE001 - on text or a cut-off file the unpickler and zip reader fail in many ways
        log.debug("loading %s failed", path, exc_info=True)
        raise SlrpipeError(unreadable) from None
    if not isinstance(checkpoint, dict):
        raise SlrpipeError(f"{path}: expected a dict checkpoint, found {type(checkpoint).__name__}")
    return checkpoint


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
