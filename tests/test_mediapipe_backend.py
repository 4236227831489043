"""MediaPipe Holistic on the real clips: the offline video backend with real weights."""

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="MediaPipe extra not installed (python -m slrpipe.install_extras mediapipe)")

from slrpipe.pose import joints  # noqa: E402
from slrpipe.pose.extract import run_extract  # noqa: E402
from slrpipe.h5io import RaggedFile  # noqa: E402
from tests.conftest import make_params  # noqa: E402


@pytest.fixture(scope="module")
def extracted(shared, tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for name in ("SOUP", "FOOTBALL", "test_video"):
        (root / name.lower()).mkdir()
        (root / name.lower() / "clip.mp4").symlink_to(shared / "videos" / f"{name}.mp4")
    out = tmp_path_factory.mktemp("out")
    run_extract(make_params(root, source="video_folder", backend="mediapipe"), out, None)
    with RaggedFile(out / "keypoints.h5") as keypoints:
        return {
            sample_id: (keypoints.frames("keypoints", i), tuple(keypoints.column("frame_size")[i]))
            for i, sample_id in enumerate(keypoints.column("sample_id"))
        }


def test_body_in_every_frame_and_hands_in_most(extracted):
    for sample_id, (keypoints, _) in extracted.items():
        assert keypoints.shape[1:] == (49, 3)
        assert np.all(keypoints[:, 0, 2] > 0.5), sample_id  # nose found in every frame
        either_hand = (keypoints[:, joints.LEFT_HAND, 2].max(1) > 0) | (keypoints[:, joints.RIGHT_HAND, 2].max(1) > 0)
        # test_video shows the hands partly outside the frame
        assert either_hand.mean() > (0.3 if sample_id == "test_video/clip" else 0.95), sample_id


def test_frame_sizes_and_pixel_coordinates(extracted):
    assert extracted["soup/clip"][1] == (320, 240)
    assert extracted["football/clip"][1] == (640, 360)
    keypoints, (width, height) = extracted["soup/clip"]
    nose = keypoints[:, 0, :2]
    assert np.all((nose[:, 0] > 0) & (nose[:, 0] < width) & (nose[:, 1] > 0) & (nose[:, 1] < height))


def test_hands_sit_at_their_own_wrists(extracted):
    """MediaPipe's left hand must land in slrpipe's left-hand slots: its root is at the body's left wrist."""
    for sample_id in ("soup/clip", "football/clip"):
        keypoints, _ = extracted[sample_id]
        for hand, own_wrist, other_wrist in (
            (joints.LEFT_HAND, joints.LEFT_WRIST, joints.RIGHT_WRIST),
            (joints.RIGHT_HAND, joints.RIGHT_WRIST, joints.LEFT_WRIST),
        ):
            found = keypoints[:, hand, 2].max(1) > 0
            root = keypoints[found][:, hand][:, 0, :2]
            own = np.linalg.norm(root - keypoints[found][:, own_wrist, :2], axis=1)
            other = np.linalg.norm(root - keypoints[found][:, other_wrist, :2], axis=1)
            assert np.median(own) < np.median(other) / 3, sample_id
