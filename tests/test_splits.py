from collections import Counter

import numpy as np
import pytest

from slrpipe.errors import SlrpipeError
from slrpipe.splits import assign_splits, label_subsets

# 6 classes x 10 samples, 5 signers each signing 2 samples of every class
LABELS = [label for label in range(6) for _ in range(10)]
SIGNERS = [f"s{(i % 10) // 2}" for i in range(60)]
NO_SPLIT = [""] * 60


def test_signer_split_keeps_every_signer_in_one_split():
    splits = assign_splits(LABELS, SIGNERS, NO_SPLIT, "signer", 0.2, 0.2, seed=0)
    by_signer = {}
    for signer, split in zip(SIGNERS, splits):
        by_signer.setdefault(signer, set()).add(split)
    assert all(len(found) == 1 for found in by_signer.values())
    assert Counter(splits) == {"train": 36, "val": 12, "test": 12}


def test_signer_split_is_seeded():
    first = assign_splits(LABELS, SIGNERS, NO_SPLIT, "signer", 0.2, 0.2, seed=0)
    assert first == assign_splits(LABELS, SIGNERS, NO_SPLIT, "signer", 0.2, 0.2, seed=0)
    others = {tuple(assign_splits(LABELS, SIGNERS, NO_SPLIT, "signer", 0.2, 0.2, seed=s)) for s in range(1, 8)}
    assert len(others | {tuple(first)}) > 1


def test_random_split_is_stratified():
    splits = assign_splits(LABELS, SIGNERS, NO_SPLIT, "random", 0.2, 0.3, seed=3)
    for label in range(6):
        counts = Counter(s for s, l in zip(splits, LABELS) if l == label)
        assert counts == {"train": 5, "val": 2, "test": 3}


def test_official_split_is_kept_and_partial_split_is_an_error():
    official = ["train", "val", "test"] * 20
    assert assign_splits(LABELS, SIGNERS, official, "signer", 0.2, 0.2, seed=0) == official
    with pytest.raises(SlrpipeError, match="2 of 60 samples have an official split"):
        assign_splits(LABELS, SIGNERS, ["train", "test"] + [""] * 58, "random", 0.2, 0.2, seed=0)
    with pytest.raises(SlrpipeError, match="unknown split name"):
        assign_splits(LABELS, SIGNERS, ["dev"] * 60, "random", 0.2, 0.2, seed=0)


def test_signer_split_needs_signers():
    with pytest.raises(SlrpipeError, match="60 samples have no signer: use preprocess.split: random"):
        assign_splits(LABELS, [""] * 60, NO_SPLIT, "signer", 0.2, 0.2, seed=0)
    with pytest.raises(SlrpipeError, match="only 2 signer group"):
        assign_splits(LABELS, ["a", "b"] * 30, NO_SPLIT, "signer", 0.2, 0.2, seed=0)


def test_label_subsets_are_nested_stratified_and_seeded():
    train = list(range(60))
    subsets = label_subsets(train, LABELS, [0.6, 0.2, 0.4], seed=1)
    assert list(subsets) == [0.2, 0.4, 0.6]
    assert set(subsets[0.2]) < set(subsets[0.4]) < set(subsets[0.6])
    for fraction, chosen in subsets.items():
        per_class = Counter(LABELS[i] for i in chosen)
        assert per_class == {label: int(np.ceil(fraction * 10)) for label in range(6)}
    assert subsets == label_subsets(train, LABELS, [0.2, 0.4, 0.6], seed=1)
    assert subsets[0.2] != label_subsets(train, LABELS, [0.2], seed=2)[0.2]


def test_a_class_with_one_sample_is_kept_in_every_subset():
    subsets = label_subsets([0, 1, 2, 3], [0, 0, 0, 1], [0.2], seed=0)
    assert Counter([0, 0, 0, 1][i] for i in subsets[0.2]) == {0: 1, 1: 1}
