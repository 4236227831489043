"""Load PyTorch / OpenMMLab checkpoints without running pickled code.

OpenMMLab checkpoints keep numpy arrays and scalars in ``meta`` (e.g. the dataset's keypoint
sigmas), which ``torch.load(weights_only=True)`` refuses by default. We allow exactly the numpy
globals needed to rebuild plain numeric arrays, scalars and dtypes, and nothing else: a
checkpoint that pickles any other class or function is refused, never loaded with
``weights_only=False``.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
