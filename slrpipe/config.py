"""Typed, validated view of params.yaml: read once, checked once.

Every setting of the pipeline lives in params.yaml. `load_params` turns it into frozen
pydantic models; an unknown key or a bad value raises `ParamsError` with one line naming
the key (`params.yaml: extract.batch_size: Input should be greater than 0`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slrpipe.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")

SourceKind = Literal["wlasl", "msasl", "nmfs_csl", "slr500", "video_folder", "mp_data", "mmpose_json", "manifest"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetParams(Section):
    source: SourceKind
    # Folder of the dataset (or, for `manifest`, the CSV file). Relative paths are relative
    # to the directory holding params.yaml, i.e. the project root when run by DVC.
    root: Path
    # WLASL / MS-ASL subsets: keep the N most frequent glosses as the dataset defines them.
    num_classes: int | None = Field(default=None, gt=0)
    # MS-ASL ships no clips, only URLs: where the user's downloaded clips are, relative to root.
    msasl_clip_template: str = "clips/{split}/{index:05d}.mp4"
    # Pose files store no image size: MediaPipe coordinates are normalized and MMPose JSON
    # holds pixels only. Pixel coordinates are scaled to / interpreted in this (width, height).
    frame_size: tuple[int, int] = (640, 480)
    fps: float = Field(default=30.0, gt=0)

    @field_validator("frame_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) <= 0:
            raise ValueError("width and height must be positive")
        return value


class ExtractParams(Section):
    # Video backend, chosen explicitly (never a silent fallback). Pose files need none.
    backend: Literal["mmpose", "mediapipe"] = "mmpose"
    # MMPose config: a file path or a path inside MMPose's bundled configs; checkpoint from `mim download`.
    pose_config: str = "wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py"
    pose_checkpoint: Path | None = None
    # Optional MMDetection person detector; without it the whole frame is the person box.
    det_config: str | None = None
    det_checkpoint: Path | None = None
    det_score_threshold: float = Field(default=0.5, ge=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=16, gt=0)
    # MediaPipe Holistic confidences (model_complexity is fixed at 1: the only model in the wheel).
    mediapipe_min_detection_confidence: float = Field(default=0.5, ge=0, le=1)
    mediapipe_min_tracking_confidence: float = Field(default=0.5, ge=0, le=1)
    # Also store all 133 COCO-WholeBody points (MMPose sources only).
    keep_wholebody: bool = False
    # Fail the stage when more than this fraction of samples are bad.
    max_bad_fraction: float = Field(default=0.1, ge=0, le=1)


class Params(Section):
    dataset: DatasetParams
    extract: ExtractParams = ExtractParams()

    # Later stages add their sections here.


def _format_error(error: ValidationError, source: Path) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {message}{suffix}"


def parse_params(data: object, source: Path = DEFAULT_PARAMS) -> Params:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        params = Params.model_validate(data)
    except ValidationError as error:
        raise ParamsError(_format_error(error, source)) from None
    # Resolve relative paths against the params file's folder, so stages run from anywhere.
    base = source.resolve().parent
    dataset = params.dataset
    if not dataset.root.is_absolute():
        dataset = dataset.model_copy(update={"root": base / dataset.root})
    extract = params.extract
    updates = {
        name: base / value
        for name in ("pose_checkpoint", "det_checkpoint")
        if (value := getattr(extract, name)) is not None and not value.is_absolute()
    }
    if updates:
        extract = extract.model_copy(update=updates)
    return params.model_copy(update={"dataset": dataset, "extract": extract})


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None
    return parse_params(data, path)
