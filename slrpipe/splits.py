"""Train/val/test splits and the nested label subsets of the semi-supervised protocol."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from slrpipe.errors import SlrpipeError
from slrpipe.manifest import SPLITS


def _by_class(indices: Sequence[int], labels: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for index in indices:
        groups[labels[index]].append(index)
    return dict(sorted(groups.items()))


def assign_splits(
    labels: Sequence[int],
    signers: Sequence[str],
    official: Sequence[str],
    method: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[str]:
    """One split name per sample: the official split when the dataset has one, else a seeded split.

    `random` splits each class separately (every class keeps the same proportions);
    `signer` puts all samples of a signer into one split, filling test first, then val,
    in a seeded order of signers, until each holds its fraction of the samples.
    """
    count = len(labels)
    given = sum(1 for split in official if split)
    if given == count:
        unknown = sorted({split for split in official} - set(SPLITS))
        if unknown:
            raise SlrpipeError(f"unknown split name(s) {unknown} in the dataset (expected {', '.join(SPLITS)})")
        return list(official)
    if given:
        raise SlrpipeError(f"{given} of {count} samples have an official split and the others none: give every sample a split, or none")

    rng = np.random.default_rng(seed)
    splits = ["train"] * count
    if method == "random":
        for members in _by_class(range(count), labels).values():
            order = [members[i] for i in rng.permutation(len(members))]
            n_test = round(test_fraction * len(order))
            n_val = round(val_fraction * len(order))
            if n_test + n_val >= len(order):  # keep at least one training sample per class
                n_val = max(0, len(order) - 1 - n_test)
            for index in order[:n_test]:
                splits[index] = "test"
            for index in order[n_test : n_test + n_val]:
                splits[index] = "val"
        return splits

    missing = sum(1 for signer in signers if not signer)
    if missing:
        raise SlrpipeError(f"preprocess.split is signer but {missing} samples have no signer: use preprocess.split: random")
    members_of: dict[str, list[int]] = defaultdict(list)
    for index, signer in enumerate(signers):
        members_of[signer].append(index)
    names = sorted(members_of)
    if len(names) < 1 + (test_fraction > 0) + (val_fraction > 0):
        raise SlrpipeError(f"preprocess.split is signer but the dataset has only {len(names)} signer group(s)")
    order = [names[i] for i in rng.permutation(len(names))]
    targets = (("test", test_fraction * count), ("val", val_fraction * count))
    position = 0
    for split, target in targets:
        taken = 0
        # Always leave at least one signer for training.
        while taken < target and position < len(order) - 1:
            for index in members_of[order[position]]:
                splits[index] = split
            taken += len(members_of[order[position]])
            position += 1
    return splits


def label_subsets(train_indices: Sequence[int], labels: Sequence[int], fractions: Sequence[float], seed: int) -> dict[float, list[int]]:
    """Seeded, class-stratified, nested subsets of the training samples, one per fraction.

    Each class's training samples are put in one seeded order; the subset for fraction f
    takes the first ceil(f * n) of them (at least one), so a smaller fraction's subset is a
    prefix of, and lies inside, every larger one.
    """
    rng = np.random.default_rng(seed)
    orders = [[members[i] for i in rng.permutation(len(members))] for members in _by_class(train_indices, labels).values()]
    return {
        fraction: sorted(index for order in orders for index in order[: max(1, math.ceil(fraction * len(order)))])
        for fraction in sorted(fractions)
    }
