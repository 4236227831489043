"""How far apart the two views of a pretraining pair are, per augmentation, without any encoder.

For each validation sample and each body part: the distance (over all frames and joints) between
its un-augmented view and the same sample under ONE augmentation, divided by the mean distance
between un-augmented views of two different samples. A ratio of 1 or more means that augmentation
alone makes a positive no closer than a random other sample: instance discrimination cannot use
that part. Run by hand:

    python bench/view_difficulty.py --dataset data/preprocess/ksl13/dataset.h5 --params params.yaml
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from slrpipe.data import augment
from slrpipe.config import load_params
from slrpipe.data.dataset import PoseDataset


def main(dataset: Path = Path("data/preprocess/ksl13/dataset.h5"), params: Path = Path("params.yaml"), split: str = "val",
         seed: int = 0) -> None:
    settings = load_params(params).augment
    samples = PoseDataset(dataset, settings, "eval", split=split)
    rng = np.random.default_rng(seed)
    sequences = [samples.sequence(i) for i in range(len(samples))]
    plain = [augment.resample(c, m, 0, len(c), settings.frames) for c, m in sequences]

    def crop(c, m):
        start, stop = augment.temporal_crop(len(c), rng, 0.1, 1)
        return augment.resample(c, m, start, stop, settings.frames)

    def masked(count):
        return lambda c, m: augment.mask_joints(*augment.resample(c, m, 0, len(c), settings.frames), rng, count)

    def affine(c, m):
        c, m = augment.resample(c, m, 0, len(c), settings.frames)
        return augment.apply_affine(c, m, augment.random_affine(rng, settings.pretrain)), m

    def flipped(c, m):
        return augment.flip(*augment.resample(c, m, 0, len(c), settings.frames), samples.left_mirrored)

    def as_configured(c, m):  # one view as params.yaml augments it (a shared flip mirrors both views: none here)
        stage = settings.pretrain
        shared = stage.model_copy(update={"flip_probability": 0.0}) if stage.flip_views == "shared" else stage
        return augment.augment_view(c, m, rng, shared, settings.frames, samples.left_mirrored)

    def distance(a, b, part):
        return float(np.sqrt(((a[0][:, part] - b[0][:, part]) ** 2).sum()))

    pairs = [(i, j) for i in range(len(plain)) for j in range(i + 1, len(plain))]
    chosen = rng.choice(len(pairs), size=min(2000, len(pairs)), replace=False)
    negative = {name: np.mean([distance(plain[pairs[k][0]], plain[pairs[k][1]], part) for k in chosen])
                for name, part in augment.PARTS.items()}
    rows = [("temporal crop to 10 %", crop), ("rotation + scale + shear", affine), ("flip (one view only)", flipped),
            ("25 joints zeroed (authors')", masked(25)), ("12 joints zeroed", masked(12)), ("8 joints zeroed", masked(8)),
            ("5 joints zeroed", masked(5)), ("params.yaml's augmentation", as_configured)]
    print(f"{len(plain)} {split} samples of {dataset}; positive distance / distance to another sample")
    print("| augmentation | " + " | ".join(augment.PARTS) + " |")
    print("|---|" + "---:|" * len(augment.PARTS))
    for label, transform in rows:
        views = [transform(c, m) for c, m in sequences]
        ratios = [np.mean([distance(plain[i], views[i], part) for i in range(len(plain))]) / negative[name]
                  for name, part in augment.PARTS.items()]
        print(f"| {label} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    typer.run(main)
