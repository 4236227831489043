"""Evaluation metrics of the paper (Sec. IV-B) and late fusion "(+R)"; pure numpy.

Accuracies are fractions in [0, 1], not percentages.

- Per-instance (P-I) top-k: the fraction of test samples whose true class is among the k
  highest scores.
- Per-class (P-C) top-k: the mean, over the classes PRESENT in the test labels, of each
  class's top-k accuracy. A class with no test sample is ignored, not counted as 0 (the paper:
  "the average of the sign categories present in the test data").

Ties. The true class's rank is the number of classes that score strictly higher plus the
number that score exactly the same and have a smaller class index; a sample is correct at k
iff rank < k. This is the position of the true class in a stable descending sort, and at k=1
it agrees with `np.argmax` (first maximum), so top-1 accuracy and the confusion matrix never
disagree. A tie is thus never resolved in the true class's favour merely because it is a tie:
a model with constant scores "predicts" class 0 and is right exactly when the label is 0. NaN
scores are an error (every comparison with NaN is false, which would rank a NaN true class
first).

Scores CSV (for late fusion). UTF-8, standard CSV quoting (so glosses may hold commas, quotes
and spaces), one row per sample:

    sample_id,label,<gloss_0>,<gloss_1>,...,<gloss_{C-1}>

`sample_id` is the first column and must be unique. `label` (the integer true class) is
optional: it may be empty, or the column may be left out (an external model's file); it is
read as the label column only if its header is exactly "label". Then one score column per
class, headed by the gloss names in label order (the order of glosses.txt). `write_scores_csv`
writes the shortest text that reads back to the same float.

Late fusion adds the two models' class probabilities, matched by sample id (any row order).
Our scores (the evaluate stage's scores.csv) are already softmax probabilities and are added as
they are: a second softmax of values in [0, 1] flattens them to nearly uniform and leaves the
other model to decide alone. The other model's scores become probabilities by `normalize`:
"softmax" when its file holds logits, "none" when it holds probabilities already. Both cases
are checked, so a file of the other kind is an error rather than a silently skewed sum.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slrpipe.engine.scoring import (  # noqa: F401 - the rank-based accuracies are part of this module's API
    check_scores,
    check_k,
    mean_per_class,
    require_samples,
    per_class_accuracy,
    per_instance_accuracy,
    topk_correct,
    true_rank,
)
from slrpipe.errors import SlrpipeError


def per_class_table(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> list[dict[str, Any]]:
    """One row per class present in `labels`, by class index: {"class", "samples", "top1", "top5", ...}."""
    correct = {k: topk_correct(scores, labels, k) for k in ks}
    labels = np.asarray(labels, dtype=np.int64)
    rows = []
    for label in np.unique(labels):
        mine = labels == label
        row: dict[str, Any] = {"class": int(label), "samples": int(mine.sum())}
        row.update({f"top{k}": float(hits[mine].mean()) for k, hits in correct.items()})
        rows.append(row)
    return rows


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = top-1 prediction (first maximum)."""
    scores, labels = check_scores(scores, labels)
    if scores.shape[1] != classes:
        raise SlrpipeError(f"scores have {scores.shape[1]} classes, expected {classes}")
    predicted = scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=np.int64)
    counts = np.bincount(labels * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes).astype(np.int64)


def _metrics(rank: np.ndarray, labels: np.ndarray, ks: Sequence[int], prefix: str) -> dict[str, float]:
    result = {f"{prefix}per_instance/top{k}": float((rank < k).mean()) for k in ks}
    result.update({f"{prefix}per_class/top{k}": mean_per_class(rank < k, labels) for k in ks})
    return result


def evaluate(
    scores: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    subsets: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """All metrics: "per_instance/top1", ..., "per_class/top5", then "<subset>/per_instance/top1", ...

    `subsets` maps a name (e.g. NMFs-CSL's "confusing" and "normal") to a (N,) bool mask of the
    samples it holds; P-C within a subset averages over the classes present in that subset.
    """
    rank = true_rank(scores, labels)  # validates scores and labels
    labels = np.asarray(labels, dtype=np.int64)
    for k in ks:
        check_k(k, np.shape(scores)[1])
    require_samples(labels)
    result = _metrics(rank, labels, ks, "")
    for name, mask in (subsets or {}).items():
        if not name or "/" in name:
            raise SlrpipeError(f"subset name {name!r} must be non-empty and without '/' (it prefixes metric names)")
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != labels.shape:
            raise SlrpipeError(f"subset {name!r} must be a bool mask of the {len(labels)} samples, "
                               f"got {mask.dtype} of shape {mask.shape}")
        require_samples(labels[mask], f"subset {name!r}")
        result.update(_metrics(rank[mask], labels[mask], ks, f"{name}/"))
    return result


# --- Uncertainty: bootstrap intervals and per-signer accuracy ---------------------------------

CONFIDENCE = 0.95


def _resampled_accuracies(correct: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(P-I, P-C) of a resample given as how many times each sample was drawn."""
    per_instance = float(weights @ correct / weights.sum())
    counts = np.bincount(labels, weights=weights)
    hits = np.bincount(labels, weights=weights * correct, minlength=len(counts))
    present = counts > 0  # a class the resample missed is absent, as in P-C itself
    return per_instance, float(np.mean(hits[present] / counts[present]))


def _check_bootstrap(labels: np.ndarray, draws: int, confidence: float, groups: Sequence[str] | np.ndarray | None) -> None:
    require_samples(labels)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise SlrpipeError(f"bootstrap needs an integer number of draws >= 1, got {draws!r}")
    if not 0 < confidence < 1:
        raise SlrpipeError(f"bootstrap confidence must lie strictly between 0 and 1, got {confidence}")
    if groups is not None and len(groups) != len(labels):
        raise SlrpipeError(f"bootstrap: {len(groups)} group ids for {len(labels)} samples")


def _resample_weights(samples: int, draws: int, seed: int, groups: Sequence[str] | np.ndarray | None):
    """Yield `draws` seeded resamples of `samples` samples, each as how many times each sample was
    drawn (bootstrap_intervals says how groups are drawn). The same seed gives the same resamples,
    which is what makes a comparison of two models on them paired."""
    # Samples ordered by group: group g holds positions starts[g] .. starts[g] + sizes[g] - 1.
    group_of = np.zeros(samples, dtype=np.int64) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    order = np.argsort(group_of, kind="stable")
    sizes = np.bincount(group_of)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        # Without groups everything is one group drawn once: the ordinary bootstrap.
        times = np.ones(1, dtype=np.int64) if groups is None else np.bincount(rng.integers(0, len(sizes), len(sizes)),
                                                                               minlength=len(sizes))
        group = np.repeat(np.arange(len(sizes)), times * sizes)  # a group drawn m times gives m * size samples
        picked = order[starts[group] + rng.integers(0, sizes[group])]
        yield np.bincount(picked, minlength=samples).astype(np.float64)


def _percentiles(results: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(results, [tail, 1 - tail], axis=0)
    return low, high


def bootstrap_intervals(
    correct: np.ndarray,
    labels: np.ndarray,
    draws: int,
    seed: int,
    groups: Sequence[str] | np.ndarray | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of P-I and P-C accuracy: {"per_instance": (low, high),
    "per_class": (low, high)}, from `draws` seeded resamples.

    `correct` (N,) bool says which samples are right (at some k), `labels` their classes. Without
    `groups` a resample draws N samples with replacement. With `groups` (one id per sample, e.g.
    its signer) it is a two-stage bootstrap: draw as many groups as there are, with replacement,
    then, for each group drawn, as many of its samples as it has, with replacement. A signer's
    samples succeed or fail together, so drawing whole signers is what says how the accuracy may
    vary on new signers; redrawing within them keeps each signer's own sampling noise, which
    drawing whole signers alone would drop (two signers of equal accuracy would give an interval
    of zero width).
    """
    correct = np.asarray(correct, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if correct.ndim != 1 or labels.shape != correct.shape:
        raise SlrpipeError(f"bootstrap: {labels.shape} labels for {correct.shape} correctness flags")
    _check_bootstrap(labels, draws, confidence, groups)
    results = np.array([_resampled_accuracies(correct, labels, weights)
                        for weights in _resample_weights(len(labels), draws, seed, groups)])
    low, high = _percentiles(results, confidence)
    return {"per_instance": (float(low[0]), float(high[0])), "per_class": (float(low[1]), float(high[1]))}


def paired_difference(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    labels: np.ndarray,
    draws: int,
    seed: int,
    groups: Sequence[str] | np.ndarray | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, tuple[float, float, float]]:
    """Accuracy of A minus accuracy of B on the same samples, with a paired percentile bootstrap
    interval: {"per_instance": (difference, low, high), "per_class": (...)}. Each resample draws
    the same samples (or, with `groups`, the same signers and samples) for both models, so what the
    two get right or wrong together cancels and the interval measures only their difference."""
    correct_a, correct_b = (np.asarray(c, dtype=np.float64) for c in (correct_a, correct_b))
    labels = np.asarray(labels, dtype=np.int64)
    if correct_a.ndim != 1 or correct_a.shape != correct_b.shape or labels.shape != correct_a.shape:
        raise SlrpipeError(f"paired bootstrap: {correct_a.shape} and {correct_b.shape} correctness flags for "
                           f"{labels.shape} labels")
    _check_bootstrap(labels, draws, confidence, groups)
    ones = np.ones(len(labels))
    point = np.subtract(_resampled_accuracies(correct_a, labels, ones), _resampled_accuracies(correct_b, labels, ones))
    results = np.array([np.subtract(_resampled_accuracies(correct_a, labels, weights),
                                    _resampled_accuracies(correct_b, labels, weights))
                        for weights in _resample_weights(len(labels), draws, seed, groups)])
    low, high = _percentiles(results, confidence)
    return {level: (float(point[i]), float(low[i]), float(high[i])) for i, level in enumerate(("per_instance", "per_class"))}


def top1_intervals(
    scores: np.ndarray,
    labels: np.ndarray,
    draws: int,
    seed: int,
    signers: Sequence[str] | None = None,
) -> dict[str, float]:
    """95 % intervals of P-I and P-C top-1, named for metrics.json beside the values they bound:
    "per_instance/top1_ci_low", "..._ci_high", and with `signers` (one per sample) also
    "per_instance/top1_signer_ci_low", "..._signer_ci_high"; the same for "per_class/"."""
    correct = topk_correct(scores, labels, 1)
    labels = np.asarray(labels, dtype=np.int64)
    kinds = {"ci": bootstrap_intervals(correct, labels, draws, seed)}
    if signers is not None:
        kinds["signer_ci"] = bootstrap_intervals(correct, labels, draws, seed, groups=signers)
    result = {}
    for level in ("per_instance", "per_class"):
        for kind, intervals in kinds.items():
            low, high = intervals[level]
            result.update({f"{level}/top1_{kind}_low": low, f"{level}/top1_{kind}_high": high})
    return result


def per_signer_table(scores: np.ndarray, labels: np.ndarray, signers: Sequence[str]) -> list[dict[str, Any]]:
    """One row per signer, by signer id: {"signer", "samples", "top1"} (P-I top-1 on that signer's samples)."""
    correct = topk_correct(scores, labels, 1)
    signers = np.asarray(signers, dtype=str)
    if signers.shape != correct.shape:
        raise SlrpipeError(f"{len(signers)} signer ids for {len(correct)} samples")
    return [{"signer": str(signer), "samples": int((signers == signer).sum()), "top1": float(correct[signers == signer].mean())}
            for signer in np.unique(signers)]


# --- Scores CSV and late fusion -------------------------------------------------------------


def _format_scores(row: np.ndarray) -> list[str]:
    # numpy's str() of a float32 is its shortest round-tripping text (Python's repr would print
    # the float64 widening, ~17 digits); float64 (and anything else) goes through Python's repr.
    if row.dtype == np.float32:
        return [str(value) for value in row]
    return [repr(value) for value in row.astype(np.float64).tolist()]


def write_scores_csv(
    path: Path,
    sample_ids: Sequence[str],
    labels: Sequence[int] | np.ndarray | None,
    scores: np.ndarray,
    glosses: Sequence[str],
) -> None:
    """Write the scores CSV of the module docstring; `labels=None` leaves the label column empty."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or len(sample_ids) != len(scores) or len(glosses) != scores.shape[1]:
        raise SlrpipeError(f"scores of shape {scores.shape} do not fit {len(sample_ids)} sample ids "
                           f"and {len(glosses)} glosses")
    if labels is not None and len(labels) != len(scores):
        raise SlrpipeError(f"{len(labels)} labels for {len(scores)} samples")
    if not all(sample_ids):
        raise SlrpipeError("an empty sample id cannot be matched by fusion")
    _unique_ids(sample_ids, "the")
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["sample_id", "label", *glosses])
        for i, sample_id in enumerate(sample_ids):
            label = "" if labels is None else str(int(labels[i]))
            writer.writerow([sample_id, label, *_format_scores(scores[i])])


def read_scores_csv(path: Path, glosses: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Read a scores CSV: (sample ids, (N, C) float64 scores). The label column, if any, is ignored.

    With `glosses`, the score columns' headers must be exactly these names in this order.
    """
    path = Path(path)
    if not path.is_file():
        raise SlrpipeError(f"{path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or not rows[0] or rows[0][0] != "sample_id":
        raise SlrpipeError(f"{path}: the first column must be headed 'sample_id' (columns: sample_id,label,<glosses>)")
    header = rows[0]
    first = 2 if len(header) > 1 and header[1] == "label" else 1
    names = header[first:]
    if not names:
        raise SlrpipeError(f"{path}: no score columns after {','.join(header[:first])}")
    if glosses is not None:
        for column, (got, want) in enumerate(zip(names, glosses), start=first + 1):
            if got != want:
                raise SlrpipeError(f"{path}: column {column} (class {column - first - 1}) is headed {got!r}, "
                                   f"expected gloss {want!r}; the classes must be in the order of our glosses")
        if len(names) != len(glosses):
            raise SlrpipeError(f"{path} has {len(names)} score columns, our model has {len(glosses)} classes")
    sample_ids: list[str] = []
    scores = np.empty((len(rows) - 1, len(names)), dtype=np.float64)
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SlrpipeError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
        sample_id = row[0]
        if not sample_id:
            raise SlrpipeError(f"{path} line {line}: empty sample id")
        if sample_id in seen:
            raise SlrpipeError(f"{path} line {line}: sample id {sample_id!r} repeats line {seen[sample_id]}")
        seen[sample_id] = line
        try:
            scores[line - 2] = [float(cell) for cell in row[first:]]
        except ValueError:
            bad = next(c for c, cell in enumerate(row[first:]) if not _is_float(cell))
            raise SlrpipeError(f"{path} line {line}: score {row[first + bad]!r} of {names[bad]!r} is not a number") from None
        sample_ids.append(sample_id)
    return sample_ids, scores


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))  # shift by the max: no overflow
    return shifted / shifted.sum(axis=1, keepdims=True)


def _unique_ids(ids: Sequence[str], whose: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, sample_id in enumerate(ids):
        if sample_id in index:
            raise SlrpipeError(f"{whose} scores list sample id {sample_id!r} twice")
        index[sample_id] = i
    return index


# Probabilities written with a few decimals, over many classes, sum to 1 only approximately.
PROBABILITY_SUM_TOLERANCE = 0.01


def _probability_rows(scores: np.ndarray) -> np.ndarray:
    """(N,) bool: the row is non-negative and sums to 1."""
    return (scores >= 0).all(axis=1) & (np.abs(scores.sum(axis=1) - 1) <= PROBABILITY_SUM_TOLERANCE)


def _require_probabilities(scores: np.ndarray, ids: Sequence[str], whose: str, hint: str) -> None:
    bad = np.flatnonzero(~_probability_rows(scores))
    if len(bad):
        i = bad[0]
        raise SlrpipeError(f"{whose} scores of sample {ids[i]!r} are not probabilities (they sum to {scores[i].sum():.4g}"
                           f"{', some are negative' if (scores[i] < 0).any() else ''}){hint}")


def fuse(
    sample_ids: Sequence[str],
    probabilities: np.ndarray,
    other_ids: Sequence[str],
    other_scores: np.ndarray,
    normalize: str = "softmax",
) -> np.ndarray:
    """Late fusion "(+R)": our class probabilities plus the other model's, matched by sample id;
    rows in our order (module docstring).

    normalize="softmax" (default) turns the other model's logits into probabilities; "none"
    takes them as probabilities already. Ours are never renormalized. Both must cover exactly
    the same sample ids and the same number of classes.
    """
    if normalize not in ("softmax", "none"):
        raise SlrpipeError(f"normalize must be 'softmax' or 'none', got {normalize!r}")
    scores, other_scores = np.asarray(probabilities, dtype=np.float64), np.asarray(other_scores, dtype=np.float64)
    for ids, values, whose in ((sample_ids, scores, "our"), (other_ids, other_scores, "the other model's")):
        if values.ndim != 2 or len(values) != len(ids):
            raise SlrpipeError(f"{whose} scores of shape {values.shape} do not fit {len(ids)} sample ids")
    if scores.shape[1] != other_scores.shape[1]:
        raise SlrpipeError(f"our model scores {scores.shape[1]} classes, the other model {other_scores.shape[1]}")
    ours = _unique_ids(sample_ids, "our")
    theirs = _unique_ids(other_ids, "the other model's")
    missing = [sample_id for sample_id in sample_ids if sample_id not in theirs]
    if missing:
        raise SlrpipeError(f"the other model's scores lack {len(missing)} of our sample ids, the first is {missing[0]!r}")
    extra = [sample_id for sample_id in other_ids if sample_id not in ours]
    if extra:
        raise SlrpipeError(f"the other model's scores have {len(extra)} sample ids that we do not, "
                           f"the first is {extra[0]!r}")
    _require_probabilities(scores, sample_ids, "our", ": fusion adds the model's softmax output, as in scores.csv")
    other_scores = other_scores[[theirs[sample_id] for sample_id in sample_ids]]
    if normalize == "softmax":
        if len(other_scores) and _probability_rows(other_scores).all():
            raise SlrpipeError("the other model's scores are probabilities already (every row sums to 1): a softmax would "
                               "flatten them; set evaluate.fusion_normalize: none")
        other_scores = _softmax(other_scores)
    else:
        _require_probabilities(other_scores, sample_ids, "the other model's",
                               "; set evaluate.fusion_normalize: softmax if they are logits")
    return scores + other_scores
