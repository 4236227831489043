"""`augment.frames: auto`: T' from the data instead of a fixed 64.

Resampling a 30-frame clip to 64 frames doubles the cost of every step and adds nothing the
clip did not hold. `auto` takes the median length of the training split's sequences (as
preprocess stored them), clamped to [FRAMES_AUTO_MIN, FRAMES_AUTO_MAX]. It is resolved when
training starts, from the training split only, and the number is what the checkpoint and model
file record: evaluate and predict read it from there and never recompute it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from slrpipe.config import AugmentParams
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile

log = logging.getLogger(__name__)

FRAMES_AUTO_MIN = 16
FRAMES_AUTO_MAX = 64


def median_train_length(source: Path | dict[Path, list[str]]) -> float:
    """The median number of frames of the training sequences: a preprocess dataset.h5's training
    split, or a pretraining corpus's chosen samples ({dataset.h5: sample ids}) taken together."""
    members = {source: None} if isinstance(source, Path) else source
    chosen_lengths = []
    for path, ids in members.items():
        with RaggedFile(path) as dataset:
            lengths = np.diff(dataset.offsets)
            if ids is None:
                chosen = np.array([split == "train" for split in dataset.column("split")], dtype=bool)
            else:
                wanted = set(ids)
                chosen = np.array([sample_id in wanted for sample_id in dataset.column("sample_id")], dtype=bool)
        chosen_lengths.append(lengths[chosen])
    lengths = np.concatenate(chosen_lengths) if chosen_lengths else np.zeros(0)
    if not len(lengths):
        names = ", ".join(str(path) for path in members)
        raise SlrpipeError(f"{names or 'the corpus'}: no training samples, which augment.frames: auto takes its length from")
    return float(np.median(lengths))


def auto_frames(median_length: float) -> int:
    """T' for a training split of this median length: rounded, clamped to [FRAMES_AUTO_MIN, FRAMES_AUTO_MAX]."""
    return int(min(FRAMES_AUTO_MAX, max(FRAMES_AUTO_MIN, round(median_length))))


def resolve_frames(settings: AugmentParams, source: Path | dict[Path, list[str]]) -> AugmentParams:
    """`settings` with `frames: auto` replaced by its number for this dataset (or corpus, see
    median_train_length); a number stays as it is."""
    if settings.frames != "auto":
        return settings
    median = median_train_length(source)
    frames = auto_frames(median)
    log.info("augment.frames: auto -> %d (median training sequence length %.1f frames, clamped to [%d, %d])",
             frames, median, FRAMES_AUTO_MIN, FRAMES_AUTO_MAX)
    return settings.model_copy(update={"frames": frames})


def require_resolved(settings: AugmentParams, where: str) -> int:
    """The number of frames, or a clear error when `auto` reached code that needs the number."""
    if settings.frames == "auto":
        raise SlrpipeError(f"{where}: augment.frames is still 'auto'; it is resolved when training starts and the "
                           "model file records the number (retrain with this slrpipe)")
    return settings.frames
