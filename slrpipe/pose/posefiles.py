"""Importers for pose files: MediaPipe Holistic vectors and MMPose whole-body JSON.

Each importer returns keypoints in pixel coordinates with a score per joint; the selection
of slrpipe's 49 joints (slrpipe.pose.joints) happens here, so videos and pose files meet the
same layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from slrpipe.pose import joints
from slrpipe.errors import SampleError

_FRAME_NAME = re.compile(r"^(\d+)\.npy$")


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        frames = np.unique(np.nonzero(bad.reshape(len(values), -1))[0])
        shown = ", ".join(str(f) for f in frames[:5]) + (" ..." if len(frames) > 5 else "")
        raise SampleError(f"{what}: NaN or infinite values in {len(frames)} frame(s) ({shown})")


def mediapipe_to_49(vectors: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(T, 258) or (T, 1662) MediaPipe Holistic vectors -> (T, 49, 3) pixel x, y, score.

    Trunk scores are the pose landmarks' visibility; MediaPipe gives hand landmarks no score,
    so a detected hand scores 1 and an undetected one (stored as all zeros) scores 0.
    """
    if vectors.ndim != 2 or vectors.shape[1] not in (joints.MEDIAPIPE_VECTOR_NO_FACE, joints.MEDIAPIPE_VECTOR_WITH_FACE):
        raise SampleError(
            f"expected {joints.MEDIAPIPE_VECTOR_NO_FACE} or {joints.MEDIAPIPE_VECTOR_WITH_FACE} values per frame "
            f"(MediaPipe pose+hands, with or without face), got shape {tuple(vectors.shape)}"
        )
    if len(vectors) == 0:
        raise SampleError("no frames")
    _check_finite(vectors, "pose values")
    width, height = frame_size
    frames = len(vectors)
    pose = vectors[:, : joints.MEDIAPIPE_POSE_VALUES].reshape(frames, joints.MEDIAPIPE_POSE_POINTS, 4)
    hands_start = vectors.shape[1] - 2 * joints.MEDIAPIPE_HAND_VALUES
    hands = vectors[:, hands_start:].reshape(frames, 2, joints.NUM_HAND, 3)  # left, right

    out = np.zeros((frames, joints.NUM_JOINTS, 3), dtype=np.float32)
    trunk = pose[:, list(joints.MEDIAPIPE_TRUNK)]
    out[:, joints.TRUNK, :2] = trunk[..., :2]
    out[:, joints.TRUNK, 2] = trunk[..., 3]
    for side, part in enumerate((joints.LEFT_HAND, joints.RIGHT_HAND)):
        hand = hands[:, side]
        detected = np.any(hand != 0, axis=(1, 2))
        out[:, part, :2] = hand[..., :2]
        out[:, part, 2] = detected[:, None].astype(np.float32)
    out[..., 0] *= width
    out[..., 1] *= height
    if not np.any(out[..., 2] > 0):
        raise SampleError("no person in any frame (all landmarks are zero)")
    return out


def wholebody_to_49(wholebody: np.ndarray) -> np.ndarray:
    """(T, 133, 3) COCO-WholeBody -> (T, 49, 3)."""
    return np.ascontiguousarray(wholebody[:, joints.WHOLEBODY_TO_49], dtype=np.float32)


def load_mp_frames(folder: Path) -> np.ndarray:
    """A folder of per-frame vectors named 0.npy, 1.npy, ... -> (T, D), in frame-number order."""
    numbered = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        match = _FRAME_NAME.match(path.name)
        if match is None:
            raise SampleError(f"unexpected file {path.name} in a frame folder (expected <frame number>.npy)")
        numbered.append((int(match.group(1)), path))
    if not numbered:
        raise SampleError("no frames")
    numbered.sort()
    vectors = [_load_npy(path) for _, path in numbered]
    sizes = {vector.shape for vector in vectors}
    if len(sizes) != 1 or vectors[0].ndim != 1:
        raise SampleError(f"frame files have different or non-vector shapes: {sorted(sizes)}")
    return np.stack(vectors).astype(np.float64, copy=False)


def load_mp_sequence(path: Path) -> np.ndarray:
    array = _load_npy(path)
    if array.ndim != 2:
        raise SampleError(f"expected a (frames, values) array, got shape {tuple(array.shape)}")
    return array


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise SampleError(f"unreadable .npy file {path.name}: {error}") from None
    if not np.issubdtype(array.dtype, np.number):
        raise SampleError(f"{path.name}: not a numeric array (dtype {array.dtype})")
    return array


def load_mmpose_json(path: Path) -> np.ndarray:
    """MMPose inferencer predictions for one video -> (T, 133, 3) pixel x, y, score.

    Accepts the inferencer's list of {frame_id, instances} and the demo scripts'
    {meta_info, instance_info} form. When a frame holds several people, the signer is the
    instance with the highest box score (mean keypoint score when there is none); a frame
    with nobody gets zero scores.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SampleError(f"unreadable file: {error}") from None
    except json.JSONDecodeError as error:
        raise SampleError(f"invalid JSON at line {error.lineno}: {error.msg}") from None
    frames = data.get("instance_info") if isinstance(data, dict) else data
    if not isinstance(frames, list) or not frames:
        raise SampleError("expected a non-empty list of frames ({frame_id, instances})")
    out = np.zeros((len(frames), joints.WHOLEBODY_NUM_POINTS, 3), dtype=np.float32)
    for index, frame in enumerate(frames):
        instances = frame.get("instances") if isinstance(frame, dict) else None
        if not isinstance(instances, list):
            raise SampleError(f"frame {index}: missing 'instances' list")
        if not instances:
            continue
        try:
            candidates = [_instance_array(instance) for instance in instances]
        except (KeyError, TypeError, ValueError) as error:
            raise SampleError(f"frame {index}: malformed instance ({error})") from None
        best = max(range(len(instances)), key=lambda i: _instance_rank(instances[i], candidates[i]))
        out[index] = candidates[best]
    _check_finite(out, "keypoints")
    if not np.any(out[..., 2] > 0):
        raise SampleError("no person in any frame")
    return out


def _instance_array(instance: dict) -> np.ndarray:
    xy = np.asarray(instance["keypoints"], dtype=np.float32)
    scores = np.asarray(instance["keypoint_scores"], dtype=np.float32)
    if xy.shape != (joints.WHOLEBODY_NUM_POINTS, 2) or scores.shape != (joints.WHOLEBODY_NUM_POINTS,):
        raise ValueError(
            f"expected {joints.WHOLEBODY_NUM_POINTS} COCO-WholeBody keypoints, got keypoints {xy.shape}, scores {scores.shape}"
        )
    return np.concatenate([xy, scores[:, None]], axis=1)


def _instance_rank(instance: dict, keypoints: np.ndarray) -> float:
    score = instance.get("bbox_score")
    if isinstance(score, list):
        score = score[0] if score else None
    return float(score) if score is not None else float(keypoints[:, 2].mean())
