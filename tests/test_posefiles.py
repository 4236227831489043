import json

import numpy as np
import pytest

from slrpipe.pose import joints, posefiles
from slrpipe.errors import SampleError


def _coded_vector(with_face: bool) -> np.ndarray:
    """A frame whose pose landmark k has x = k/100, y = k/1000, vis = 0.5; hand joint j of side s has x = 0.2 + s/10 + j/1000."""
    pose = np.array([[k / 100, k / 1000, 0.0, 0.5] for k in range(33)]).ravel()
    hands = [np.array([[0.2 + side / 10 + j / 1000, 0.3 + j / 1000, 0.0] for j in range(21)]).ravel() for side in (0, 1)]
    face = [np.full(1404, 0.9)] if with_face else []
    return np.concatenate([pose] + face + hands)


@pytest.mark.parametrize("with_face", [False, True])
def test_mediapipe_mapping_joint_by_joint(with_face):
    vectors = np.stack([_coded_vector(with_face)] * 3)
    out = posefiles.mediapipe_to_49(vectors, (640, 480))
    assert out.shape == (3, 49, 3) and out.dtype == np.float32
    for slot, landmark in enumerate((0, 11, 13, 15, 12, 14, 16)):
        np.testing.assert_allclose(out[0, slot], [landmark / 100 * 640, landmark / 1000 * 480, 0.5], rtol=1e-5)
    for side, part in enumerate((joints.LEFT_HAND, joints.RIGHT_HAND)):
        for j in range(21):
            expected = [(0.2 + side / 10 + j / 1000) * 640, (0.3 + j / 1000) * 480, 1.0]
            np.testing.assert_allclose(out[1, part][j], expected, rtol=1e-5)


def test_undetected_hand_scores_zero():
    vector = _coded_vector(False)
    vector[132:195] = 0  # left hand not found
    out = posefiles.mediapipe_to_49(vector[None], (100, 100))
    assert np.all(out[0, joints.LEFT_HAND, 2] == 0)
    assert np.all(out[0, joints.RIGHT_HAND, 2] == 1)


def test_mediapipe_bad_inputs():
    with pytest.raises(SampleError, match="expected 258 or 1662 values per frame.*got shape \\(4, 100\\)"):
        posefiles.mediapipe_to_49(np.zeros((4, 100)), (1, 1))
    vectors = np.stack([_coded_vector(False)] * 8)
    vectors[2, 5] = np.nan
    vectors[6, 0] = np.inf
    with pytest.raises(SampleError, match=r"NaN or infinite values in 2 frame\(s\) \(2, 6\)"):
        posefiles.mediapipe_to_49(vectors, (1, 1))
    with pytest.raises(SampleError, match="no person in any frame"):
        posefiles.mediapipe_to_49(np.zeros((5, 258)), (1, 1))


def test_frame_folder_sorted_numerically(tmp_path):
    for frame in range(12):
        np.save(tmp_path / f"{frame}.npy", np.full(258, float(frame)))
    vectors = posefiles.load_mp_frames(tmp_path)
    assert vectors[:, 0].tolist() == list(range(12))  # 10 and 11 after 9, not after 1


def test_frame_folder_problems(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(SampleError, match="no frames"):
        posefiles.load_mp_frames(tmp_path / "a")
    np.save(tmp_path / "a" / "0.npy", np.zeros(258))
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(SampleError, match="unexpected file notes.txt"):
        posefiles.load_mp_frames(tmp_path / "a")
    (tmp_path / "a" / "notes.txt").unlink()
    np.save(tmp_path / "a" / "1.npy", np.zeros(100))
    with pytest.raises(SampleError, match="different or non-vector shapes"):
        posefiles.load_mp_frames(tmp_path / "a")
    (tmp_path / "a" / "1.npy").write_bytes(b"garbage")
    with pytest.raises(SampleError, match="unreadable .npy file 1.npy"):
        posefiles.load_mp_frames(tmp_path / "a")


def test_sequence_file_shape(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((3, 4, 5)))
    with pytest.raises(SampleError, match=r"expected a \(frames, values\) array, got shape \(3, 4, 5\)"):
        posefiles.load_mp_sequence(tmp_path / "s.npy")


def test_real_mmpose_json(shared):
    wholebody = posefiles.load_mmpose_json(shared / "mmpose_wholebody" / "SOUP.json")
    raw = json.loads((shared / "mmpose_wholebody" / "SOUP.json").read_text())
    assert wholebody.shape == (len(raw), 133, 3)
    first = raw[0]["instances"][0]
    np.testing.assert_allclose(wholebody[0, :, :2], first["keypoints"], rtol=1e-6)
    np.testing.assert_allclose(wholebody[0, :, 2], first["keypoint_scores"], rtol=1e-6)
    selected = posefiles.wholebody_to_49(wholebody)
    np.testing.assert_array_equal(selected[:, 3], wholebody[:, 9])  # left wrist
    np.testing.assert_array_equal(selected[:, 7], wholebody[:, 91])  # left hand root
    np.testing.assert_array_equal(selected[:, 48], wholebody[:, 132])  # right little fingertip


def _instance(value: float, bbox_score: float) -> dict:
    return {"keypoints": [[value, value]] * 133, "keypoint_scores": [0.9] * 133, "bbox": [[0, 0, 1, 1]], "bbox_score": bbox_score}


def test_mmpose_json_picks_most_confident_person_and_handles_empty_frames(tmp_path):
    frames = [
        {"frame_id": 0, "instances": [_instance(1.0, 0.3), _instance(2.0, 0.8)]},
        {"frame_id": 1, "instances": []},
    ]
    path = tmp_path / "clip.json"
    path.write_text(json.dumps({"meta_info": {}, "instance_info": frames}))
    out = posefiles.load_mmpose_json(path)
    assert np.all(out[0, :, 0] == 2.0)
    assert np.all(out[1] == 0)


def test_mmpose_json_problems(tmp_path):
    path = tmp_path / "clip.json"
    path.write_text('[{"frame_id": 0,\n "instances": [}')
    with pytest.raises(SampleError, match="invalid JSON at line 2"):
        posefiles.load_mmpose_json(path)
    path.write_text(json.dumps([{"frame_id": 0, "instances": []}]))
    with pytest.raises(SampleError, match="no person in any frame"):
        posefiles.load_mmpose_json(path)
    bad = _instance(1.0, 0.5)
    bad["keypoints"] = [[1.0, 1.0]] * 17
    path.write_text(json.dumps([{"frame_id": 0, "instances": [bad]}]))
    with pytest.raises(SampleError, match="frame 0: malformed instance.*133 COCO-WholeBody keypoints"):
        posefiles.load_mmpose_json(path)
    nan = _instance(1.0, 0.5)
    nan["keypoints"][4] = [float("nan"), 1.0]
    path.write_text(json.dumps([{"frame_id": 0, "instances": [nan]}]))
    with pytest.raises(SampleError, match="NaN"):
        posefiles.load_mmpose_json(path)
