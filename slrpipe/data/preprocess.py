"""Hand and trunk normalization (METHOD.md section 2): pixel keypoints -> model coordinates.

Per frame, each hand is cropped with a square box around its confident joints (or, when
too few are visible, a box placed along the forearm), mapped into a crop_size x crop_size
image and divided by crop_size, so hand coordinates lie in [0, 1] of their crop. The trunk
is divided by the frame size (`trunk_norm: frame`) or placed relative to the signer's
shoulders (`body`). Joints scored below `score_threshold` are zeroed and masked;
frames in which neither hand is found are dropped; long sequences are subsampled uniformly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slrpipe.pose import joints
from slrpipe.config import Params, PreprocessParams
from slrpipe.errors import SampleError, SlrpipeError
from slrpipe.h5io import DATASET_FILE, GLOSSES_FILE, RaggedFile, RaggedWriter, write_glosses, write_json
from slrpipe.pose.manifest import SPLITS, Problem, drop_empty_classes
from slrpipe.pose.skipped import check_bad_fraction, write_report
from slrpipe.data.splits import assign_splits, label_subsets
from slrpipe.data.subsets import subset_key

log = logging.getLogger(__name__)

SHOULDERS = (1, 4)  # left, right shoulder in the trunk's 7 joints (joints.TRUNK_NAMES)
HANDS = (  # (slice of the 49 joints, trunk shoulder, elbow, wrist)
    (joints.LEFT_HAND, SHOULDERS[0], joints.LEFT_ELBOW, joints.LEFT_WRIST),
    (joints.RIGHT_HAND, SHOULDERS[1], joints.RIGHT_ELBOW, joints.RIGHT_WRIST),
)
# The authors' fallback hand box (preprocess.fallback_box: official, METHOD.md section 9): centre
# = wrist + 0.33 x (wrist - elbow), side = 1.1 x max(forearm, 0.9 x upper arm), only when
# shoulder, elbow and wrist score >= 0.8 and the wrist is >= 50 px above the image's bottom.
OFFICIAL_FALLBACK_CENTRE_RATIO = 0.33
OFFICIAL_FALLBACK_SIDE_RATIO = 1.1
OFFICIAL_FALLBACK_UPPER_ARM_RATIO = 0.9
OFFICIAL_FALLBACK_MIN_SCORE = 0.8
OFFICIAL_FALLBACK_BOTTOM_MARGIN = 50.0

# Body form: one trunk unit is this many shoulder widths, with the shoulder midpoint at (0.5, 0.5).
# Why not 1 shoulder width about 0: the model's GCN sees a masked joint as the point (0, 0), so
# (0, 0) must lie where real joints rarely go, as the frame form's top-left corner does. At 2.5
# widths it is 1.25 widths beside and above the shoulder midpoint (past the shoulder, level with
# the top of the head); at 1 width it would be at chin height beside the neck, where wrists pass.
# 2.5 also makes the shoulder width 0.4 units, the middle of what the frame form gives (0.30-0.52
# over 21 signers, issue 13), so augment's rotation/scale/shear ranges and the input magnitudes
# stay as tuned; and centring at 0.5 makes the flip (x -> 1 - x) mirror about the body's midline
# and the affine turn about the shoulders.
BODY_SHOULDER_WIDTHS_PER_UNIT = 2.5
BODY_CENTRE = 0.5


@dataclass
class NormalizedSample:
    coords: np.ndarray  # (T, 49, 2) float32: trunk = (pixel - trunk_origin) / trunk_unit, hands in [0, 1] of their crop
    mask: np.ndarray  # (T, 49) bool: joint confidently detected (coordinates are zero where False)
    hand_boxes: np.ndarray  # (T, 2, 3) float32: left, right box as (centre x, centre y, side) in pixels; side 0 = none
    frame_index: np.ndarray  # (T,) int64: the original frame each kept frame came from
    trunk_origin: np.ndarray  # (2,) float64 pixels that map to trunk (0, 0)
    trunk_unit: np.ndarray  # (2,) float64 pixels per trunk unit in x and y
    trunk_norm: str  # the form used: the setting, or "frame" when `body` had no confident shoulders


def shoulder_frame(keypoints: np.ndarray, score_threshold: float) -> tuple[np.ndarray, float] | None:
    """(shoulder midpoint, shoulder width) in pixels, each the median over the frames where both
    shoulders score >= score_threshold (a few bad detections do not move it); None when no such
    frame exists or the shoulders coincide."""
    left, right = keypoints[:, SHOULDERS[0]], keypoints[:, SHOULDERS[1]]
    seen = (left[:, 2] >= score_threshold) & (right[:, 2] >= score_threshold)
    if not seen.any():
        return None
    width = float(np.median(np.linalg.norm(left[seen, :2] - right[seen, :2], axis=1)))
    if not np.isfinite(width) or width <= 0:
        return None
    return np.median((left[seen, :2] + right[seen, :2]) / 2, axis=0), width


def trunk_transform(keypoints: np.ndarray, frame_size: tuple[int, int], settings: PreprocessParams
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    """(origin, unit, form used): trunk coordinates are (pixel - origin) / unit."""
    size = np.asarray(frame_size, dtype=np.float64)
    if settings.trunk_norm == "body":
        found = shoulder_frame(keypoints, settings.score_threshold)
        if found is not None:
            centre, width = found
            unit = BODY_SHOULDER_WIDTHS_PER_UNIT * width
            return centre - BODY_CENTRE * unit, np.array([unit, unit]), "body"
    return np.zeros(2), size, "frame"


def fallback_boxes(keypoints: np.ndarray, arm: tuple[int, int, int], frame_size: tuple[int, int],
                   settings: PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) centres and (T,) sides of the boxes placed along the forearm of one arm (shoulder,
    elbow, wrist trunk indices); side 0 where the arm does not allow one (preprocess.fallback_box)."""
    shoulder, elbow, wrist = (keypoints[:, index, :2] for index in arm)
    scores = keypoints[:, arm, 2]
    forearm = wrist - elbow
    forearm_length = np.linalg.norm(forearm, axis=1)
    if settings.fallback_box == "ours":
        usable = (scores[:, 1:] >= settings.score_threshold).all(axis=1)
        centre, side = wrist + settings.fallback_center_ratio * forearm, settings.fallback_side_ratio * forearm_length
    else:
        upper_arm_length = np.linalg.norm(elbow - shoulder, axis=1)
        usable = ((scores >= OFFICIAL_FALLBACK_MIN_SCORE).all(axis=1)
                  & (frame_size[1] - wrist[:, 1] >= OFFICIAL_FALLBACK_BOTTOM_MARGIN))
        centre = wrist + OFFICIAL_FALLBACK_CENTRE_RATIO * forearm
        side = OFFICIAL_FALLBACK_SIDE_RATIO * np.maximum(forearm_length, OFFICIAL_FALLBACK_UPPER_ARM_RATIO * upper_arm_length)
    return centre, np.where(usable, side, 0.0)


def clamp_boxes(boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(..., 3) boxes moved into the image's pixels [0, W - 1] x [0, H - 1], their side capped at
    min(W, H) - 1 so that they fit (preprocess.clamp_box); a box of side 0 (none) stays as it is."""
    width, height = frame_size
    out = boxes.copy()
    side = np.minimum(boxes[..., 2], min(width, height) - 1)
    half = side / 2
    exists = boxes[..., 2] > 0
    out[..., 0] = np.where(exists, np.clip(boxes[..., 0], half, width - 1 - half), boxes[..., 0])
    out[..., 1] = np.where(exists, np.clip(boxes[..., 1], half, height - 1 - half), boxes[..., 1])
    out[..., 2] = np.where(exists, side, boxes[..., 2])
    return out


def hand_boxes(keypoints: np.ndarray, frame_size: tuple[int, int], settings: PreprocessParams) -> np.ndarray:
    """(T, 49, 3) pixel keypoints -> (T, 2, 3) left/right square boxes (cx, cy, side); side 0 = no box."""
    boxes = np.zeros((len(keypoints), 2, 3), dtype=np.float64)
    scores = keypoints[..., 2]
    for side_index, (hand, *arm) in enumerate(HANDS):
        xy = keypoints[:, hand, :2].astype(np.float64)
        visible = scores[:, hand] > settings.crop_score_threshold
        low = np.where(visible[..., None], xy, np.inf).min(axis=1)
        high = np.where(visible[..., None], xy, -np.inf).max(axis=1)
        enough = visible.sum(axis=1) >= settings.crop_min_visible
        with np.errstate(invalid="ignore"):
            extent = np.where(enough, (high - low).max(axis=1), 0.0)
            centre = np.where(enough[:, None], (high + low) / 2, 0.0)
        side = settings.crop_scale * extent

        # Too few hand joints (or all in one point): place the box along the forearm.
        fallback_centre, fallback_side = fallback_boxes(keypoints.astype(np.float64), tuple(arm), frame_size, settings)
        use_fallback = (side <= 0) & (fallback_side > 0)
        boxes[:, side_index, :2] = np.where(use_fallback[:, None], fallback_centre, centre)
        boxes[:, side_index, 2] = np.where(use_fallback, fallback_side, side)
    return clamp_boxes(boxes, frame_size) if settings.clamp_box else boxes


def normalize(keypoints: np.ndarray, frame_size: tuple[int, int], settings: PreprocessParams) -> NormalizedSample:
    """Normalize one sample's (T, 49, 3) pixel keypoints; raises SampleError when no frame has a hand."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    mask = keypoints[..., 2] >= settings.score_threshold
    coords = np.zeros(keypoints.shape[:2] + (2,), dtype=np.float64)
    # Over every frame, before frames without hands are dropped: more frames, steadier medians.
    trunk_origin, trunk_unit, trunk_form = trunk_transform(keypoints, frame_size, settings)
    coords[:, joints.TRUNK] = (keypoints[:, joints.TRUNK, :2] - trunk_origin) / trunk_unit

    boxes = hand_boxes(keypoints, frame_size, settings)
    for side_index, (hand, *_) in enumerate(HANDS):
        centre, side = boxes[:, side_index, None, :2], boxes[:, side_index, None, 2:]
        has_box = side[:, 0, 0] > 0
        origin = centre - side / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            # Into the crop resized to crop_size pixels, then divided by crop_size.
            in_crop = (keypoints[:, hand, :2] - origin) * (settings.crop_size / side) / settings.crop_size
        coords[:, hand] = np.where(has_box[:, None, None], in_crop, 0.0)
        mask[:, hand] &= has_box[:, None]
    if settings.mirror_left_hand:
        coords[:, joints.LEFT_HAND, 0] = 1.0 - coords[:, joints.LEFT_HAND, 0]
    if settings.zero_outside_box:
        for hand in (joints.LEFT_HAND, joints.RIGHT_HAND):
            coords[:, hand] = np.where((coords[:, hand] < 0) | (coords[:, hand] > 1), 0.0, coords[:, hand])

    hand_found = mask[:, joints.LEFT_HAND].any(axis=1) | mask[:, joints.RIGHT_HAND].any(axis=1)
    kept = np.flatnonzero(hand_found)
    if kept.size == 0:
        raise SampleError("no frame in which a hand is found")
    if kept.size > settings.max_frames:
        kept = kept[np.round(np.linspace(0, kept.size - 1, settings.max_frames)).astype(np.int64)]
    coords, mask, boxes = coords[kept], mask[kept], boxes[kept]
    coords[~mask] = 0.0
    return NormalizedSample(coords.astype(np.float32), mask, boxes.astype(np.float32), kept.astype(np.int64),
                            trunk_origin, trunk_unit, trunk_form)


# ---- the stage -----------------------------------------------------------------------------
FILE_FORMAT = "slrpipe.dataset/1"
SUBSETS_FILE = "label_subsets.json"
REPORT_FILE = "preprocess_report.csv"
SUMMARY_FILE = "preprocess_summary.json"


@dataclass
class PreprocessResult:
    written: int
    frames: int
    problems: list[Problem]
    split_counts: dict[str, int]
    subsets: dict[str, list[str]]
    dropped: list[Problem]  # one per gloss left without samples
    trunk_fallback: list[str]  # sample ids kept in the frame form under trunk_norm: body (shoulders never seen)


def run_preprocess(params: Params, keypoints_path: Path, out_dir: Path) -> PreprocessResult:
    """Normalize every extracted sample into `out_dir/dataset.h5`, with splits and label subsets."""
    settings = params.preprocess
    if not keypoints_path.is_file():
        raise SlrpipeError(f"{keypoints_path} not found: run the extract stage first (dvc repro extract)")
    with RaggedFile(keypoints_path) as source:
        columns = {name: source.column(name) for name in ("sample_id", "path", "gloss", "label", "signer", "split", "frame_size")}
        glosses = source.attr("glosses")
        labels = [int(label) for label in columns["label"]]
        # Splits and subsets are drawn over every extracted sample before normalizing, so a
        # sample that fails here does not move any other sample to another split.
        # Recordings without glosses (datasets.<name>.labelled: false) only serve pretraining:
        # every sample is a training sample, and there are no labelled subsets to draw.
        labelled = bool((source.attr("dataset") or {}).get("labelled", True))
        if labelled:
            splits = assign_splits(labels, columns["signer"], columns["split"], settings.split,
                                   settings.val_fraction, settings.test_fraction, settings.seed)
            train = [i for i, split in enumerate(splits) if split == "train"]
            subset_indices = label_subsets(train, labels, settings.label_fractions, settings.seed)
        else:
            splits, subset_indices = ["train"] * len(labels), {}

        problems: list[Problem] = []
        trunk_fallback: list[str] = []
        kept: set[str] = set()
        frames = 0
        specs = {
            "coords": ((joints.NUM_JOINTS, 2), np.float32),
            "mask": ((joints.NUM_JOINTS,), np.bool_),
            "hand_boxes": ((2, 3), np.float32),
            "frame_index": ((), np.int64),
        }
        with RaggedWriter(out_dir / DATASET_FILE, specs) as writer:
            for index in tqdm(range(len(source)), desc="preprocess", unit="sample", dynamic_ncols=True):
                sample_id = columns["sample_id"][index]
                size = tuple(int(v) for v in columns["frame_size"][index])
                try:
                    sample = normalize(source.frames("keypoints", index), size, settings)
                except SampleError as error:
                    problems.append(Problem(sample_id, columns["path"][index], str(error)))
                    log.warning("skipped %s: %s", sample_id, error)
                    continue
                if sample.trunk_norm != settings.trunk_norm:
                    trunk_fallback.append(sample_id)
                    log.warning("%s: no frame with both shoulders scored >= %s, so its trunk keeps the frame form "
                                "(preprocess.trunk_norm: body needs them)", sample_id, settings.score_threshold)
                writer.append(
                    {"coords": sample.coords, "mask": sample.mask, "hand_boxes": sample.hand_boxes, "frame_index": sample.frame_index},
                    sample_id=sample_id,
                    label=labels[index],
                    gloss=columns["gloss"][index],
                    signer=columns["signer"][index],
                    split=splits[index],
                    source=columns["path"][index],
                    frame_size=np.asarray(size, dtype=np.int64),
                    # How the trunk was placed, so it can be mapped back to the image (`slrpipe show`).
                    trunk_norm=sample.trunk_norm,
                    trunk_origin=sample.trunk_origin,
                    trunk_unit=sample.trunk_unit,
                )
                kept.add(sample_id)
                frames += len(sample.coords)
            # A gloss whose samples all failed here leaves the class list; labels stay 0..C-1.
            glosses, new_label, dropped = drop_empty_classes(glosses, labels, writer.values("label"))
            writer.remap_values("label", new_label)
            for problem in dropped:
                log.warning("%s", problem.problem)
            subsets = {
                subset_key(fraction): [columns["sample_id"][i] for i in indices if columns["sample_id"][i] in kept]
                for fraction, indices in subset_indices.items()
            }
            writer.attrs.update(
                format=FILE_FORMAT,
                glosses=glosses,
                preprocess=settings.model_dump(mode="json"),
                labelled=labelled,
                label_subsets=subsets,
                source=Path(os.path.relpath(keypoints_path, out_dir)).as_posix(),  # the same on every clone
            )
            written = len(writer)
    split_counts = {name: sum(1 for i, s in enumerate(splits) if s == name and columns["sample_id"][i] in kept) for name in SPLITS}
    write_json(out_dir / SUBSETS_FILE, subsets)
    write_glosses(out_dir / GLOSSES_FILE, glosses)
    write_report(out_dir / REPORT_FILE, problems + dropped)
    total = written + len(problems)
    write_json(out_dir / SUMMARY_FILE, {
        "samples": written,
        "bad": len(problems),
        "frames": frames,
        **{f"{name}_samples": count for name, count in split_counts.items()},
        **{f"labelled_{key}": len(ids) for key, ids in subsets.items()},
        "trunk_frame_fallback": len(trunk_fallback),
    })
    if trunk_fallback:
        log.warning("%d sample(s) kept the frame form of the trunk for want of confident shoulders: %s",
                    len(trunk_fallback), ", ".join(trunk_fallback))
    check_bad_fraction(len(problems), total, settings.max_bad_fraction, "preprocess.max_bad_fraction", out_dir / REPORT_FILE)
    return PreprocessResult(written, frames, problems, split_counts, subsets, dropped, trunk_fallback)
