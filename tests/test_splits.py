import csv
from collections import Counter

import numpy as np
import pytest

from slrpipe.errors import SlrpipeError
from slrpipe.data.splits import assign_splits, label_subsets

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


def test_official_split_with_val_is_kept():
    official = ["train", "val", "test"] * 20
    assert assign_splits(LABELS, SIGNERS, official, "signer", 0.2, 0.2, seed=0) == official
    with pytest.raises(SlrpipeError, match="unknown split name"):
        assign_splits(LABELS, SIGNERS, ["dev"] * 60, "random", 0.2, 0.2, seed=0)


def _assert_signer_disjoint(splits, signers):
    by_signer = {}
    for signer, split in zip(signers, splits):
        by_signer.setdefault(signer, set()).add(split)
    assert all(len(found) == 1 for found in by_signer.values()), by_signer


def test_train_test_only_gets_val_carved_from_train_by_signer():
    # signers s0-s3 train (48 samples), s4 test (12)
    official = ["test" if signer == "s4" else "train" for signer in SIGNERS]
    splits = assign_splits(LABELS, SIGNERS, official, "signer", 0.25, 0.2, seed=0)
    assert [i for i, s in enumerate(splits) if s == "test"] == [i for i, s in enumerate(official) if s == "test"]
    assert Counter(splits) == {"train": 36, "val": 12, "test": 12}  # one whole signer of the four: 25 %
    _assert_signer_disjoint(splits, SIGNERS)
    assert splits == assign_splits(LABELS, SIGNERS, official, "signer", 0.25, 0.2, seed=0)
    others = {tuple(assign_splits(LABELS, SIGNERS, official, "signer", 0.25, 0.2, seed=s)) for s in range(1, 8)}
    assert len(others | {tuple(splits)}) > 1


def test_train_test_only_gets_class_stratified_val_without_signers():
    official = ["train"] * 8 + ["test"] * 2  # per class of 10
    official = official * 6
    for method, signers in (("random", SIGNERS), ("signer", [""] * 60)):  # signer falls back: none known
        splits = assign_splits(LABELS, signers, official, method, 0.25, 0.2, seed=1)
        assert [s for s, o in zip(splits, official) if o == "test"] == ["test"] * 12
        for label in range(6):
            counts = Counter(s for s, l in zip(splits, LABELS) if l == label)
            assert counts == {"train": 6, "val": 2, "test": 2}


def test_partially_blank_splits_are_drawn_around_the_given_ones():
    # s0, s1 marked train; s2 marked test; s3, s4 unmarked
    official = {"s0": "train", "s1": "train", "s2": "test"}
    given = [official.get(signer, "") for signer in SIGNERS]
    for method in ("signer", "random"):
        splits = assign_splits(LABELS, SIGNERS, given, method, 0.2, 0.5, seed=2)
        for split, mark in zip(splits, given):
            if mark == "test":
                assert split == "test"
            elif mark == "train":
                assert split in ("train", "val")
        unmarked = [s for s, mark in zip(splits, given) if not mark]
        assert Counter(unmarked)["test"] == 12  # half of the 24 unmarked samples
        assert Counter(splits)["val"] == 12  # 20 % of the 60 - 12 candidates, rounded to signers / per class
        if method == "signer":
            _assert_signer_disjoint(splits, SIGNERS)


def test_unmarked_samples_of_a_dataset_with_val_do_not_take_its_train_samples():
    given = ["train", "val", "test", ""] * 15
    splits = assign_splits(LABELS, SIGNERS, given, "random", 0.2, 0.2, seed=0)
    assert all(s == g for s, g in zip(splits, given) if g)
    assert set(s for s, g in zip(splits, given) if not g) <= {"train", "val", "test"}


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


@pytest.mark.parametrize("session_marks", [
    {"MP_Data": "train", "MP_Data1": "train", "MP_Data2": "train", "MP_Data3": "test"},  # train/test only
    {"MP_Data": "train", "MP_Data1": "train", "MP_Data2": "", "MP_Data3": "test"},  # some rows unmarked
])
def test_manifest_train_test_split_through_preprocess(shared, tmp_path, session_marks):
    """A user's manifest that gives train and test (or leaves some rows blank) gets a validation
    split drawn from its train and unmarked rows; its test rows stay exactly as given."""
    from slrpipe.pose.extract import run_extract
    from slrpipe.h5io import RaggedFile
    from slrpipe.data.preprocess import run_preprocess
    from tests.conftest import make_params

    csv_path = tmp_path / "list.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "gloss", "signer", "split"])
        writer.writeheader()
        for session, mark in session_marks.items():
            for word in ("bad", "good"):
                for sequence in range(2):
                    writer.writerow({"path": str(shared / "ksl13" / session / word / str(sequence)), "gloss": word,
                                     "signer": session, "split": mark})
    params = make_params(csv_path, source="manifest")
    params = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"val_fraction": 0.25})})
    run_extract(params, tmp_path / "extract", None)
    result = run_preprocess(params, tmp_path / "extract" / "keypoints.h5", tmp_path / "pre")
    with RaggedFile(tmp_path / "pre" / "dataset.h5") as dataset:
        splits = dict(zip(dataset.column("signer"), dataset.column("split")))  # one split per signer
        by_signer = {}
        for signer, split in zip(dataset.column("signer"), dataset.column("split")):
            by_signer.setdefault(signer, set()).add(split)
    assert all(len(found) == 1 for found in by_signer.values())
    assert splits["MP_Data3"] == "test"
    # The unmarked session is the only one that may join test; 20 % of 4 signers' samples rounds up to it.
    assert result.split_counts["test"] == (8 if "" in session_marks.values() else 4)
    assert result.split_counts["val"] == 4  # one signer: 25 % of the val candidates
    assert [s for s, mark in session_marks.items() if mark == "train" and splits[s] == "test"] == []
