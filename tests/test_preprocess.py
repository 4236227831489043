"""Crop geometry, thresholds and frame selection on hand-made keypoints (METHOD.md section 2)."""

import numpy as np
import pytest

from slrpipe.pose import joints
from slrpipe.config import PreprocessParams
from slrpipe.errors import SampleError
from slrpipe.data.preprocess import hand_boxes, normalize

SETTINGS = PreprocessParams(trunk_norm="frame")  # the paper's form; BODY below is the default
FRAME = (640, 480)


def _frame(left_hand=None, right_hand=None, hand_score=0.9) -> np.ndarray:
    """One frame of (49, 3) pixel keypoints: a fixed trunk, hands from (21, 2) arrays or absent."""
    frame = np.zeros((49, 3))
    frame[joints.TRUNK] = [[320, 100, 1], [400, 200, 1], [420, 300, 1], [430, 380, 1], [240, 200, 1], [220, 300, 1], [210, 380, 1]]
    for part, hand in ((joints.LEFT_HAND, left_hand), (joints.RIGHT_HAND, right_hand)):
        if hand is not None:
            frame[part, :2] = hand
            frame[part, 2] = hand_score
    return frame


def _square_hand(x0, y0, width, height) -> np.ndarray:
    """21 joints spread over the rectangle [x0, x0 + width] x [y0, y0 + height], corners included."""
    xs = np.linspace(x0, x0 + width, 21)
    ys = np.linspace(y0, y0 + height, 21)
    return np.stack([xs, ys], axis=1)


def test_box_is_2_2_times_the_larger_extent_centred_on_the_joints():
    hand = _square_hand(100, 200, 40, 20)  # extent 40 x 20, centre (120, 210)
    boxes = hand_boxes(_frame(right_hand=hand)[None], FRAME, SETTINGS)
    np.testing.assert_allclose(boxes[0, 1], [120, 210, 2.2 * 40])
    np.testing.assert_allclose(boxes[0, 0, 2], 1.2 * np.hypot(10, 80))  # no left hand: forearm fallback


def test_mapping_into_the_crop():
    hand = _square_hand(100, 200, 40, 20)
    sample = normalize(_frame(right_hand=hand)[None], FRAME, SETTINGS)
    right = sample.coords[0, joints.RIGHT_HAND]
    side = 2.2 * 40
    # The box centre maps to the crop centre; a joint at x0 maps to 0.5 - 20 / side.
    np.testing.assert_allclose(right[10], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(right[0], [0.5 - 20 / side, 0.5 - 10 / side], atol=1e-6)
    np.testing.assert_allclose(right[20], [0.5 + 20 / side, 0.5 + 10 / side], atol=1e-6)
    # The trunk is divided by the frame size.
    np.testing.assert_allclose(sample.coords[0, 3], [430 / 640, 380 / 480], atol=1e-6)


def test_fallback_box_from_the_forearm_when_few_joints_are_visible():
    hand = _square_hand(100, 200, 40, 20)
    frame = _frame(left_hand=hand)
    frame[joints.LEFT_HAND.start + 9 : joints.LEFT_HAND.stop, 2] = 0.05  # only 9 joints above 0.1
    boxes = hand_boxes(frame[None], FRAME, SETTINGS)
    elbow, wrist = np.array([420.0, 300.0]), np.array([430.0, 380.0])
    forearm = wrist - elbow
    np.testing.assert_allclose(boxes[0, 0, :2], wrist + 0.4 * forearm)
    np.testing.assert_allclose(boxes[0, 0, 2], 1.2 * np.linalg.norm(forearm))


def test_no_box_without_hand_joints_or_forearm():
    frame = _frame(right_hand=_square_hand(100, 200, 40, 20))
    frame[joints.LEFT_ELBOW, 2] = 0.2  # left forearm not confident, left hand absent
    boxes = hand_boxes(frame[None], FRAME, SETTINGS)
    assert boxes[0, 0, 2] == 0


def test_left_hand_mirroring():
    hand = _square_hand(100, 200, 40, 20)
    plain = normalize(_frame(left_hand=hand)[None], FRAME, SETTINGS)
    mirrored = normalize(_frame(left_hand=hand)[None], FRAME, SETTINGS.model_copy(update={"mirror_left_hand": True}))
    np.testing.assert_allclose(mirrored.coords[0, joints.LEFT_HAND, 0], 1 - plain.coords[0, joints.LEFT_HAND, 0], atol=1e-6)
    np.testing.assert_array_equal(mirrored.coords[0, joints.LEFT_HAND, 1], plain.coords[0, joints.LEFT_HAND, 1])
    np.testing.assert_array_equal(mirrored.coords[0, joints.RIGHT_HAND], plain.coords[0, joints.RIGHT_HAND])


def test_score_thresholds():
    hand = _square_hand(100, 200, 40, 20)
    frame = _frame(right_hand=hand)
    first = joints.RIGHT_HAND.start
    frame[first, 2] = 0.49  # below 0.5: zeroed and masked, but still inside the crop box (> 0.1)
    frame[first + 1, 2] = 0.5  # exactly 0.5: kept
    frame[1, 2] = 0.3  # left shoulder below 0.5
    sample = normalize(frame[None], FRAME, SETTINGS)
    assert not sample.mask[0, first] and np.all(sample.coords[0, first] == 0)
    assert sample.mask[0, first + 1]
    assert not sample.mask[0, 1] and np.all(sample.coords[0, 1] == 0)
    np.testing.assert_allclose(hand_boxes(frame[None], FRAME, SETTINGS)[0, 1], [120, 210, 88])  # box unchanged


def test_frames_without_hands_are_dropped_and_remembered():
    hand = _square_hand(100, 200, 40, 20)
    frames = np.stack([_frame(), _frame(right_hand=hand), _frame(), _frame(left_hand=hand), _frame()])
    for index in (0, 2, 4):
        frames[index, joints.LEFT_ELBOW, 2] = frames[index, joints.RIGHT_ELBOW, 2] = 0  # no fallback box either
    sample = normalize(frames, FRAME, SETTINGS)
    assert sample.frame_index.tolist() == [1, 3]
    assert sample.mask[0, joints.RIGHT_HAND].all() and not sample.mask[0, joints.LEFT_HAND].any()
    with pytest.raises(SampleError, match="no frame in which a hand is found"):
        normalize(frames[[0, 2]], FRAME, SETTINGS)


def test_long_sequences_are_subsampled_uniformly_keeping_both_ends():
    hand = _square_hand(100, 200, 40, 20)
    frames = np.stack([_frame(right_hand=hand)] * 400)
    sample = normalize(frames, FRAME, SETTINGS)
    assert len(sample.coords) == 150
    assert sample.frame_index[0] == 0 and sample.frame_index[-1] == 399
    assert np.all(np.diff(sample.frame_index) > 0)
    steps = np.diff(sample.frame_index)
    assert steps.max() - steps.min() <= 1


def test_a_gloss_whose_samples_all_fail_here_is_dropped_and_labels_renumbered(tmp_path):
    from slrpipe.pose.extract import run_extract
    from slrpipe.h5io import RaggedFile
    from slrpipe.data.preprocess import run_preprocess
    from slrpipe.pose.skipped import read_report
    from tests.conftest import make_params

    rng = np.random.default_rng(0)
    lines = ["path,gloss,signer,split"]
    for gloss in ("alpha", "handless", "zebra"):
        for index in range(2):
            vectors = rng.uniform(0.2, 0.8, (6, 258)).astype(np.float32)
            if gloss == "handless":
                vectors[:, 132:] = 0  # MediaPipe stores an undetected hand as zeros
            np.save(tmp_path / f"{gloss}{index}.npy", vectors)
            lines.append(f"{gloss}{index}.npy,{gloss},,train")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    params = make_params(tmp_path / "list.csv", source="manifest")
    params = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"max_bad_fraction": 0.5})})
    run_extract(params, tmp_path / "extract", None)
    result = run_preprocess(params, tmp_path / "extract" / "keypoints.h5", tmp_path / "pre")
    with RaggedFile(tmp_path / "pre" / "dataset.h5") as dataset:
        assert dataset.attr("glosses") == ["alpha", "zebra"]
        assert dataset.column("gloss") == ["alpha", "alpha", "zebra", "zebra"]
        assert dataset.column("label").tolist() == [0, 0, 1, 1]
    assert (tmp_path / "pre" / "glosses.txt").read_text() == "alpha\nzebra\n"
    report = read_report(tmp_path / "pre" / "preprocess_report.csv")
    assert [(p.sample_id, p.problem) for p in report] == [
        ("handless0", "no frame in which a hand is found"),
        ("handless1", "no frame in which a hand is found"),
        ("", "gloss 'handless' dropped: none of its 2 sample(s) is usable; labels renumbered"),
    ]
    assert len(result.problems) == 2 and result.dropped == report[2:]


# ---- trunk_norm: body ----------------------------------------------------------------------
BODY = PreprocessParams(trunk_norm="body")


def test_body_form_places_the_shoulders_by_hand_computed_numbers():
    # _frame's shoulders: left (400, 200), right (240, 200): midpoint (320, 200), width 160 px,
    # so one trunk unit is 2.5 x 160 = 400 px and the midpoint sits at (0.5, 0.5).
    frames = np.stack([_frame(right_hand=_square_hand(100, 200, 40, 20))] * 3)
    trunk = normalize(frames, FRAME, BODY).coords[0, joints.TRUNK]
    expected = 0.5 + (frames[0, joints.TRUNK, :2] - [320, 200]) / 400
    np.testing.assert_allclose(trunk, expected, atol=1e-6)
    np.testing.assert_allclose(trunk[[1, 4]], [[0.7, 0.5], [0.3, 0.5]], atol=1e-6)  # shoulders 0.4 apart
    np.testing.assert_allclose(trunk[0], [0.5, 0.25], atol=1e-6)  # nose 100 px above: 0.25 units


def test_body_form_is_the_same_wherever_the_signer_sits_and_however_close():
    frames = np.stack([_frame(right_hand=_square_hand(100, 200, 40, 20), left_hand=_square_hand(420, 360, 30, 30))] * 4)
    frames[1:3, joints.TRUNK, :2] += [[5, -3]]  # a little movement, so the sequence is not constant
    moved = frames.copy()
    moved[..., :2] = frames[..., :2] * 0.6 + [150, 90]  # farther from the camera and elsewhere in the frame
    a, b = normalize(frames, FRAME, BODY), normalize(moved, FRAME, BODY)
    np.testing.assert_allclose(a.coords, b.coords, atol=1e-5)  # trunk and hand crops alike
    np.testing.assert_array_equal(a.mask, b.mask)
    frame_form = [normalize(f, FRAME, SETTINGS).coords[:, joints.TRUNK] for f in (frames, moved)]
    assert not np.allclose(*frame_form, atol=1e-3)  # what the frame form would have done


def test_body_form_uses_medians_over_frames_with_both_shoulders_confident():
    frames = np.stack([_frame(right_hand=_square_hand(100, 200, 40, 20))] * 5)
    frames[0, 1, :2] = [600, 50]  # one wild detection: the median ignores it
    frames[1, 4, 2] = 0.2  # right shoulder not confident: frame 1 does not count, even though its left one is
    frames[1, 1, :2] = [0, 0]
    trunk = normalize(frames, FRAME, BODY).coords[:, joints.TRUNK]
    np.testing.assert_allclose(trunk[2, [1, 4]], [[0.7, 0.5], [0.3, 0.5]], atol=1e-6)


@pytest.mark.parametrize("problem", ["unseen", "coincide"])
def test_body_form_falls_back_to_the_frame_form_without_confident_shoulders(problem):
    frames = np.stack([_frame(right_hand=_square_hand(100, 200, 40, 20))] * 3)
    if problem == "unseen":
        frames[:, 1, 2] = 0.3
    else:
        frames[:, 4, :2] = frames[:, 1, :2]
    sample = normalize(frames, FRAME, BODY)
    assert sample.trunk_norm == "frame"
    np.testing.assert_array_equal(sample.coords, normalize(frames, FRAME, SETTINGS).coords)


def test_frame_form_is_position_over_frame_size():
    frames = np.stack([_frame(right_hand=_square_hand(100, 200, 40, 20))])
    sample = normalize(frames, FRAME, SETTINGS)
    np.testing.assert_allclose(sample.coords[0, joints.TRUNK], frames[0, joints.TRUNK, :2] / FRAME, atol=1e-7)
    np.testing.assert_array_equal(sample.trunk_origin, [0, 0])
    np.testing.assert_array_equal(sample.trunk_unit, FRAME)


def test_the_stage_counts_and_names_samples_without_shoulders(tmp_path, caplog):
    import json

    from slrpipe.pose.extract import run_extract
    from slrpipe.h5io import RaggedFile
    from slrpipe.data.preprocess import run_preprocess
    from tests.conftest import make_params

    rng = np.random.default_rng(0)
    lines = ["path,gloss,signer,split"]
    for gloss in ("alpha", "beta"):
        for index in range(2):
            vectors = rng.uniform(0.2, 0.8, (6, 258)).astype(np.float32)
            vectors[:, 3::4][:, :33] = 0.9  # every pose landmark visible
            if (gloss, index) == ("beta", 1):
                vectors[:, 11 * 4 + 3] = 0.1  # MediaPipe landmark 11: the left shoulder, never confident
            np.save(tmp_path / f"{gloss}{index}.npy", vectors)
            lines.append(f"{gloss}{index}.npy,{gloss},,train")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    params = make_params(tmp_path / "list.csv", source="manifest")
    params = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"trunk_norm": "body"})})
    run_extract(params, tmp_path / "extract", None)
    with caplog.at_level("WARNING"):
        result = run_preprocess(params, tmp_path / "extract" / "keypoints.h5", tmp_path / "pre")
    assert result.trunk_fallback == ["beta1"]
    assert json.loads((tmp_path / "pre" / "preprocess_summary.json").read_text())["trunk_frame_fallback"] == 1
    assert "beta1: no frame with both shoulders" in caplog.text
    with RaggedFile(tmp_path / "pre" / "dataset.h5") as dataset:
        assert dataset.column("trunk_norm") == ["body", "body", "body", "frame"]
        assert dataset.attr("preprocess")["trunk_norm"] == "body"
        # The stored placement maps the trunk back to pixels.
        coords, mask = dataset.frames("coords", 0), dataset.frames("mask", 0)
        pixels = coords[:, joints.TRUNK] * dataset.column("trunk_unit")[0] + dataset.column("trunk_origin")[0]
        shoulders = pixels[:, [1, 4]][mask[:, [1, 4]].all(axis=1)]
        width = np.median(np.linalg.norm(shoulders[:, 0] - shoulders[:, 1], axis=1))
        assert dataset.column("trunk_unit")[0][0] == pytest.approx(2.5 * width, rel=1e-4)


# ---- the authors' hand-box forms (METHOD.md section 9) ------------------------------------------

OFFICIAL_FALLBACK = SETTINGS.model_copy(update={"fallback_box": "official"})


def _left_hand_hidden() -> np.ndarray:
    """_frame's trunk with a left hand too faint for its own box: the box falls back on the arm.
    Left arm: shoulder (400, 200), elbow (420, 300), wrist (430, 380)."""
    frame = _frame(left_hand=_square_hand(100, 200, 40, 20))
    frame[joints.LEFT_HAND, 2] = 0.05
    return frame


def test_official_fallback_box_by_hand():
    # forearm (10, 80): length sqrt(6500) = 80.62; upper arm (20, 100): 0.9 x sqrt(10400) = 91.89
    # is longer, so side = 1.1 x 0.9 x sqrt(10400); centre = wrist + 0.33 x (10, 80).
    box = hand_boxes(_left_hand_hidden()[None], FRAME, OFFICIAL_FALLBACK)[0, 0]
    np.testing.assert_allclose(box, [433.3, 406.4, 1.1 * 0.9 * np.sqrt(10400)])
    # A short upper arm: the forearm sets the side.
    frame = _left_hand_hidden()
    frame[1, :2] = [415, 260]  # shoulder 41.2 px from the elbow
    np.testing.assert_allclose(hand_boxes(frame[None], FRAME, OFFICIAL_FALLBACK)[0, 0], [433.3, 406.4, 1.1 * np.sqrt(6500)])


@pytest.mark.parametrize("change", ["shoulder_score", "elbow_score", "wrist_score", "wrist_near_bottom"])
def test_official_fallback_box_needs_a_confident_arm_away_from_the_bottom(change):
    frame = _left_hand_hidden()
    if change == "wrist_near_bottom":
        frame[3, 1] = 431  # 49 px above the bottom edge of a 480-px frame
    else:
        frame[{"shoulder_score": 1, "elbow_score": 2, "wrist_score": 3}[change], 2] = 0.79
    assert hand_boxes(frame[None], FRAME, OFFICIAL_FALLBACK)[0, 0, 2] == 0
    assert hand_boxes(frame[None], FRAME, SETTINGS)[0, 0, 2] > 0  # ours needs only elbow and wrist >= 0.5
    frame[3, 1] = 430  # exactly 50 px above the bottom: allowed
    if change == "wrist_near_bottom":
        assert hand_boxes(frame[None], FRAME, OFFICIAL_FALLBACK)[0, 0, 2] > 0


def test_clamp_box_moves_boxes_into_the_image_and_caps_their_side():
    clamp = SETTINGS.model_copy(update={"clamp_box": True})
    frame = _frame(right_hand=_square_hand(600, 200, 40, 20))  # box centre (620, 210), side 88
    assert hand_boxes(frame[None], FRAME, SETTINGS)[0, 1].tolist() == [620, 210, 88]
    np.testing.assert_allclose(hand_boxes(frame[None], FRAME, clamp)[0, 1], [639 - 44, 210, 88])
    # Side 660 > 479 = min(640, 480) - 1: capped; the centre (250, 105) moves down to y 479 / 2.
    huge = _frame(right_hand=_square_hand(100, 100, 300, 10))
    np.testing.assert_allclose(hand_boxes(huge[None], FRAME, clamp)[0, 1], [250, 239.5, 479])
    no_left_box = _frame(right_hand=_square_hand(100, 200, 40, 20))
    no_left_box[2, 2] = 0.2  # neither hand joints nor a forearm: no box, clamped or not
    assert hand_boxes(no_left_box[None], FRAME, clamp)[0, 0, 2] == 0


def test_zero_outside_box_sets_coordinates_beyond_the_box_to_0():
    both = SETTINGS.model_copy(update={"clamp_box": True, "zero_outside_box": True})
    clamp_only = SETTINGS.model_copy(update={"clamp_box": True})
    # Right edge: the clamped box spans x [551, 639]; the last joint (640, 220) lies past it.
    frame = _frame(right_hand=_square_hand(600, 200, 40, 20))
    kept = normalize(frame[None], FRAME, clamp_only).coords[0, joints.RIGHT_HAND]
    zeroed = normalize(frame[None], FRAME, both).coords[0, joints.RIGHT_HAND]
    np.testing.assert_allclose(kept[20], [89 / 88, 54 / 88], atol=1e-6)
    np.testing.assert_allclose(zeroed[20], [0, 54 / 88], atol=1e-6)
    np.testing.assert_array_equal(zeroed[:20], kept[:20])
    # Left edge, a joint at x = -5 (pose estimators report them): the box spans [0, 88].
    frame = _frame(right_hand=_square_hand(-5, 200, 40, 20))
    kept = normalize(frame[None], FRAME, clamp_only).coords[0, joints.RIGHT_HAND]
    zeroed = normalize(frame[None], FRAME, both).coords[0, joints.RIGHT_HAND]
    np.testing.assert_allclose(kept[0], [-5 / 88, 166 / 88 - 1.5], atol=1e-6)
    np.testing.assert_allclose(zeroed[0], [0, 166 / 88 - 1.5], atol=1e-6)
    assert np.all((zeroed >= 0) & (zeroed <= 1))
