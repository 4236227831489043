"""The measures a training run validates with: top-k accuracy by the true class's rank (fine-tuning)
and cosine k-nearest-neighbour classification of embeddings (the pretraining monitor). The
evaluate stage's metrics build on the same ranks (slrpipe.evaluation.metrics, whose docstring
gives the tie rule: a tie never counts in the true class's favour)."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from slrpipe.errors import SlrpipeError


def knn_predict(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, k: int, classes: int,
                temperature: float = 0.07) -> torch.Tensor:
    """Class of each test embedding by similarity-weighted votes of its k most similar training embeddings."""
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    k = min(k, train.shape[0])
    top_similarity, top_index = similarity.topk(k, dim=1)
    votes = torch.zeros(test.shape[0], classes, device=test.device)
    votes.scatter_add_(1, train_labels[top_index], (top_similarity / temperature).exp())
    return votes.argmax(dim=1)


def knn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 k: int, classes: int) -> float:
    predicted = knn_predict(train, train_labels, test, k, classes)
    return (predicted == test_labels).float().mean().item()


def check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise SlrpipeError(f"scores must be a (samples, classes) array, got shape {scores.shape}")
    if labels.ndim != 1 or len(labels) != len(scores):
        raise SlrpipeError(f"labels must be one per sample: {labels.shape} labels for {len(scores)} score rows")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        raise SlrpipeError(f"labels must be integer class indices, got {labels.dtype}")
    classes = scores.shape[1]
    outside = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(outside):
        i = outside[0]
        raise SlrpipeError(f"label {labels[i]} of sample {i} is outside the model's {classes} classes (0-{classes - 1})")
    nan_rows = np.flatnonzero(np.isnan(scores).any(axis=1)) if np.issubdtype(scores.dtype, np.floating) else []
    if len(nan_rows):
        raise SlrpipeError(f"scores of sample {nan_rows[0]} are NaN ({len(nan_rows)} samples have NaN scores)")
    return scores, labels.astype(np.int64)


def check_k(k: int, classes: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SlrpipeError(f"top-k accuracy needs an integer k >= 1, got {k!r}")
    if k > classes:
        raise SlrpipeError(f"top-{k} accuracy needs at least {k} classes, the model has {classes}")


def true_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) 0-based rank of each sample's true class, ties broken by class index (module docstring)."""
    scores, labels = check_scores(scores, labels)
    true = scores[np.arange(len(labels)), labels][:, None]
    before = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > true).sum(axis=1) + ((scores == true) & before).sum(axis=1)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the true class is among the k highest scores (rank < k)."""
    rank = true_rank(scores, labels)
    check_k(k, np.shape(scores)[1])
    return rank < k


def mean_per_class(correct: np.ndarray, labels: np.ndarray) -> float:
    counts = np.bincount(labels)
    present = counts > 0  # absent classes would be 0/0: they are left out, not counted as 0
    hits = np.bincount(labels, weights=correct, minlength=len(counts))
    return float(np.mean(hits[present] / counts[present]))


def require_samples(labels: np.ndarray, what: str = "the test set") -> None:
    if len(labels) == 0:
        raise SlrpipeError(f"no samples to evaluate in {what}")


def per_instance_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """P-I top-k: the fraction of samples that are top-k correct."""
    correct = topk_correct(scores, labels, k)
    require_samples(correct)
    return float(correct.mean())


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """P-C top-k: the mean of the per-class top-k accuracies over the classes present in `labels`."""
    correct = topk_correct(scores, labels, k)
    require_samples(correct)
    return mean_per_class(correct, np.asarray(labels, dtype=np.int64))
