"""Spatial and temporal augmentation of one pose sequence (METHOD.md sections 3-4), in numpy.

A sequence is `coords` (T, 49, 2) in slrpipe's joint layout (trunk / frame size, hands in
[0, 1] of their crops) with a joint mask (T, 49). Masked joints always stay at zero. One
view's spatial parameters apply to the hands and the trunk alike; the trunk alone may also be
shifted and scaled (a signer sitting elsewhere or closer to the camera).
"""

from __future__ import annotations

import numpy as np

from slrpipe.pose import joints
from slrpipe.config import AugmentParams

PARTS = {"right_hand": joints.RIGHT_HAND, "left_hand": joints.LEFT_HAND, "trunk": joints.TRUNK}
# Each part is transformed about the centre of its own coordinate frame.
_CENTRE = 0.5
# Trunk slots that trade places under a horizontal flip (left arm <-> right arm).
_TRUNK_MIRROR = np.array([0, 4, 5, 6, 1, 2, 3])


def temporal_crop(length: int, rng: np.random.Generator, min_ratio: float, min_frames: int) -> tuple[int, int]:
    """Random [start, stop) of length in [min_ratio * length, length], at least min_frames (or all)."""
    shortest = min(length, max(min_frames, int(np.floor(min_ratio * length))))
    crop = int(rng.integers(shortest, length + 1))
    start = int(rng.integers(0, length - crop + 1))
    return start, start + crop


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


def random_affine(rng: np.random.Generator, settings: AugmentParams) -> np.ndarray:
    """2 x 2 matrix: rotation x scale x shear, each drawn from the configured range."""
    angle = np.deg2rad(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.diag(rng.uniform(1 - settings.scale, 1 + settings.scale, size=2))
    shear_x, shear_y = rng.uniform(-settings.shear, settings.shear, size=2)
    shear = np.array([[1.0, shear_x], [shear_y, 1.0]])
    return rotation @ scale @ shear


def apply_affine(coords: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    out = (coords - _CENTRE) @ matrix.T + _CENTRE
    out[~mask] = 0.0
    return out


def trunk_shift_scale(coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, max_shift: float,
                      scale: float) -> np.ndarray:
    """The trunk scaled by one factor in [1 - scale, 1 + scale] about the centre, then shifted by
    up to max_shift per axis; hands untouched. Draws nothing for a setting that is 0, so turning
    this off gives exactly the views of a run without it."""
    factor = rng.uniform(1 - scale, 1 + scale) if scale else 1.0
    shift = rng.uniform(-max_shift, max_shift, size=2) if max_shift else np.zeros(2)
    out = coords.copy()
    out[:, joints.TRUNK] = (coords[:, joints.TRUNK] - _CENTRE) * factor + _CENTRE + shift
    out[~mask] = 0.0
    return out


def flip(coords: np.ndarray, mask: np.ndarray, left_mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the signer horizontally: the hands trade places and x -> 1 - x.

    When the stored left hand is already mirrored (preprocess.mirror_left_hand), the mirror
    image of the left hand is exactly the stored left hand, so the hands only trade places.
    """
    order = np.concatenate([
        _TRUNK_MIRROR,
        np.arange(joints.RIGHT_HAND.start, joints.RIGHT_HAND.stop),  # new left hand <- old right
        np.arange(joints.LEFT_HAND.start, joints.LEFT_HAND.stop),  # new right hand <- old left
    ])
    out, out_mask = coords[:, order].copy(), mask[:, order].copy()
    mirrored = [joints.TRUNK] if left_mirrored else [joints.TRUNK, joints.LEFT_HAND, joints.RIGHT_HAND]
    for part in mirrored:
        out[:, part, 0] = 1.0 - out[:, part, 0]
    out[~out_mask] = 0.0
    return out, out_mask


def mask_joints(coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero `count` randomly chosen joints in every frame."""
    chosen = rng.choice(joints.NUM_JOINTS, size=count, replace=False)
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
    coords: np.ndarray, mask: np.ndarray, rng: np.random.Generator, settings: AugmentParams, left_mirrored: bool,
    flipped: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One randomly augmented view, resampled to settings.frames frames; `flipped` None draws the flip here."""
    start, stop = temporal_crop(len(coords), rng, settings.crop_min_ratio, settings.crop_min_frames)
    coords, mask = resample(coords, mask, start, stop, settings.frames)
    if rng.random() < settings.affine_probability:
        coords = apply_affine(coords, mask, random_affine(rng, settings))
    if settings.trunk_translate or settings.trunk_scale:
        coords = trunk_shift_scale(coords, mask, rng, settings.trunk_translate, settings.trunk_scale)
    if settings.joint_mask_count and rng.random() < settings.joint_mask_probability:
        coords, mask = mask_joints(coords, mask, rng, settings.joint_mask_count)
    if rng.random() < settings.flip_probability if flipped is None else flipped:
        coords, mask = flip(coords, mask, left_mirrored)
    return coords, mask


def split_parts(coords: np.ndarray, mask: np.ndarray, motion_kind: str) -> dict[str, dict[str, np.ndarray]]:
    """The model's input for one view: joint, motion and mask per part (right hand, left hand, trunk)."""
    moved = motion(coords, mask, motion_kind)
    return {
        "joint": {name: coords[:, part].astype(np.float32) for name, part in PARTS.items()},
        "motion": {name: moved[:, part].astype(np.float32) for name, part in PARTS.items()},
        "mask": {name: mask[:, part].copy() for name, part in PARTS.items()},
    }
