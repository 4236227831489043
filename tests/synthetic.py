"""A synthetic preprocess dataset.h5: signers that sit in different places and at different
distances from the camera, each performing a few signs that only the right wrist's path tells
apart. Written the way the preprocess stage writes it (`preprocess.normalize`, frame form)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slrpipe.config import PreprocessParams
from slrpipe.data.preprocess import FILE_FORMAT, normalize
from slrpipe.h5io import RaggedWriter
from slrpipe.pose import joints

FRAME_SIZE = (640, 480)
# Trunk joints in shoulder widths about the shoulder midpoint: nose, left shoulder, elbow, wrist, right ...
TRUNK = np.array([[0, -0.8], [-0.5, 0], [-0.6, 0.8], [-0.5, 1.5], [0.5, 0], [0.6, 0.8], [0.5, 1.5]], dtype=np.float64)
HAND = np.stack([np.cos(np.linspace(0, 5, 21)), np.sin(np.linspace(0, 5, 21))], axis=1) * np.linspace(0.05, 0.2, 21)[:, None]


def right_wrist_path(sign: int, frames: int) -> np.ndarray:
    """(frames, 2) the right wrist's offset from its rest position, in shoulder widths: up, sideways or a circle."""
    t = np.linspace(0, 1, frames)
    return [np.stack([0 * t, -1.2 * t], 1), np.stack([1.2 * t, 0 * t], 1),
            np.stack([0.5 * np.sin(2 * np.pi * t), -0.5 + 0.5 * np.cos(2 * np.pi * t)], 1)][sign]


def keypoints(sign: int, frames: int, centre: tuple[float, float], width: float, rng: np.random.Generator) -> np.ndarray:
    """(frames, 49, 3) pixel keypoints of one performance by a signer whose shoulders are `width` pixels apart at `centre`."""
    trunk = np.repeat(TRUNK[None], frames, 0)
    trunk[:, 6] += right_wrist_path(sign, frames)
    trunk[:, 5] += right_wrist_path(sign, frames) / 2
    trunk = trunk + rng.normal(0, 0.02, trunk.shape)
    out = np.ones((frames, joints.NUM_JOINTS, 3))
    out[:, joints.TRUNK, :2] = np.asarray(centre) + width * trunk
    for hand, wrist in ((joints.LEFT_HAND, 3), (joints.RIGHT_HAND, 6)):
        out[:, hand, :2] = out[:, wrist, None, :2] + width * HAND
    return out


# Signer -> (split, shoulder midpoint in pixels, shoulder width in pixels): the test signer sits
# where no training signer does, and closer.
SIGNERS = {"s0": ("train", (300, 200), 120), "s1": ("train", (340, 240), 150), "s2": ("train", (280, 260), 130),
           "s3": ("train", (360, 190), 110), "v0": ("val", (320, 220), 140), "t0": ("test", (420, 300), 200)}
GLOSSES = ["circle", "side", "up"]  # sorted; label = index
SIGNS = {"up": 0, "side": 1, "circle": 2}  # gloss -> path


def write_dataset(path: Path, per_signer: int = 4, lengths: tuple[int, ...] | dict[str, tuple[int, ...]] = (30,),
                  seed: int = 0, signers: dict = SIGNERS) -> Path:
    """Write the dataset; each signer performs each sign `per_signer` times, lengths cycling through
    `lengths` (or, given per split, through that split's)."""
    rng = np.random.default_rng(seed)
    settings = PreprocessParams(trunk_norm="frame")  # stored in the frame form: the test signer sits elsewhere
    specs = {"coords": ((joints.NUM_JOINTS, 2), np.float32), "mask": ((joints.NUM_JOINTS,), np.bool_),
             "hand_boxes": ((2, 3), np.float32), "frame_index": ((), np.int64)}
    count = 0
    with RaggedWriter(path, specs) as writer:
        for signer, (split, centre, width) in signers.items():
            for label, gloss in enumerate(GLOSSES):
                for repeat in range(per_signer):
                    cycle = lengths[split] if isinstance(lengths, dict) else lengths
                    frames = cycle[count % len(cycle)]
                    count += 1
                    sample = normalize(keypoints(SIGNS[gloss], frames, centre, width, rng), FRAME_SIZE, settings)
                    writer.append({"coords": sample.coords, "mask": sample.mask, "hand_boxes": sample.hand_boxes,
                                   "frame_index": sample.frame_index},
                                  sample_id=f"{signer}/{gloss}/{repeat}", label=label, gloss=gloss, signer=signer, split=split,
                                  source=f"{signer}/{gloss}/{repeat}", frame_size=np.asarray(FRAME_SIZE, dtype=np.int64),
                                  trunk_norm=sample.trunk_norm, trunk_origin=sample.trunk_origin, trunk_unit=sample.trunk_unit)
        writer.attrs.update(format=FILE_FORMAT, glosses=GLOSSES, preprocess=settings.model_dump(mode="json"),
                            label_subsets={}, source="synthetic")
    return path
