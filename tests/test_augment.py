import numpy as np
import pytest

from slrpipe.data import augment

from slrpipe.pose import joints
from slrpipe.config import AugmentParams, StageAugment

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
    settings = StageAugment(joint_mask_count=25, joint_mask_probability=1.0, flip_probability=0.0, crop_min_ratio=1.0)
    coords, mask = _sequence(frames=64, masked_fraction=0.3)
    out, out_mask = augment.augment_view(coords, mask, np.random.default_rng(1), settings, 64, False)
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
    off = StageAugment(joint_mask_probability=1.0)
    assert off.trunk_translate == 0 and off.trunk_scale == 0
    with_option = augment.augment_view(coords, mask, np.random.default_rng(7), off, 64, False)
    # The view as augment_view made it before the trunk option, step by step from the same seed.
    rng = np.random.default_rng(7)
    start, stop = augment.temporal_crop(len(coords), rng, off.crop_min_ratio, off.crop_min_frames)
    expected, expected_mask = augment.resample(coords, mask, start, stop, 64)
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
    base = dict(affine_probability=0.0, joint_mask_count=0, flip_probability=0.0, crop_min_ratio=1.0, crop_min_frames=40)
    plain = augment.augment_view(coords, mask, np.random.default_rng(5), StageAugment(**base), 40, False)
    settings = StageAugment(**base, trunk_translate=0.2, trunk_scale=0.3)
    views = [augment.augment_view(coords, mask, np.random.default_rng(5), settings, 40, False) for _ in range(2)]
    np.testing.assert_array_equal(views[0][0], views[1][0])
    np.testing.assert_array_equal(views[0][0][:, 7:], plain[0][:, 7:])
    assert not np.allclose(views[0][0][:, joints.TRUNK], plain[0][:, joints.TRUNK])
    other = augment.augment_view(coords, mask, np.random.default_rng(6), settings, 40, False)
    assert not np.allclose(other[0][:, joints.TRUNK], views[0][0][:, joints.TRUNK])


# ---- augment.motion_source, per-stage forms, the test-time crop ---------------------------------

QUIET = dict(crop_min_ratio=1.0, crop_min_frames=1, affine_probability=0.0, joint_mask_count=0, flip_probability=0.0)


def _settings(**augment_keys) -> AugmentParams:
    return AugmentParams(**augment_keys)


def test_motion_source_sequence_differences_the_processed_sequence_by_hand():
    """x = t^2 over 4 frames, resampled to 7: the paper's form interpolates the sequence's own
    differences (0, 1, 3, 5); the authors' form differences the resampled view."""
    coords = np.zeros((4, 49, 2))
    coords[:, 0, 0] = [0.0, 1.0, 4.0, 9.0]
    mask = np.ones((4, 49), bool)
    stage = StageAugment(**QUIET)
    rng = np.random.default_rng(0)
    paper = augment.training_views(coords, mask, rng, _settings(frames=7, motion_source="sequence"), stage, False, 1, None)[0]
    authors = augment.training_views(coords, mask, rng, _settings(frames=7, motion_source="view"), stage, False, 1, None)[0]
    np.testing.assert_allclose(paper["joint"]["trunk"][:, 0, 0], [0, 0.5, 1, 2.5, 4, 6.5, 9])
    np.testing.assert_allclose(paper["motion"]["trunk"][:, 0, 0], [0, 0.5, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(authors["joint"]["trunk"][:, 0, 0], [0, 0.5, 1, 2.5, 4, 6.5, 9])
    np.testing.assert_allclose(authors["motion"]["trunk"][:, 0, 0], [0, 0.5, 0.5, 1.5, 1.5, 2.5, 2.5])
    # The un-augmented view follows the same rule, so evaluation sees what training saw.
    clean = augment.clean_view(coords, mask, _settings(frames=7, motion_source="sequence"))
    np.testing.assert_allclose(clean["motion"]["trunk"][:, 0, 0], [0, 0.5, 1, 2, 3, 4, 5])
    clean = augment.clean_view(coords, mask, _settings(frames=7, motion_source="view"))
    np.testing.assert_allclose(clean["motion"]["trunk"][:, 0, 0], [0, 0.5, 0.5, 1.5, 1.5, 2.5, 2.5])


def _linear_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 x 2 matrix M with target = source @ M.T, checked to fit exactly."""
    solution = np.linalg.lstsq(source.reshape(-1, 2), target.reshape(-1, 2), rcond=None)[0]
    np.testing.assert_allclose(source.reshape(-1, 2) @ solution, target.reshape(-1, 2), atol=1e-5)
    return solution.T


@pytest.mark.parametrize("source", ["sequence", "view"])
def test_motion_source_sequence_gives_the_motion_branch_views_of_its_own(source):
    """One affine per view and nothing else: in the authors' form (view) the motion moves by the
    joint view's matrix; in the paper's form (sequence) it has its own, about 0."""
    coords, mask = _sequence(frames=20, masked_fraction=0.0)
    stage = StageAugment(**{**QUIET, "affine_probability": 1.0})
    settings = _settings(frames=20, motion_source=source)
    view = augment.training_views(coords, mask, np.random.default_rng(3), settings, stage, False, 1, None)[0]
    joint_map = _linear_map(coords[:, joints.RIGHT_HAND] - 0.5, view["joint"]["right_hand"] - 0.5)
    still = augment.motion(coords, mask, "backward")[:, joints.RIGHT_HAND]
    motion_map = _linear_map(still, view["motion"]["right_hand"])
    if source == "view":
        np.testing.assert_allclose(motion_map, joint_map, atol=1e-5)
        assert augment.MOTION_MASK not in view
    else:
        assert not np.allclose(motion_map, joint_map, atol=1e-3)
        assert augment.MOTION_MASK in view


def test_motion_source_sequence_masks_each_branch_on_its_own():
    coords, mask = _sequence(frames=30, masked_fraction=0.0)
    stage = StageAugment(**{**QUIET, "joint_mask_count": 25, "joint_mask_probability": 1.0})
    view = augment.training_views(coords, mask, np.random.default_rng(4), _settings(frames=30), stage, False, 1, None)[0]
    joint_masked = [name for name in augment.PARTS if not view["mask"][name].all()]
    assert joint_masked
    assert any(not np.array_equal(view["mask"][n], view[augment.MOTION_MASK][n]) for n in augment.PARTS)
    assert augment.mask_of(view, "motion") is view[augment.MOTION_MASK] and augment.mask_of(view, "joint") is view["mask"]
    for name in augment.PARTS:  # each branch is zero where its own mask says so
        assert np.all(view["motion"][name][~view[augment.MOTION_MASK][name]] == 0)
        assert np.all(view["joint"][name][~view["mask"][name]] == 0)


def test_a_motion_view_is_mirrored_and_scaled_as_a_displacement():
    coords, mask = _sequence(frames=12, masked_fraction=0.0)
    moved = augment.motion(coords, mask, "backward")
    mirrored, _ = augment.flip(moved, mask, left_mirrored=False, displacement=True)
    np.testing.assert_allclose(mirrored[:, joints.LEFT_HAND, 0], -moved[:, joints.RIGHT_HAND, 0])
    # The mirror of the motion is the motion of the mirror.
    np.testing.assert_allclose(mirrored, augment.motion(*augment.flip(coords, mask, False), "backward"), atol=1e-12)
    scaled = augment.trunk_shift_scale(moved, mask, np.random.default_rng(2), 0.3, 0.5, displacement=True)
    factor = scaled[1:, 0, 0] / moved[1:, 0, 0]
    np.testing.assert_allclose(factor, factor[0])  # one factor, no shift
    np.testing.assert_array_equal(scaled[:, 7:], moved[:, 7:])


def test_swap_hands_trades_the_hand_streams_only():
    coords, mask = _sequence()
    out, out_mask = augment.swap_hands(coords, mask)
    np.testing.assert_array_equal(out[:, joints.TRUNK], coords[:, joints.TRUNK])
    np.testing.assert_array_equal(out[:, joints.LEFT_HAND], coords[:, joints.RIGHT_HAND])
    np.testing.assert_array_equal(out[:, joints.RIGHT_HAND], coords[:, joints.LEFT_HAND])
    np.testing.assert_array_equal(out_mask[:, joints.LEFT_HAND], mask[:, joints.RIGHT_HAND])


def test_authors_pretraining_spatial_step_is_a_corruption_or_a_shear():
    """corrupt_or_shear: with p 0.5 25 joints are zeroed or moved by one 2x2 matrix in [-1, 1],
    the other joints untouched; otherwise one shear with off-diagonals in [-1, 1] about the
    origin (no rotation, no scale: the diagonal stays 1)."""
    coords, mask = _sequence(frames=10, masked_fraction=0.0)
    stage = StageAugment(spatial="corrupt_or_shear", shear=1.0, joint_mask_count=25, joint_mask_probability=0.5)
    seen = {"zeroed": 0, "moved": 0, "sheared": 0}
    for seed in range(200):
        out, out_mask = augment.corrupt_or_shear(coords, mask, np.random.default_rng(seed), stage)
        changed = ~np.all(out == coords, axis=(0, 2))
        if changed.sum() == 25 and not out_mask.all():
            seen["zeroed"] += 1
            assert np.all(out[:, changed] == 0) and np.array_equal(~out_mask.all(axis=0), changed)
        elif changed.sum() == 25:
            seen["moved"] += 1
            matrix = _linear_map(coords[:, changed], out[:, changed])
            assert np.all(np.abs(matrix) <= 1.0)
        else:
            seen["sheared"] += 1
            assert changed.all() and out_mask.all()
            matrix = _linear_map(coords, out)
            np.testing.assert_allclose(np.diag(matrix), [1.0, 1.0], atol=1e-6)
            assert np.all(np.abs(matrix[[0, 1], [1, 0]]) <= 1.0)
    assert min(seen.values()) > 25 and 60 < seen["sheared"] < 140


def test_authors_finetuning_view_is_a_crop_of_half_or_more_and_a_hand_swap():
    """spatial none, flip swap_hands, crop ratio [0.5, 1] and >= 64 frames: every view is the
    resampled crop, hands swapped or not, and nothing else."""
    length, frames = 200, 32
    coords = np.tile((np.arange(length) / 1000.0)[:, None, None], (1, 49, 2))
    coords[:, joints.LEFT_HAND, 1] += 0.5  # the hands differ, so a swap shows
    mask = np.ones((length, 49), bool)
    stage = StageAugment(spatial="none", flip="swap_hands", crop_min_ratio=0.5, crop_min_frames=64,
                         rotation_degrees=90.0, joint_mask_count=49)  # unused under spatial none
    swapped, lengths = 0, []
    for seed in range(100):
        out, out_mask = augment.augment_view(coords, mask, np.random.default_rng(seed), stage, frames, False)
        start, stop = round(out[0, 0, 0] * 1000), round(out[-1, 0, 0] * 1000) + 1
        expected = augment.resample(coords, mask, start, stop, frames)
        if not np.allclose(out, expected[0]):
            expected = augment.swap_hands(*expected)
            swapped += 1
        np.testing.assert_allclose(out, expected[0], atol=1e-12)
        assert out_mask.all()
        lengths.append(stop - start)
    assert min(lengths) >= 100 and 20 < swapped < 80
    short = augment.augment_view(coords[:80], mask[:80], np.random.default_rng(0), stage, frames, False)[0]
    assert round(short[-1, 0, 0] * 1000) - round(short[0, 0, 0] * 1000) + 1 >= 64


def test_centre_crop_by_hand():
    assert augment.centre_crop(100, 0.95) == (2, 98)  # 2.5 frames off each end, rounded down
    assert augment.centre_crop(30, 0.95) == (0, 30)
    assert augment.centre_crop(40, 0.5) == (10, 30)
    assert augment.centre_crop(7, 1.0) == (0, 7)


def test_test_crop_sets_what_the_clean_view_sees():
    coords = np.tile(np.arange(40.0)[:, None, None], (1, 49, 2))
    mask = np.ones((40, 49), bool)
    for source in ("sequence", "view"):
        whole = augment.clean_view(coords, mask, _settings(frames=8, motion_source=source))
        centre = augment.clean_view(coords, mask, _settings(frames=8, motion_source=source, test_crop=0.5))
        assert whole["joint"]["trunk"][[0, -1], 0, 0].tolist() == [0, 39]
        assert centre["joint"]["trunk"][[0, -1], 0, 0].tolist() == [10, 29]
