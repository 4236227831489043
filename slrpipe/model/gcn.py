"""Per-frame spatial graph convolution over one body part, with graphs taken from slrpipe.pose.joints."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def normalized_adjacency(nodes: int, edges: Sequence[tuple[int, int]]) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 of an undirected graph."""
    adjacency = torch.eye(nodes)
    for a, b in edges:
        adjacency[a, b] = adjacency[b, a] = 1.0
    degree = adjacency.sum(1).rsqrt()
    return degree[:, None] * adjacency * degree[None, :]


class GraphConv(nn.Module):
    """x -> ReLU(BatchNorm(A_hat x W)) on (..., V, C) features."""

    def __init__(self, adjacency: torch.Tensor, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.linear = nn.Linear(in_channels, out_channels)
        # BatchNorm over all nodes of the batch, as in ST-GCN-style encoders. (LayerNorm over a
        # node's channels was tried: right after the 2 -> C input layer it keeps only the
        # direction of W p + b, and the encoder learned far more slowly.)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("uv,...vc->...uc", self.adjacency, self.linear(x))
        return torch.relu(self.norm(mixed.flatten(0, -2)).view_as(mixed))


class PartGCN(nn.Module):
    """Joints -> GCN -> max-pool each part -> GCN on the part graph -> max over parts.

    (N, V, 2) coordinates of one part in one frame -> (N, out) feature.
    """

    def __init__(
        self,
        joints: int,
        edges: Sequence[tuple[int, int]],
        parts: Sequence[Sequence[int]],
        part_edges: Sequence[tuple[int, int]],
        joint_channels: Sequence[int],
        part_channels: Sequence[int],
    ) -> None:
        super().__init__()
        joint_adjacency = normalized_adjacency(joints, edges)
        part_adjacency = normalized_adjacency(len(parts), part_edges)
        widths = [2, *joint_channels]
        self.joint_layers = nn.Sequential(*(GraphConv(joint_adjacency, a, b) for a, b in zip(widths, widths[1:])))
        widths = [joint_channels[-1], *part_channels]
        self.part_layers = nn.Sequential(*(GraphConv(part_adjacency, a, b) for a, b in zip(widths, widths[1:])))
        self.parts = [list(members) for members in parts]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        features = self.joint_layers(coords)  # (N, V, C)
        pooled = torch.stack([features[:, members].amax(dim=1) for members in self.parts], dim=1)  # (N, P, C)
        return self.part_layers(pooled).amax(dim=1)
