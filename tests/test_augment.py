import numpy as np
import pytest

from slrpipe.data import augment

from slrpipe.pose import joints
from slrpipe.config import AugmentParams

RNG = np.random.default_rng(0)


def _sequence(frames=40, masked_fraction=0.2, seed=0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0.1, 0.9, size=(frames, 49, 2))
    mask = rng.random((frames, 49)) > masked_fraction
    coords[~mask] = 0
    return coords, mask


@pytest.mark.parametrize("left_mirrored", [False, True])
def test_flip_twice_is_identity(left_mirrored):
    coords, mask = _sequence()
    once = augment.flip(coords, mask, left_mirrored)
    twice = augment.flip(*once, left_mirrored)
    np.testing.assert_allclose(twice[0], coords)
    np.testing.assert_array_equal(twice[1], mask)
    assert not np.allclose(once[0], coords)


def test_flip_swaps_hands_and_mirrors():
    coords, mask = _sequence(masked_fraction=0)
    flipped, _ = augment.flip(coords, mask, left_mirrored=False)
    np.testing.assert_allclose(flipped[:, joints.LEFT_HAND, 0], 1 - coords[:, joints.RIGHT_HAND, 0])
    np.testing.assert_allclose(flipped[:, joints.RIGHT_HAND, 1], coords[:, joints.LEFT_HAND, 1])
    # Trunk: the left wrist slot now holds the mirrored right wrist.
    np.testing.assert_allclose(flipped[:, joints.LEFT_WRIST], np.stack([1 - coords[:, joints.RIGHT_WRIST, 0], coords[:, joints.RIGHT_WRIST, 1]], -1))
    np.testing.assert_allclose(flipped[:, 0, 0], 1 - coords[:, 0, 0])  # nose stays, mirrored
    stored_mirror, _ = augment.flip(coords, mask, left_mirrored=True)
    np.testing.assert_array_equal(stored_mirror[:, joints.RIGHT_HAND], coords[:, joints.LEFT_HAND])


def test_resample_keeps_endpoints_and_interpolates_linearly():
    coords = np.arange(10, dtype=float)[:, None, None] * np.ones((10, 49, 2))
    mask = np.ones((10, 49), bool)
    out, valid = augment.resample(coords, mask, 2, 8, 11)  # frames 2..7 onto 11 frames
    assert out[0, 0, 0] == 2 and out[-1, 0, 0] == 7
    np.testing.assert_allclose(out[:, 0, 0], np.linspace(2, 7, 11))
    assert valid.all()


def test_resample_masks_follow_joints():
    coords = np.ones((5, 49, 2))
    mask = np.ones((5, 49), bool)
    mask[2, 7] = False
    coords[2, 7] = 0
    out, valid = augment.resample(coords, mask, 0, 5, 9)  # positions 0, .5, 1, ..., 4
    assert valid[:, 7].tolist() == [True, True, True, False, False, False, True, True, True]
    assert np.all(out[~valid] == 0)
    assert np.all(out[valid] == 1)


def test_temporal_crop_bounds():
    rng = np.random.default_rng(5)
    lengths = set()
    for _ in range(500):
        start, stop = augment.temporal_crop(100, rng, 0.5, 32)
        assert 0 <= start < stop <= 100 and stop - start >= 50
        lengths.add(stop - start)
    assert min(lengths) == 50 and max(lengths) == 100
    assert augment.temporal_crop(20, rng, 0.1, 32) == (0, 20)  # shorter than the minimum: all of it


def test_motion_backward_and_forward_by_hand():
    coords = np.zeros((4, 49, 2))
    coords[:, 0, 0] = [1.0, 3.0, 6.0, 10.0]
    mask = np.ones((4, 49), bool)
    mask[2, 0] = False
    coords[2, 0] = 0
    backward = augment.motion(coords, mask, "backward")
    forward = augment.motion(coords, mask, "forward")
    assert backward[:, 0, 0].tolist() == [0.0, 2.0, 0.0, 0.0]  # frame 2 masked: both its differences are 0
    assert forward[:, 0, 0].tolist() == [2.0, 0.0, 0.0, 0.0]


def test_augmented_view_keeps_masked_joints_at_zero_and_uses_one_transform():
    settings = AugmentParams(joint_mask_count=25, joint_mask_probability=1.0, flip_probability=0.0, crop_min_ratio=1.0)
    coords, mask = _sequence(frames=64, masked_fraction=0.3)
    out, out_mask = augment.augment_view(coords, mask, np.random.default_rng(1), settings, False)
    assert out.shape == (64, 49, 2)
    assert np.all(out[~out_mask] == 0)
    assert (~out_mask).all(axis=0).sum() >= 25  # 25 joints masked in every frame
    # The same affine map moved every part: recover it from two parts and compare.
    valid = out_mask & mask
    recovered = []
    for part in (joints.RIGHT_HAND, joints.TRUNK):
        sel = valid[:, part]
        source = coords[:, part][sel] - 0.5
        target = out[:, part][sel] - 0.5
        recovered.append(np.linalg.lstsq(source, target, rcond=None)[0])
    np.testing.assert_allclose(recovered[0], recovered[1], atol=1e-8)


def test_split_parts_layout():
    coords, mask = _sequence(frames=8)
    parts = augment.split_parts(coords, mask, "backward")
    assert parts["joint"]["right_hand"].shape == (8, 21, 2)
    assert parts["joint"]["trunk"].shape == (8, 7, 2)
    np.testing.assert_array_equal(parts["joint"]["left_hand"], coords[:, joints.LEFT_HAND].astype(np.float32))
    np.testing.assert_array_equal(parts["mask"]["right_hand"], mask[:, joints.RIGHT_HAND])
    assert np.all(parts["motion"]["trunk"][0] == 0)


def test_trunk_shift_scale_moves_only_the_trunk_within_its_ranges():
    coords, mask = _sequence(frames=10, masked_fraction=0.2)
    for seed in range(50):
        out = augment.trunk_shift_scale(coords, mask, np.random.default_rng(seed), max_shift=0.1, scale=0.2)
        np.testing.assert_array_equal(out[:, 7:], coords[:, 7:])  # hands untouched
        assert np.all(out[~mask] == 0)
        # Every visible trunk joint is 0.5 + factor (x - 0.5) + shift, for one factor and shift.
        valid = mask[:, joints.TRUNK]
        source, target = coords[:, joints.TRUNK][valid], out[:, joints.TRUNK][valid]
        design = np.column_stack([source.reshape(-1) - 0.5, np.tile(np.eye(2), (len(source), 1))])
        (factor, shift_x, shift_y), *_ = np.linalg.lstsq(design, target.reshape(-1) - 0.5, rcond=None)
        np.testing.assert_allclose(design @ [factor, shift_x, shift_y], target.reshape(-1) - 0.5, atol=1e-9)
        assert 0.8 <= factor <= 1.2 and abs(shift_x) <= 0.1 and abs(shift_y) <= 0.1


def test_trunk_shift_scale_by_hand():
    coords = np.zeros((1, 49, 2))
    coords[0, 1] = [0.7, 0.5]  # the body form's left shoulder
    mask = np.zeros((1, 49), bool)
    mask[0, 1] = True
    # With a range of 0 for the factor, only the shift is drawn: uniform(-0.3, 0.3, size=2).
    expected_shift = np.random.default_rng(3).uniform(-0.3, 0.3, size=2)
    out = augment.trunk_shift_scale(coords, mask, np.random.default_rng(3), max_shift=0.3, scale=0.0)
    np.testing.assert_allclose(out[0, 1], [0.7, 0.5] + expected_shift)
    factor = np.random.default_rng(4).uniform(0.5, 1.5)
    out = augment.trunk_shift_scale(coords, mask, np.random.default_rng(4), max_shift=0.0, scale=0.5)
    np.testing.assert_allclose(out[0, 1], [0.5 + 0.2 * factor, 0.5])  # about the shoulder midpoint (0.5, 0.5)


def test_trunk_augmentation_off_gives_the_same_views_as_before():
    """0 draws no random number: every view is the one the same seed gave without the option."""
    coords, mask = _sequence(frames=40)
    off = AugmentParams(joint_mask_probability=1.0)
    assert off.trunk_translate == 0 and off.trunk_scale == 0
    with_option = augment.augment_view(coords, mask, np.random.default_rng(7), off, False)
    # The view as augment_view made it before the trunk option, step by step from the same seed.
    rng = np.random.default_rng(7)
    start, stop = augment.temporal_crop(len(coords), rng, off.crop_min_ratio, off.crop_min_frames)
    expected, expected_mask = augment.resample(coords, mask, start, stop, off.frames)
    rng.random()
    expected = augment.apply_affine(expected, expected_mask, augment.random_affine(rng, off))
    rng.random()
    expected, expected_mask = augment.mask_joints(expected, expected_mask, rng, off.joint_mask_count)
    if rng.random() < off.flip_probability:
        expected, expected_mask = augment.flip(expected, expected_mask, False)
    np.testing.assert_array_equal(with_option[0], expected)
    np.testing.assert_array_equal(with_option[1], expected_mask)


def test_trunk_augmentation_in_a_view_is_reproducible_and_trunk_only():
    coords, mask = _sequence(frames=40, masked_fraction=0.0)
    base = dict(affine_probability=0.0, joint_mask_count=0, flip_probability=0.0, crop_min_ratio=1.0, crop_min_frames=40, frames=40)
    plain = augment.augment_view(coords, mask, np.random.default_rng(5), AugmentParams(**base), False)
    settings = AugmentParams(**base, trunk_translate=0.2, trunk_scale=0.3)
    views = [augment.augment_view(coords, mask, np.random.default_rng(5), settings, False) for _ in range(2)]
    np.testing.assert_array_equal(views[0][0], views[1][0])
    np.testing.assert_array_equal(views[0][0][:, 7:], plain[0][:, 7:])
    assert not np.allclose(views[0][0][:, joints.TRUNK], plain[0][:, joints.TRUNK])
    other = augment.augment_view(coords, mask, np.random.default_rng(6), settings, False)
    assert not np.allclose(other[0][:, joints.TRUNK], views[0][0][:, joints.TRUNK])
