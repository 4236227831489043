"""Reading videos with OpenCV, in batches of frames, with errors that name the problem."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slrpipe.errors import SampleError

DEFAULT_FPS = 25.0


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float


def _open(path: Path):
    import cv2

    if not path.is_file():
        raise SampleError("video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise SampleError("cannot open video (unreadable or unsupported container)")
    return capture


def video_info(path: Path) -> VideoInfo:
    import cv2

    capture = _open(path)
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise SampleError("video has no frames (frame size 0)")
    # Some containers report 0 or absurd rates; keep a usable default rather than fail.
    return VideoInfo(width, height, fps if 0 < fps < 1000 else DEFAULT_FPS)


def iter_frame_batches(path: Path, batch_size: int) -> Iterator[np.ndarray]:
    """BGR uint8 frames as (B, H, W, 3) batches; raises SampleError for an empty video."""
    capture = _open(path)
    batch: list[np.ndarray] = []
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            batch.append(frame)
            count += 1
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
    finally:
        capture.release()
    if batch:
        yield np.stack(batch)
    if count == 0:
        raise SampleError("video has no readable frames")
