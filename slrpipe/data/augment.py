"""Spatial and temporal augmentation of one pose sequence (METHOD.md sections 3-4), in numpy.

A sequence is `coords` (T, 49, 2) in slrpipe's joint layout (trunk / frame size, hands in
[0, 1] of their crops) with a joint mask (T, 49). Masked joints always stay at zero. One
view's spatial parameters apply to the hands and the trunk alike; the trunk alone may also be
shifted and scaled (a signer sitting elsewhere or closer to the camera).

A sequence may also hold motion (`displacement`: differences of positions, augment.motion_source
sequence): its views are made by the same steps, but a displacement has no position, so maps
act about 0 instead of a part's centre, a mirror negates x, and a shift does nothing.
"""

from __future__ import annotations

import numpy as np

from slrpipe.pose import joints
from slrpipe.config import AugmentParams, StageAugment

PARTS = {"right_hand": joints.RIGHT_HAND, "left_hand": joints.LEFT_HAND, "trunk": joints.TRUNK}
# Each part is transformed about the centre of its own coordinate frame.
_CENTRE = 0.5
# Trunk slots that trade places under a horizontal flip (left arm <-> right arm).
_TRUNK_MIRROR = np.array([0, 4, 5, 6, 1, 2, 3])
# The authors' joint corruption: the chosen joints are zeroed with this probability, otherwise
# moved by one 2 x 2 matrix whose entries are drawn from [-CORRUPT_RANGE, CORRUPT_RANGE].
CORRUPT_ZERO_PROBABILITY = 0.5
CORRUPT_RANGE = 1.0
# A view whose motion was augmented on its own (motion_source: sequence) carries the motion's mask
# under this key; without it, the motion shares the joints' mask.
MOTION_MASK = "motion_mask"


def temporal_crop(length: int, rng: np.random.Generator, min_ratio: float, min_frames: int) -> tuple[int, int]:
    """Random [start, stop) of length in [min_ratio * length, length], at least min_frames (or all)."""
    shortest = min(length, max(min_frames, int(np.floor(min_ratio * length))))
    crop = int(rng.integers(shortest, length + 1))
    start = int(rng.integers(0, length - crop + 1))
    return start, start + crop


def centre_crop(length: int, ratio: float) -> tuple[int, int]:
    """[start, stop) of the centred `ratio` of `length` frames: floor((1 - ratio) x length / 2) frames
    off each end, as the authors' test-time crop; ratio 1 keeps every frame."""
    trim = int((1 - ratio) * length / 2)
    return trim, length - trim


def resample(coords: np.ndarray, mask: np.ndarray, start: int, stop: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of frames [start, stop) to `frames` frames; the first and last are kept exactly.

    An interpolated joint is valid when both frames it is drawn from are valid (a frame
    with zero weight does not count), so interpolation never mixes a joint with a zero.
    """
    positions = np.linspace(start, stop - 1, frames)
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, stop - 1)
    weight = (positions - lower)[:, None]
    valid = (mask[lower] | (weight == 1)) & (mask[upper] | (weight == 0))
    out = (1 - weight[..., None]) * coords[lower] + weight[..., None] * coords[upper]
    out[~valid] = 0.0
    return out, valid


def random_affine(rng: np.random.Generator, settings: StageAugment) -> np.ndarray:
    """2 x 2 matrix: rotation x scale x shear, each drawn from the configured range."""
    angle = np.deg2rad(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.diag(rng.uniform(1 - settings.scale, 1 + settings.scale, size=2))
    shear_x, shear_y = rng.uniform(-settings.shear, settings.shear, size=2)
    shear = np.array([[1.0, shear_x], [shear_y, 1.0]])
    return rotation @ scale @ shear


def apply_affine(coords: np.ndarray, mask: np.ndarray, matrix: np.ndarray, centre: float = _CENTRE) -> np.ndarray:
    out = (coords - centre) @ matrix.T + centre
    out[~mask] = 0.0
    return out


def corrupt_or_shear(coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, settings: StageAugment
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The authors' spatial step: with joint_mask_probability a corruption of joint_mask_count
    joints (zeroed and masked, or moved by one random 2 x 2 matrix), otherwise a shear with
    off-diagonal terms in [-shear, shear]. Both act about the origin, as in the authors' code."""
    if rng.random() < settings.joint_mask_probability:
        chosen = rng.choice(joints.NUM_JOINTS, size=settings.joint_mask_count, replace=False)
        if rng.random() < CORRUPT_ZERO_PROBABILITY:
            return mask_joints_at(coords, mask, chosen)
        matrix = rng.uniform(-CORRUPT_RANGE, CORRUPT_RANGE, size=(2, 2))
        out = coords.copy()
        out[:, chosen] = coords[:, chosen] @ matrix.T  # masked joints stay at 0: the map is linear
        return out, mask
    shear_x, shear_y = rng.uniform(-settings.shear, settings.shear, size=2)
    return apply_affine(coords, mask, np.array([[1.0, shear_x], [shear_y, 1.0]]), centre=0.0), mask


def trunk_shift_scale(coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, max_shift: float,
                      scale: float, displacement: bool = False) -> np.ndarray:
    """The trunk scaled by one factor in [1 - scale, 1 + scale] about the centre, then shifted by
    up to max_shift per axis; hands untouched. Draws nothing for a setting that is 0, so turning
    this off gives exactly the views of a run without it. A displacement is only scaled."""
    factor = rng.uniform(1 - scale, 1 + scale) if scale else 1.0
    shift = rng.uniform(-max_shift, max_shift, size=2) if max_shift else np.zeros(2)
    centre = 0.0 if displacement else _CENTRE
    out = coords.copy()
    out[:, joints.TRUNK] = (coords[:, joints.TRUNK] - centre) * factor + centre + (0.0 if displacement else shift)
    out[~mask] = 0.0
    return out


_HANDS_SWAPPED = np.concatenate([
    np.arange(joints.RIGHT_HAND.start, joints.RIGHT_HAND.stop),  # new left hand <- old right
    np.arange(joints.LEFT_HAND.start, joints.LEFT_HAND.stop),  # new right hand <- old left
])


def flip(coords: np.ndarray, mask: np.ndarray, left_mirrored: bool, displacement: bool = False
         ) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the signer horizontally: the hands trade places and x -> 1 - x (a displacement: -x).

    When the stored left hand is already mirrored (preprocess.mirror_left_hand), the mirror
    image of the left hand is exactly the stored left hand, so the hands only trade places.
    """
    order = np.concatenate([_TRUNK_MIRROR, _HANDS_SWAPPED])
    out, out_mask = coords[:, order].copy(), mask[:, order].copy()
    mirrored = [joints.TRUNK] if left_mirrored else [joints.TRUNK, joints.LEFT_HAND, joints.RIGHT_HAND]
    for part in mirrored:
        out[:, part, 0] = (0.0 if displacement else 1.0) - out[:, part, 0]
    out[~out_mask] = 0.0
    return out, out_mask


def swap_hands(coords: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' flip: the right- and left-hand streams trade places; nothing is mirrored and
    the trunk stays as it is."""
    order = np.concatenate([np.arange(joints.NUM_TRUNK), _HANDS_SWAPPED])
    return coords[:, order].copy(), mask[:, order].copy()


def mask_joints(coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero `count` randomly chosen joints in every frame."""
    return mask_joints_at(coords, mask, rng.choice(joints.NUM_JOINTS, size=count, replace=False))


def mask_joints_at(coords: np.ndarray, mask: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords, mask = coords.copy(), mask.copy()
    coords[:, chosen] = 0.0
    mask[:, chosen] = False
    return coords, mask


def motion(coords: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """First-order difference over time; zero where either frame of the pair is masked.

    backward (paper): m_1 = 0, m_t = x_t - x_(t-1). forward (authors' code): m_t = x_(t+1) - x_t, m_T = 0.
    """
    out = np.zeros_like(coords)
    both = mask[1:] & mask[:-1]
    difference = np.where(both[..., None], coords[1:] - coords[:-1], 0.0)
    if kind == "backward":
        out[1:] = difference
    else:
        out[:-1] = difference
    return out


def augment_view(
    coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, settings: StageAugment, frames: int,
    left_mirrored: bool, flipped: bool | None = None, displacement: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One randomly augmented view, resampled to `frames` frames; `flipped` None draws the flip here."""
    start, stop = temporal_crop(len(coords), rng, settings.crop_min_ratio, settings.crop_min_frames)
    coords, mask = resample(coords, mask, start, stop, frames)
    centre = 0.0 if displacement else _CENTRE
    if settings.spatial == "affine_mask":
        if rng.random() < settings.affine_probability:
            coords = apply_affine(coords, mask, random_affine(rng, settings), centre)
    elif settings.spatial == "corrupt_or_shear":
        coords, mask = corrupt_or_shear(coords, mask, rng, settings)
    if settings.trunk_translate or settings.trunk_scale:
        coords = trunk_shift_scale(coords, mask, rng, settings.trunk_translate, settings.trunk_scale, displacement)
    if settings.spatial == "affine_mask" and settings.joint_mask_count and rng.random() < settings.joint_mask_probability:
        coords, mask = mask_joints(coords, mask, rng, settings.joint_mask_count)
    if rng.random() < settings.flip_probability if flipped is None else flipped:
        coords, mask = flip(coords, mask, left_mirrored, displacement) if settings.flip == "mirror" else swap_hands(coords, mask)
    return coords, mask


def _parts(values: np.ndarray, dtype: type | None = np.float32) -> dict[str, np.ndarray]:
    return {name: values[:, part].astype(dtype) if dtype else values[:, part].copy() for name, part in PARTS.items()}


def split_parts(coords: np.ndarray, mask: np.ndarray, motion_kind: str) -> dict[str, dict[str, np.ndarray]]:
    """The model's input for one view whose motion is computed from it (motion_source: view):
    joint, motion and mask per part (right hand, left hand, trunk)."""
    return {"joint": _parts(coords), "motion": _parts(motion(coords, mask, motion_kind)), "mask": _parts(mask, None)}


def branch_parts(joint_view: tuple[np.ndarray, np.ndarray], motion_view: tuple[np.ndarray, np.ndarray]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """The model's input when the motion branch has a view of its own (motion_source: sequence):
    `motion_view` already holds motion, with its own mask."""
    (coords, mask), (moved, moved_mask) = joint_view, motion_view
    return {"joint": _parts(coords), "motion": _parts(moved), "mask": _parts(mask, None), MOTION_MASK: _parts(moved_mask, None)}


def mask_of(view: dict, branch: str) -> dict:
    """The joint masks a branch's encoder reads from a (batched) view."""
    return view.get(MOTION_MASK, view["mask"]) if branch == "motion" else view["mask"]


def training_views(coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, settings: AugmentParams,
                   stage: StageAugment, left_mirrored: bool, count: int, flipped: bool | None
                   ) -> list[dict[str, dict[str, np.ndarray]]]:
    """`count` augmented views of one processed sequence under one stage's settings.

    motion_source view (authors' code): motion is the difference of each augmented joint view.
    sequence (paper): motion is the difference of the processed sequence, and it gets `count`
    views of its own, drawn after the joint views (a shared flip applies to all of them)."""
    if settings.motion_source == "view":
        return [split_parts(*augment_view(coords, mask, rng, stage, settings.frames, left_mirrored, flipped),
                            settings.motion) for _ in range(count)]
    moved = motion(coords, mask, settings.motion)
    joint_views = [augment_view(coords, mask, rng, stage, settings.frames, left_mirrored, flipped) for _ in range(count)]
    motion_views = [augment_view(moved, mask, rng, stage, settings.frames, left_mirrored, flipped, displacement=True)
                    for _ in range(count)]
    return [branch_parts(joint, moving) for joint, moving in zip(joint_views, motion_views)]


def clean_view(coords: np.ndarray, mask: np.ndarray, settings: AugmentParams) -> dict[str, dict[str, np.ndarray]]:
    """The un-augmented view: the centred test_crop of the sequence, resampled to T' frames, its
    motion computed where motion_source says (from the processed sequence, or from this view)."""
    start, stop = centre_crop(len(coords), settings.test_crop)
    if settings.motion_source == "view":
        return split_parts(*resample(coords, mask, start, stop, settings.frames), settings.motion)
    moved = motion(coords, mask, settings.motion)
    return branch_parts(resample(coords, mask, start, stop, settings.frames), resample(moved, mask, start, stop, settings.frames))
