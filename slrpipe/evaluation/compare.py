"""Two models on the same test samples: the difference of their top-1 accuracy with a paired
bootstrap interval, over test samples and, when each sample's signer is known, over signers.

`slrpipe compare A/scores.csv B/scores.csv` prints it; results.md states it for the built-in
baseline and for a reference run (`report.reference_scores`, e.g. a run without pretraining).
An interval that holds 0 means the two are within noise of each other on this test set.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.metrics import mean_per_class, paired_difference, read_scores_csv, topk_correct
from slrpipe.h5io import RaggedFile


@dataclass
class PairedComparison:
    samples: int
    top1_a: dict[str, float]  # "per_instance" / "per_class" -> accuracy of A
    top1_b: dict[str, float]
    difference: dict[str, tuple[float, float, float]]  # level -> (A - B, low, high), over test samples
    signers: int | None  # test signers when known, else None
    signer_difference: dict[str, tuple[float, float, float]] | None  # the same over signers (2 or more signers)

    def verdict(self, a: str, b: str) -> str:
        """One sentence on P-I top-1: which is better, or that the difference is within noise."""
        difference, low, high = (self.signer_difference or self.difference)["per_instance"]
        over = f"the {self.signers} test signers" if self.signer_difference else f"the {self.samples} test samples"
        if low > 0:
            return f"{a} beats {b}: the interval over {over} lies above 0"
        if high < 0:
            return f"{a} does worse than {b}: the interval over {over} lies below 0"
        return f"{a} and {b} are within noise of each other: the interval over {over} holds 0"


def read_labels(path: Path) -> dict[str, int]:
    """sample id -> true label from a scores CSV's `label` column (evaluate writes one)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if header[:2] != ["sample_id", "label"]:
            raise SlrpipeError(f"{path}: no label column (columns sample_id,label,<glosses>, as evaluate writes them)")
        labels = {}
        for line, row in enumerate(reader, start=2):
            if not row[1:2] or not row[1].lstrip("-").isdigit():
                raise SlrpipeError(f"{path} line {line}: the label {row[1] if row[1:] else ''!r} is not a class index")
            labels[row[0]] = int(row[1])
    return labels


def signers_by_id(dataset_path: Path | None, sample_ids: list[str]) -> list[str] | None:
    """Each sample's signer from a preprocess dataset.h5, or None when the file is missing, lacks a
    sample, or any of them has no signer id."""
    if dataset_path is None or not Path(dataset_path).is_file():
        return None
    with RaggedFile(dataset_path) as dataset:
        try:
            signer_of = dict(zip(dataset.column("sample_id"), dataset.column("signer")))
        except KeyError:
            return None
    signers = [signer_of.get(sample_id) for sample_id in sample_ids]
    return signers if all(signers) else None


def compare_scores(a_path: Path, b_path: Path, dataset_path: Path | None = None, draws: int = 2000,
                   seed: int = 0) -> PairedComparison:
    """A's top-1 minus B's on the samples both score (the same ids, labels and classes, else an error)."""
    a_ids, a_scores = read_scores_csv(a_path)
    b_ids, b_scores = read_scores_csv(b_path)
    if a_scores.shape[1] != b_scores.shape[1]:
        raise SlrpipeError(f"{a_path} scores {a_scores.shape[1]} classes, {b_path} {b_scores.shape[1]}: not the same task")
    missing = sorted(set(a_ids) ^ set(b_ids))
    if missing:
        which = a_path if missing[0] in set(a_ids) else b_path
        raise SlrpipeError(f"{len(missing)} sample id(s) are scored by one file only, the first {missing[0]!r} (in {which}): "
                           "a paired comparison needs the same test samples")
    a_labels, b_labels = read_labels(a_path), read_labels(b_path)
    different = [i for i in a_ids if a_labels[i] != b_labels[i]]
    if different:
        raise SlrpipeError(f"{a_path} and {b_path} give sample {different[0]!r} different labels: not the same test split")
    order = {sample_id: i for i, sample_id in enumerate(b_ids)}
    b_scores = b_scores[[order[sample_id] for sample_id in a_ids]]
    labels = np.array([a_labels[i] for i in a_ids], dtype=np.int64)
    correct_a, correct_b = topk_correct(a_scores, labels, 1), topk_correct(b_scores, labels, 1)
    difference = paired_difference(correct_a, correct_b, labels, draws, seed)
    signers = signers_by_id(dataset_path, a_ids)
    count = None if signers is None else len(set(signers))
    by_signer = paired_difference(correct_a, correct_b, labels, draws, seed, groups=signers) if count and count >= 2 else None
    top1_a = {"per_instance": float(correct_a.mean()), "per_class": mean_per_class(correct_a, labels)}
    top1_b = {"per_instance": float(correct_b.mean()), "per_class": mean_per_class(correct_b, labels)}
    return PairedComparison(len(labels), top1_a, top1_b, difference, count, by_signer)
