"""Train/val/test splits and the nested label subsets of the semi-supervised protocol."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from slrpipe.errors import SlrpipeError
from slrpipe.pose.manifest import SPLITS

log = logging.getLogger(__name__)


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
    """One split name per sample: the dataset's own split where it gives one, the rest seeded.

    A sample the dataset marks test or val keeps that split, and one marked train never
    becomes test. What is drawn: `test_fraction` of the unmarked samples go to test, and
    `val_fraction` of the val candidates go to val. The val candidates are the unmarked
    samples, plus those marked train when the dataset has no val split at all, so a
    train/test-only dataset gets its validation split carved out of train.

    `random` draws per class (every class keeps the same proportions); `signer` puts all
    candidates of a signer into one split, filling test first, then val, in a seeded order
    of signers. When only train samples are to be split and some have no signer, `signer`
    falls back to `random` with a warning (an official train/test split whose signers are
    unknown still gets a validation split).
    """
    unknown = sorted({split for split in official if split} - set(SPLITS))
    if unknown:
        raise SlrpipeError(f"unknown split name(s) {unknown} in the dataset (expected {', '.join(SPLITS)})")
    unmarked = {index for index, split in enumerate(official) if not split}
    has_val = "val" in official
    candidates = sorted(index for index, split in enumerate(official) if not split or (split == "train" and not has_val))
    splits = [split or "train" for split in official]
    if not unmarked and (not candidates or val_fraction == 0):
        return splits
    if not unmarked:
        log.info("the dataset has no validation split: drawing %.0f%% of its %d training samples as validation",
                 100 * val_fraction, len(candidates))

    missing = sum(1 for index in candidates if not signers[index])
    if method == "signer" and missing and not unmarked:
        log.warning("preprocess.split is signer but %d training samples have no signer: "
                    "validation is drawn per class instead", missing)
        method = "random"
    rng = np.random.default_rng(seed)
    if method == "random":
        for members in _by_class(candidates, labels).values():
            order = [members[i] for i in rng.permutation(len(members))]
            testable = [index for index in order if index in unmarked]
            n_test = round(test_fraction * len(testable))
            n_val = round(val_fraction * len(order))
            if n_test + n_val >= len(order):  # keep at least one training sample per class
                n_val = max(0, len(order) - 1 - n_test)
            for index in testable[:n_test]:
                splits[index] = "test"
            for index in [index for index in order if splits[index] != "test"][:n_val]:
                splits[index] = "val"
        return splits

    if missing:
        raise SlrpipeError(f"preprocess.split is signer but {missing} samples have no signer: use preprocess.split: random")
    members_of: dict[str, list[int]] = defaultdict(list)
    for index in candidates:
        members_of[signers[index]].append(index)
    names = sorted(members_of)
    if len(names) < 1 + (test_fraction > 0 and bool(unmarked)) + (val_fraction > 0):
        raise SlrpipeError(f"preprocess.split is signer but the samples to split have only {len(names)} signer group(s)")
    remaining = [names[i] for i in rng.permutation(len(names))]
    targets = (("test", test_fraction * len(unmarked), unmarked), ("val", val_fraction * len(candidates), set(candidates)))
    for split, target, allowed in targets:
        taken = 0
        for name in list(remaining):
            # Always leave at least one signer for training.
            if taken >= target or len(remaining) == 1:
                break
            if all(index in allowed for index in members_of[name]):
                for index in members_of[name]:
                    splits[index] = split
                taken += len(members_of[name])
                remaining.remove(name)
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
