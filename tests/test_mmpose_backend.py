"""The MMPose backend and its import shim, on CPU with a randomly initialised rtmpose-t model.

Random weights give meaningless keypoints, so the tests check shapes, box handling,
batching and loading, not pose quality.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from slrpipe.pose import mmcompat
from slrpipe.pose.backends.mmpose_backend import RTMPOSE_T_WHOLEBODY, MMPoseEstimator, select_person_box
from slrpipe.errors import MissingDependencyError, SampleError, SlrpipeError

needs_mmpose = pytest.mark.skipif(
    importlib.util.find_spec("mmpose") is None,
    reason="mmpose not installed (python -m slrpipe.install_extras mmpose)",
)
VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "SOUP.mp4"
NUM_FRAMES = 8
# rtmpose-t input (width, height) and MMPose's default box padding (GetBBoxCenterScale).
INPUT_W, INPUT_H, PADDING = 192, 256, 1.25


def crop_region(box: np.ndarray) -> np.ndarray:
    """The image area the model sees for a box: padded, then widened to the input's aspect ratio.

    Every predicted keypoint maps back into this area, so it bounds the coordinates."""
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * PADDING, (y2 - y1) * PADDING
    if w / h > INPUT_W / INPUT_H:
        h = w * INPUT_H / INPUT_W
    else:
        w = h * INPUT_W / INPUT_H
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def assert_inside(keypoints: np.ndarray, box: np.ndarray, margin: float = 1.0) -> None:
    x1, y1, x2, y2 = crop_region(box)
    assert keypoints[:, 0].min() >= x1 - margin and keypoints[:, 0].max() <= x2 + margin
    assert keypoints[:, 1].min() >= y1 - margin and keypoints[:, 1].max() <= y2 + margin


# --- select_person_box: pure, no mmpose needed -------------------------------------------------

FRAME = (320, 240)  # width, height


def test_highest_scoring_person_kept() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 50, 60], [1, 1, 2, 2]], dtype=np.float32)
    box = select_person_box(boxes, np.array([0.7, 0.9, 0.8]), np.array([0, 0, 0]), 0.5, None, FRAME)
    np.testing.assert_array_equal(box, [5, 5, 50, 60])
    assert box.dtype == np.float32


def test_non_person_labels_ignored() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 50, 60]], dtype=np.float32)
    box = select_person_box(boxes, np.array([0.6, 0.99]), np.array([0, 2]), 0.5, None, FRAME)
    np.testing.assert_array_equal(box, [0, 0, 10, 10])


def test_below_threshold_falls_back_to_previous_then_whole_frame() -> None:
    boxes = np.array([[0, 0, 10, 10]], dtype=np.float32)
    previous = np.array([1, 2, 3, 4], dtype=np.float32)
    low = (boxes, np.array([0.4]), np.array([0]), 0.5)
    np.testing.assert_array_equal(select_person_box(*low, previous, FRAME), previous)
    np.testing.assert_array_equal(select_person_box(*low, None, FRAME), [0, 0, 320, 240])
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5)
    np.testing.assert_array_equal(select_person_box(*empty, None, FRAME), [0, 0, 320, 240])
    # Exactly at the threshold is not above it.
    at = (boxes, np.array([0.5]), np.array([0]), 0.5)
    np.testing.assert_array_equal(select_person_box(*at, previous, FRAME), previous)


# --- mmcompat ------------------------------------------------------------------------------------


def test_missing_mmpose_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mmpose" else real_find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match=r"python -m slrpipe.install_extras mmpose") as info:
        mmcompat.ensure_mmpose_importable()
    assert "\n" not in str(info.value)


@needs_mmpose
def test_shim_leaves_real_modules_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a working mmcv.ops and torchvision (faked here as importable modules) nothing is replaced."""
    real_ops, real_tv = types.ModuleType("mmcv.ops"), types.ModuleType("torchvision")
    monkeypatch.setitem(sys.modules, "mmcv.ops", real_ops)
    monkeypatch.setitem(sys.modules, "torchvision", real_tv)
    monkeypatch.delitem(sys.modules, "torchvision.transforms", raising=False)
    mmcompat.ensure_mmpose_importable()
    assert sys.modules["mmcv.ops"] is real_ops and sys.modules["torchvision"] is real_tv
    assert "torchvision.transforms" not in sys.modules


@needs_mmpose
def test_shim_stand_ins_refuse_to_run() -> None:
    mmcompat.ensure_mmpose_importable()
    ops = sys.modules["mmcv.ops"]
    if not getattr(ops, mmcompat.STUB_MARKER, False):
        pytest.skip("a real mmcv with compiled ops is installed")
    import mmpose.apis  # noqa: F401  (the import the shim exists for)
    from mmcv.ops import batched_nms

    with pytest.raises(MissingDependencyError, match=r"mmcv\.ops\.batched_nms .*mmcv"):
        batched_nms(torch.zeros(1, 4), torch.zeros(1), torch.zeros(1), {})


# --- the estimator ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    import cv2

    if not VIDEO.is_file():
        pytest.skip(f"test clip not found: {VIDEO}")
    capture = cv2.VideoCapture(str(VIDEO))
    out = []
    while len(out) < NUM_FRAMES:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(frame)
    capture.release()
    assert len(out) == NUM_FRAMES
    return out


@pytest.fixture(scope="module")
def estimator() -> MMPoseEstimator:
    if importlib.util.find_spec("mmpose") is None:
        pytest.skip("mmpose not installed (python -m slrpipe.install_extras mmpose)")
    torch.manual_seed(0)
    return MMPoseEstimator(RTMPOSE_T_WHOLEBODY, None, device="cpu", batch_size=NUM_FRAMES)


@pytest.fixture(scope="module")
def batched(estimator: MMPoseEstimator, frames: list[np.ndarray]) -> np.ndarray:
    return estimator.estimate(np.stack(frames))  # a (T, H, W, 3) array, one batch


@needs_mmpose
def test_output_shape_and_range(estimator: MMPoseEstimator, frames: list[np.ndarray], batched: np.ndarray) -> None:
    height, width = frames[0].shape[:2]
    assert batched.shape == (NUM_FRAMES, 133, 3) and batched.dtype == np.float32
    assert np.isfinite(batched).all()
    whole = np.array([0, 0, width, height], dtype=np.float32)
    np.testing.assert_array_equal(estimator.last_boxes, np.tile(whole, (NUM_FRAMES, 1)))
    for frame_keypoints in batched:
        assert_inside(frame_keypoints, whole)


@needs_mmpose
def test_batched_equals_one_at_a_time(
    estimator: MMPoseEstimator, frames: list[np.ndarray], batched: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(estimator, "batch_size", 1)
    single = estimator.estimate(frames)
    np.testing.assert_allclose(single, batched, rtol=1e-4, atol=1e-3)


@needs_mmpose
def test_video_in_pieces_equals_one_call(estimator: MMPoseEstimator, frames: list[np.ndarray], batched: np.ndarray) -> None:
    pieces = estimator.estimate_video([frames[:1], np.stack(frames[1:4]), []])
    np.testing.assert_allclose(pieces, batched[:4], rtol=1e-4, atol=1e-3)
    assert estimator.last_boxes.shape == (4, 4)
    empty = estimator.estimate([])
    assert empty.shape == (0, 133, 3) and estimator.last_boxes.shape == (0, 4)


@needs_mmpose
def test_detector_boxes_chain_across_frames_and_batches(
    estimator: MMPoseEstimator, frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scripted detector stands in for mmdet: box choice, reuse and use by the pose model."""
    a, b, c = [50, 20, 200, 230], [60, 30, 180, 220], [100, 40, 300, 240]
    script = [
        ([[0, 0, 320, 240]], [0.99], [1]),  # only a non-person: whole frame
        ([a, b], [0.9, 0.6], [0, 0]),  # best person
        ([b], [0.3], [0]),  # too weak: keep a
        ([], [], []),  # nothing: keep a (across the batch boundary)
        ([c], [0.8], [0]),
    ]
    calls = []

    def fake_detector(chunk: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        calls.append(len(chunk))
        start = sum(calls[:-1])
        return [
            (np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(scores), np.array(labels, dtype=np.int64))
            for boxes, scores, labels in script[start : start + len(chunk)]
        ]

    monkeypatch.setattr(estimator, "_detector", fake_detector)
    monkeypatch.setattr(estimator, "batch_size", 3)
    keypoints = estimator.estimate(frames[: len(script)])
    assert calls == [3, 2]
    expected = np.array([[0, 0, 320, 240], a, a, a, c], dtype=np.float32)
    np.testing.assert_array_equal(estimator.last_boxes, expected)
    for frame_keypoints, box in zip(keypoints, expected):
        assert_inside(frame_keypoints, box)

    # The same video in decoded pieces of 2 and 3 frames: box reuse carries across pieces.
    calls.clear()
    pieces = estimator.estimate_video([frames[:2], np.stack(frames[2:5])])
    assert calls == [2, 3]
    np.testing.assert_array_equal(estimator.last_boxes, expected)
    np.testing.assert_allclose(pieces, keypoints, rtol=1e-4, atol=1e-3)


@needs_mmpose
def test_checkpoint_round_trip(estimator: MMPoseEstimator, frames: list[np.ndarray], batched: np.ndarray, tmp_path: Path) -> None:
    """Weights saved OpenMMLab-style (numpy arrays in meta) load through slrpipe.engine.checkpoints."""
    path = tmp_path / "rtmpose-t.pth"
    state = estimator._model.state_dict()
    torch.save({"state_dict": state, "meta": {"dataset_meta": estimator.dataset_meta}}, path)
    reloaded = MMPoseEstimator(RTMPOSE_T_WHOLEBODY, str(path), device="cpu", batch_size=NUM_FRAMES)
    np.testing.assert_allclose(reloaded.estimate(frames[:2]), batched[:2], rtol=1e-4, atol=1e-3)

    del state[next(iter(state))]
    torch.save({"state_dict": state}, path)
    with pytest.raises(SlrpipeError, match="weights do not fit the config: 1 tensors missing"):
        MMPoseEstimator(RTMPOSE_T_WHOLEBODY, str(path), device="cpu")


@needs_mmpose
def test_wrong_config_name() -> None:
    with pytest.raises(SlrpipeError, match="pose config not found: 'wholebody_2d_keypoint/no-such-model.py'"):
        MMPoseEstimator("wholebody_2d_keypoint/no-such-model.py", None, device="cpu")


@needs_mmpose
def test_cuda_requested_but_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SlrpipeError, match="device 'cuda' requested but CUDA is not available") as info:
        MMPoseEstimator(RTMPOSE_T_WHOLEBODY, None, device="cuda")
    assert "\n" not in str(info.value)


@needs_mmpose
def test_bad_frames_rejected(estimator: MMPoseEstimator) -> None:
    with pytest.raises(SampleError, match="frame 1 is not a BGR uint8"):
        estimator.estimate([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)])
