"""Per-frame spatial graph convolution over one body part, with graphs taken from slrpipe.pose.joints.

Inside the GCN, features are laid out node-major, (V, N, C) for V nodes of N graphs (every
frame of every sample, and of both hands, at once): the per-node linear layer is then one
matrix product over (V * N, C) and the adjacency product one over (V, N * C), with no
permute or copy between them. The (N, V, C) layout needed a copy around each adjacency
product, and the per-part pooling filled a full-size gradient once per part; together
they were most of a CPU pretraining step (bench/RESULTS.md, "Pretraining step on CPU").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from slrpipe.model.dropout import Dropout


@dataclass(frozen=True)
class Graph:
    """A graph the GCN runs on; `symmetric_edges` and `centre` are used by the ST-GCN-style
    blocks only (partitioned_adjacency)."""

    nodes: int
    edges: tuple[tuple[int, int], ...]
    symmetric_edges: tuple[tuple[int, int], ...] = ()
    centre: int = 0


def normalized_adjacency(nodes: int, edges: Sequence[tuple[int, int]]) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 of an undirected graph."""
    adjacency = torch.eye(nodes, device="cpu")  # graph data, also when modules are built on the meta device
    for a, b in edges:
        adjacency[a, b] = adjacency[b, a] = 1.0
    degree = adjacency.sum(1).rsqrt()
    return degree[:, None] * adjacency * degree[None, :]


def hop_distances(graph: Graph) -> list[int]:
    """Hops from the centre over the graph's edges (not its symmetric ones)."""
    neighbours: dict[int, set[int]] = {v: set() for v in range(graph.nodes)}
    for a, b in graph.edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    distance, frontier = {graph.centre: 0}, [graph.centre]
    while frontier:
        reached = []
        for v in frontier:
            for w in neighbours[v] - distance.keys():
                distance[w] = distance[v] + 1
                reached.append(w)
        frontier = reached
    if len(distance) != graph.nodes:
        raise ValueError(f"the graph does not connect joints {sorted(set(range(graph.nodes)) - set(distance))} to its centre")
    return [distance[v] for v in range(graph.nodes)]


def partitioned_adjacency(graph: Graph) -> torch.Tensor:
    """The ST-GCN spatial partition of D^-1/2 (A + I) D^-1/2 over all edges, symmetric ones
    included: (K, V, V) kernels, root (self-loops), closer (the neighbour is nearer the
    centre), further, and symmetric (as far from the centre); empty kernels are left out.
    They sum to the normalized adjacency."""
    full = normalized_adjacency(graph.nodes, graph.edges + graph.symmetric_edges)
    hops = torch.tensor(hop_distances(graph), device="cpu")
    receiver, sender = hops[:, None], hops[None, :]
    eye = torch.eye(graph.nodes, dtype=torch.bool, device="cpu")
    masks = (eye, ~eye & (sender < receiver), ~eye & (sender > receiver), ~eye & (sender == receiver))
    kernels = [full * mask for mask in masks]
    return torch.stack([kernel for kernel in kernels if kernel.any()])


class GraphConv(nn.Module):
    """x -> ReLU(BatchNorm(A_hat x W)) on node-major (V, N, C) features."""

    def __init__(self, adjacency: torch.Tensor, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.linear = nn.Linear(in_channels, out_channels)
        # BatchNorm over all nodes of the batch, as in ST-GCN-style encoders. (LayerNorm over a
        # node's channels was tried: right after the 2 -> C input layer it keeps only the
        # direction of W p + b, and the encoder learned far more slowly.)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes, graphs, channels = x.shape
        if channels < self.linear.out_features:
            # The adjacency product on the narrower side: A (x W^T + b) = (A x) W^T + (A 1) b^T.
            mixed = (self.adjacency @ x.reshape(nodes, -1)).view(nodes * graphs, channels) @ self.linear.weight.t()
            # Not in place: an in-place add on a view costs two full-size copies of the gradient in backward.
            # In the product's dtype: adding float32 to bfloat16 (autocast) is many times slower.
            node_bias = (self.adjacency.sum(1)[:, None, None] * self.linear.bias).to(mixed.dtype)
            mixed = (mixed.view(nodes, graphs, -1) + node_bias).view(nodes * graphs, -1)
        else:
            projected = self.linear(x)  # (V, N, C)
            mixed = (self.adjacency @ projected.view(nodes, -1)).view(nodes * graphs, -1)
        # In place: BatchNorm's backward needs its input, not its output.
        return torch.relu_(self.norm(mixed)).view(nodes, graphs, -1)


class _GroupMax(torch.autograd.Function):
    """Max over groups of rows of node-major (V, N, C) features -> (G, N, C); the gradient goes
    to the first member that holds the maximum (as torch.max does).

    The maxima are a chain of elementwise maximums over contiguous (N, C) slices. Which member
    won is only worked out in backward, by comparing each member with the maximum: tracking the
    winner in forward cost about 20x the maximum itself, and the key encoders, which run without
    gradients, never need it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: tuple[tuple[int, ...], ...]) -> torch.Tensor:  # type: ignore[override]
        maxima = torch.empty((len(groups), *x.shape[1:]), dtype=x.dtype, device=x.device)
        for g, members in enumerate(groups):
            maxima[g].copy_(x[members[0]])
            for joint in members[1:]:
                torch.maximum(maxima[g], x[joint], out=maxima[g])
        ctx.groups = groups
        ctx.save_for_backward(x, maxima)
        return maxima

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, maxima = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        for g, members in enumerate(ctx.groups):
            unclaimed = None  # where no earlier member held the maximum
            for joint in members:
                holds = x[joint] == maxima[g]
                won = holds if unclaimed is None else holds & unclaimed
                if joint != members[-1]:
                    unclaimed = ~holds if unclaimed is None else unclaimed & ~holds
                grad_x[joint] += torch.where(won, grad[g], 0)
        return grad_x, None


def group_max(x: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Max over each group of rows of (V, N, C) -> (G, N, C); see _GroupMax."""
    return _GroupMax.apply(x, tuple(tuple(members) for members in groups))


class PartPool(nn.Module):
    """Max over each part's joints: (V, N, C) -> (P, N, C). Ties send the gradient to the
    part's first member holding the maximum (after a ReLU, the only ties that carry a gradient
    are exact equalities of positive values; under bfloat16 they happen)."""

    def __init__(self, parts: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.parts = tuple(tuple(members) for members in parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_max(x, self.parts)


class STGCNBlock(nn.Module):
    """The authors' ST-GCN-style block on node-major (V, N, C) features (METHOD.md section 9):
    sum_k A_k x W_k -> BN -> ReLU -> Dropout -> 1x1 -> BN, plus the residual, -> ReLU. The
    residual is the input when the widths agree, else a 1x1 + BN; none in a stack's first block."""

    def __init__(self, kernels: torch.Tensor, in_channels: int, out_channels: int, dropout: float, residual: bool) -> None:
        super().__init__()
        self.register_buffer("kernels", kernels, persistent=False)
        self.out_channels = out_channels
        self.linear = nn.Linear(in_channels, len(kernels) * out_channels)  # one 1x1 per kernel, as ST-GCN's conv
        self.norm = nn.BatchNorm1d(out_channels)
        self.dropout = Dropout(dropout)
        self.pointwise = nn.Linear(out_channels, out_channels)
        self.pointwise_norm = nn.BatchNorm1d(out_channels)
        self.residual = None
        if residual and in_channels != out_channels:
            self.residual = nn.Sequential(nn.Linear(in_channels, out_channels), nn.BatchNorm1d(out_channels))
        self.identity = residual and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes, graphs, channels = x.shape
        count = len(self.kernels)
        # Each kernel's product on the input side, then one product per kernel with its weights.
        mixed = (self.kernels.view(count * nodes, nodes) @ x.reshape(nodes, -1)).view(count, nodes * graphs, channels)
        weights = self.linear.weight.view(count, self.out_channels, channels)
        y = mixed[0] @ weights[0].t()
        for k in range(1, count):
            y = torch.addmm(y, mixed[k], weights[k].t())
        node_bias = self.kernels.sum(2).t() @ self.linear.bias.view(count, -1)  # sum_k (A_k 1) b_k^T: (V, C)
        y = (y.view(nodes, graphs, -1) + node_bias[:, None].to(y.dtype)).view(nodes * graphs, -1)  # not in place: see GraphConv
        y = self.pointwise_norm(self.pointwise(self.dropout(torch.relu_(self.norm(y)))))
        if self.identity:
            y = y + x.reshape(nodes * graphs, channels)
        elif self.residual is not None:
            y = y + self.residual(x.reshape(nodes * graphs, channels))
        return torch.relu_(y).view(nodes, graphs, -1)


class PartGCN(nn.Module):
    """Joints -> GCN -> max-pool each part -> GCN on the part graph -> max over parts.

    (N, V, 2) coordinates of one part in one frame -> (N, out) feature. `block` "plain" is one
    graph convolution per layer (ours); "stgcn" the authors' form: an input BatchNorm over the
    joints' coordinates, STGCNBlocks, and after the part pooling a 1x1 + BN + ReLU + Dropout 0.25.
    """

    def __init__(
        self,
        joint_graph: Graph,
        part_graph: Graph,
        parts: Sequence[Sequence[int]],
        joint_channels: Sequence[int],
        part_channels: Sequence[int],
        block: str = "plain",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pool = PartPool(parts)
        joint_widths, part_widths = [2, *joint_channels], [joint_channels[-1], *part_channels]
        self.input_norm = self.pool_projection = None
        if block == "plain":
            joint_adjacency = normalized_adjacency(joint_graph.nodes, joint_graph.edges)
            part_adjacency = normalized_adjacency(part_graph.nodes, part_graph.edges)
            self.joint_layers = nn.Sequential(*(GraphConv(joint_adjacency, a, b) for a, b in zip(joint_widths, joint_widths[1:])))
            self.part_layers = nn.Sequential(*(GraphConv(part_adjacency, a, b) for a, b in zip(part_widths, part_widths[1:])))
            return
        if block != "stgcn":
            raise ValueError(f"unknown GCN block {block!r}")
        joint_kernels, part_kernels = partitioned_adjacency(joint_graph), partitioned_adjacency(part_graph)
        self.input_norm = nn.BatchNorm1d(joint_graph.nodes * 2)
        self.joint_layers = nn.Sequential(*(STGCNBlock(joint_kernels, a, b, dropout, residual=i > 0)
                                            for i, (a, b) in enumerate(zip(joint_widths, joint_widths[1:]))))
        width = joint_channels[-1]
        self.pool_projection = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                                             Dropout(0.25))
        self.part_layers = nn.Sequential(*(STGCNBlock(part_kernels, a, b, dropout, residual=True)
                                           for a, b in zip(part_widths, part_widths[1:])))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            coords = self.input_norm(coords.flatten(1)).view_as(coords)
        features = self.joint_layers(coords.transpose(0, 1).contiguous())  # (V, N, C)
        pooled = self.pool(features)  # (P, N, C)
        if self.pool_projection is not None:
            pooled = self.pool_projection(pooled.flatten(0, 1)).view_as(pooled)
        parts = self.part_layers(pooled)
        return group_max(parts, [range(len(parts))])[0]
