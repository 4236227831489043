"""Whole-body keypoints from video frames with an MMPose top-down model (RTMPose, RTMW, HRNet).

One person per frame: the signer. Its box comes from an optional MMDetection person detector
(highest-scoring person box, the previous frame's box when none is found) or, without a
detector, is the whole frame. Frames go through the model's own test pipeline in batches.

mmengine/mmpose/mmdet are imported lazily so that this module (and ``select_person_box``)
can be imported without the MMPose extra installed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.errors import SampleError, SlrpipeError
from slrpipe.pose.joints import WHOLEBODY_NUM_POINTS
from slrpipe.pose.mmcompat import ensure_mmpose_importable

log = logging.getLogger(__name__)

# The smallest whole-body model bundled with mmpose 1.3 (COCO-WholeBody 133 points, rtmpose-t).
RTMPOSE_T_WHOLEBODY = "wholebody_2d_keypoint/rtmpose/ubody/rtmpose-t_8xb64-270e_coco-ubody-wholebody-256x192.py"
PERSON_LABEL = 0  # "person" is class 0 both in COCO detectors and in MMPose's 1-class person detectors


def select_person_box(
    bboxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    previous: np.ndarray | None,
    frame_size: tuple[int, int],
) -> np.ndarray:
    """Pick the signer's box for one frame from detector output.

    bboxes (N, 4) x1 y1 x2 y2, scores (N,), labels (N,); frame_size is (width, height).
    Returns the highest-scoring person box with score > threshold, else ``previous``
    (the box used for the previous frame), else the whole frame [0, 0, W, H]; float32 (4,).
    """
    bboxes = np.asarray(bboxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    candidates = np.flatnonzero((labels == PERSON_LABEL) & (scores > threshold))
    if candidates.size:
        return bboxes[candidates[np.argmax(scores[candidates])]].copy()
    if previous is not None:
        return np.asarray(previous, dtype=np.float32).copy()
    width, height = frame_size
    return np.array([0, 0, width, height], dtype=np.float32)


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available else cpu; an unusable explicit device is a user error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise SlrpipeError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SlrpipeError(
                f"device {device!r} requested but CUDA is not available (torch {torch.__version__}); use cpu or auto"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise SlrpipeError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return str(parsed)


def bundled_config_dirs(kind: str) -> list[Path]:
    """Config folders shipped inside the installed packages: 'pose' (mmpose) or 'det' (mmdet,
    plus the person-detector configs of MMPose's demo)."""
    wanted = {
        "pose": [("mmpose", "configs")],
        "det": [("mmdet", "configs"), ("mmpose", "demo/mmdetection_cfg")],
    }[kind]
    dirs = []
    for package, sub in wanted:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            dirs.append(Path(spec.origin).parent / ".mim" / sub)
    return dirs


def find_config(config: str | Path, kind: str) -> Path:
    """A config file path, or a path relative to one of ``bundled_config_dirs(kind)``."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    dirs = bundled_config_dirs(kind)
    for folder in dirs:
        if (folder / config).is_file():
            return folder / config
    looked = " or ".join(str(d) for d in dirs) or "no installed package"
    raise SlrpipeError(f"{kind} config not found: {str(config)!r} is not a file, nor under {looked}")


def _load_weights(model: torch.nn.Module, path: str) -> dict[str, Any]:
    """Load weights ourselves (weights_only) instead of mmengine's torch.load; return the checkpoint's meta."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint)
    # Checkpoints saved from a (Distributed)DataParallel wrapper prefix every key with "module.".
    state = {re.sub(r"^module\.", "", key): value for key, value in state.items() if isinstance(value, torch.Tensor)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: weights of another model size
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["size mismatch"]
        raise SlrpipeError(f"{path}: weights do not fit the config ({lines[min(1, len(lines) - 1)]})") from None
    if result.missing_keys:
        raise SlrpipeError(
            f"{path}: weights do not fit the config: {len(result.missing_keys)} tensors missing, e.g. {result.missing_keys[0]}"
        )
    if result.unexpected_keys:
        log.warning("%s: %d unused tensors, e.g. %s", path, len(result.unexpected_keys), result.unexpected_keys[0])
    meta = checkpoint.get("meta")
    return meta if isinstance(meta, dict) else {}


def _build(cfg: Any, checkpoint: str | None, device: str, registry: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    from mmengine.model.utils import revert_sync_batchnorm

    # No downloads: pretrained-backbone URLs in the config are for training only.
    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None
    cfg.model.train_cfg = None
    model = revert_sync_batchnorm(registry.build(cfg.model))  # SyncBN needs a process group
    meta = _load_weights(model, checkpoint) if checkpoint is not None else {}
    return model.to(device).eval(), meta


def _check_frame(frame: object, index: int) -> None:
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8):
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise SampleError(f"frame {index} is not a BGR uint8 (H, W, 3) image: {got}")


class _PersonDetector:
    """An MMDetection detector run on a batch of frames; returns (bboxes, scores, labels) per frame."""

    def __init__(self, config: Path, checkpoint: str | None, device: str) -> None:
        from mmengine.config import Config
        from mmengine.dataset import Compose
        from mmengine.registry import DefaultScope

        cfg = Config.fromfile(str(config))
        self._scope = cfg.get("default_scope", "mmdet")
        with DefaultScope.overwrite_default_scope(self._scope):
            from mmdet.registry import MODELS

            self.model, _ = _build(cfg, checkpoint, device, MODELS)
            pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
            pipeline[0] = dict(pipeline[0], type="mmdet.LoadImageFromNDArray")  # frames, not files
            self.pipeline = Compose(pipeline)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import DefaultScope

        batch = pseudo_collate([self.pipeline({"img": frame, "img_id": i}) for i, frame in enumerate(frames)])
        with DefaultScope.overwrite_default_scope(self._scope):
            samples = self.model.test_step(batch)
        return [
            tuple(getattr(s.pred_instances, k).cpu().numpy() for k in ("bboxes", "scores", "labels"))  # type: ignore[misc]
            for s in samples
        ]


class MMPoseEstimator:
    """Top-down whole-body pose estimation: BGR uint8 frames -> (T, 133, 3) pixel x, y, score.

    ``pose_checkpoint=None`` keeps the randomly initialised weights (for tests). After
    ``estimate``, ``last_boxes`` holds the (T, 4) x1 y1 x2 y2 person boxes that were used.
    """

    def __init__(
        self,
        pose_config: str,
        pose_checkpoint: str | None,
        det_config: str | None = None,
        det_checkpoint: str | None = None,
        device: str = "auto",
        batch_size: int = 16,
        det_score_threshold: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise SlrpipeError(f"batch_size must be >= 1, got {batch_size}")
        if det_checkpoint is not None and det_config is None:
            raise SlrpipeError("a detector checkpoint was given without a detector config")
        ensure_mmpose_importable()
        from mmengine.config import Config
        from mmengine.dataset import Compose
        from mmengine.registry import DefaultScope

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.det_score_threshold = det_score_threshold
        self.last_boxes = np.zeros((0, 4), dtype=np.float32)

        cfg = Config.fromfile(str(find_config(pose_config, "pose")))
        self._scope = cfg.get("default_scope", "mmpose")
        with DefaultScope.overwrite_default_scope(self._scope):
            from mmpose.apis.inference import dataset_meta_from_config
            from mmpose.registry import MODELS

            self._model, meta = _build(cfg, pose_checkpoint, self.device, MODELS)
            self._pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
            # The checkpoint's keypoint metadata wins over the config's, as in MMPose itself;
            # flip testing needs its flip_indices.
            self.dataset_meta: dict[str, Any] = meta.get("dataset_meta") or dataset_meta_from_config(cfg, "train") or {}
        points = self.dataset_meta.get("num_keypoints")
        if points != WHOLEBODY_NUM_POINTS:
            raise SlrpipeError(
                f"pose config {pose_config!r} predicts {points} keypoints; slrpipe needs a "
                f"COCO-WholeBody ({WHOLEBODY_NUM_POINTS}-point) model"
            )
        self._detector = (
            _PersonDetector(find_config(det_config, "det"), det_checkpoint, self.device) if det_config is not None else None
        )

    def estimate(self, frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Keypoints of one video: float32 (T, 133, 3) = pixel x, y, score; boxes in ``last_boxes``.

        Box reuse ("previous frame's box") starts afresh on every call, so call once per video.
        """
        return self.estimate_video([frames])

    def estimate_video(self, batches: Iterable[Sequence[np.ndarray] | np.ndarray]) -> np.ndarray:
        """Like ``estimate`` for a video given as consecutive pieces (e.g. decoded batch by batch).

        Each piece is split into model batches of at most ``batch_size`` frames; box reuse carries
        across pieces, so the result equals ``estimate`` on all frames at once.
        """
        keypoints: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        previous: np.ndarray | None = None
        with torch.inference_mode():
            for piece in batches:
                frames = list(piece)
                for offset, frame in enumerate(frames):
                    _check_frame(frame, len(boxes) + offset)
                for start in range(0, len(frames), self.batch_size):
                    chunk = frames[start : start + self.batch_size]
                    if self._detector is None:
                        chunk_boxes = [np.array([0, 0, f.shape[1], f.shape[0]], dtype=np.float32) for f in chunk]
                    else:
                        chunk_boxes = []
                        for frame, (bboxes, scores, labels) in zip(chunk, self._detector(chunk)):
                            size = (frame.shape[1], frame.shape[0])
                            previous = select_person_box(bboxes, scores, labels, self.det_score_threshold, previous, size)
                            chunk_boxes.append(previous)
                    boxes.extend(chunk_boxes)
                    keypoints.append(self._pose_batch(chunk, chunk_boxes))
        self.last_boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        if not keypoints:
            return np.zeros((0, WHOLEBODY_NUM_POINTS, 3), dtype=np.float32)
        return np.concatenate(keypoints)

    def _pose_batch(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> np.ndarray:
        from mmengine.dataset import pseudo_collate

        samples = []
        for frame, box in zip(frames, boxes):
            info = {"img": frame, "bbox": box[None], "bbox_score": np.ones(1, dtype=np.float32)}
            info.update(self.dataset_meta)
            samples.append(self._pipeline(info))
        with self._scope_context():
            results = self._model.test_step(pseudo_collate(samples))
        out = np.empty((len(results), WHOLEBODY_NUM_POINTS, 3), dtype=np.float32)
        for i, result in enumerate(results):
            out[i, :, :2] = np.asarray(result.pred_instances.keypoints)[0]
            out[i, :, 2] = np.asarray(result.pred_instances.keypoint_scores)[0]
        return out

    @contextlib.contextmanager
    def _scope_context(self) -> Iterator[None]:
        from mmengine.registry import DefaultScope

        with DefaultScope.overwrite_default_scope(self._scope):
            yield
