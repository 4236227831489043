"""Cosine k-nearest-neighbour classification of embeddings: the pretraining monitor."""

from __future__ import annotations

import torch
from torch.nn import functional as F


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
