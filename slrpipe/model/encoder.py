"""One modality's sign encoder: spatial GCNs per frame, temporal convolutions, Transformers
over time and masked attention pooling (METHOD.md section 5).

Input: per part, coordinates (B, T, V, 2) and joint masks (B, T, V) as the loader gives
them ("right_hand", "left_hand", "trunk"). Output: {"hand": f_hand, "trunk": f_trunk}, (B, width)
each, for the parts the encoder was built with; the sequence feature is their sum.
"""

from __future__ import annotations

import torch
from torch import nn

from slrpipe.pose import joints
from slrpipe.config import EncoderForm, ModelSize
from slrpipe.model.gcn import Graph, PartGCN
from slrpipe.model.transformer import TransformerLayer, TransformerStack

MAX_FRAMES = 512  # learned positional embeddings cover sequences up to this length


class TemporalBlock(nn.Module):
    """Residual 1-D convolution over time on (B, T, C) features."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.conv(x.transpose(1, 2)).transpose(1, 2)))


class MultiScaleBlock(nn.Module):
    """The authors' temporal block on (B, T, C): [conv k5 || conv k3 -> conv k3] -> 1x1 -> BN ->
    ReLU, not residual (METHOD.md section 9)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.wide = nn.Conv1d(channels, channels, 5, padding=2)
        self.narrow = nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1), nn.Conv1d(channels, channels, 3, padding=1))
        self.merge = nn.Conv1d(2 * channels, channels, 1)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        return torch.relu(self.norm(self.merge(torch.cat([self.wide(y), self.narrow(y)], dim=1)))).transpose(1, 2)


class StreamShared(nn.Module):
    """Runs blocks on each of `streams` equal channel groups of (B, T, streams * C) tokens with
    the same weights: the authors' temporal blocks see one hand at a time, shared by the hands."""

    def __init__(self, blocks: nn.Module, streams: int) -> None:
        super().__init__()
        self.blocks, self.streams = blocks, streams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, channels = x.shape
        per_stream = x.view(batch, frames, self.streams, -1).transpose(1, 2).reshape(batch * self.streams, frames, -1)
        out = self.blocks(per_stream)
        return out.view(batch, self.streams, frames, -1).transpose(1, 2).reshape(batch, frames, channels)


class TimeTransformer(nn.Module):
    """Temporal convolutions and a Transformer over frame tokens of `streams` concatenated
    streams (the two hands, or the trunk alone).

    Paper form (ours where the paper gives only widths): residual temporal blocks over all
    channels, learned positions, pre-norm ReLU Transformer blocks. The authors' forms:
    temporal_block multiscale (MultiScaleBlock per stream, shared), transformer post_norm
    (an input LayerNorm, post-norm GELU blocks, no positional encoding)."""

    def __init__(self, width: int, layers: int, heads: int, ff: int, dropout: float, blocks: int, kernel: int,
                 form: EncoderForm = EncoderForm(), streams: int = 1) -> None:
        super().__init__()
        if form.temporal_block == "residual":
            self.temporal = nn.Sequential(*(TemporalBlock(width, kernel) for _ in range(blocks)))
        else:
            self.temporal = StreamShared(nn.Sequential(*(MultiScaleBlock(width // streams) for _ in range(blocks))), streams)
        self.position = self.input_norm = None
        if form.transformer == "pre_norm":
            self.position = nn.Parameter(torch.zeros(1, MAX_FRAMES, width))
            nn.init.trunc_normal_(self.position, std=0.02)
            layer = TransformerLayer(width, heads, ff, dropout, activation="relu", norm_first=True)
        else:
            self.input_norm = nn.LayerNorm(width)
            layer = TransformerLayer(width, heads, ff, dropout, activation="gelu", norm_first=False)
        self.transformer = TransformerStack(layer, layers)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.temporal(tokens)
        x = x + self.position[:, : tokens.shape[1]] if self.position is not None else self.input_norm(x)
        return self.transformer(x, valid)


class AttentionPool(nn.Module):
    """Softmax over a learned per-token score, masked tokens excluded: (B, N, C) -> (B, C)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = self.score(tokens).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("bn,bnc->bc", weights, tokens)


def initialise(module: nn.Module, init: str) -> None:
    """`xavier` (the authors' code): xavier_uniform_ on every parameter of two or more
    dimensions; `torch` keeps PyTorch's default initialisation."""
    if init == "xavier":
        for parameter in module.parameters():
            if parameter.dim() >= 2:
                nn.init.xavier_uniform_(parameter)


def _usable(valid: torch.Tensor) -> torch.Tensor:
    """A sample with no valid token at all attends to every token instead of to none (NaN)."""
    return valid | ~valid.any(dim=1, keepdim=True)


PARTS = ("hand", "trunk")


BRANCHES = ("joint", "motion")  # the two modalities, each with its own encoder


def branches_of(setting: str) -> tuple[str, ...]:
    """The branches an ablation setting (`both`, `joint` or `motion`) uses."""
    return BRANCHES if setting == "both" else (setting,)


def parts_of(setting: str) -> tuple[str, ...]:
    """The parts an ablation setting (`both`, `hand` or `trunk`) uses."""
    return PARTS if setting == "both" else (setting,)


def part_of(key: str) -> str:
    """The part ("hand" or "trunk") a SignEncoder state-dict key belongs to: every submodule's
    name starts with its part."""
    return key.split("_", 1)[0]


class SignEncoder(nn.Module):
    """Builds only the parts it is given: a part without a use would hold parameters that never
    get a gradient, which DistributedDataParallel refuses."""

    def __init__(self, size: ModelSize, parts: tuple[str, ...] = PARTS) -> None:
        super().__init__()
        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            raise ValueError(f"parts must be a non-empty subset of {PARTS}, not {parts}")
        self.parts = tuple(part for part in PARTS if part in parts)
        width = size.width
        self.width = width
        form = size.form
        hand, trunk = "hand" in self.parts, "trunk" in self.parts
        hand_parts = joints.HAND_PART_LAYOUTS[form.hand_parts]
        # Created in this order (GCNs, Transformers, pools) so that a seed still gives the two-part
        # encoder the initial weights, and so the results, it had before parts could be left out.
        if hand:
            self.hand_gcn = PartGCN(Graph(joints.NUM_HAND, joints.HAND_EDGES, joints.HAND_SYMMETRIC_EDGES, joints.HAND_CENTRE),
                                    Graph(len(hand_parts), joints.HAND_PART_EDGES, joints.HAND_PART_SYMMETRIC_EDGES,
                                          joints.HAND_PART_CENTRE),
                                    hand_parts, size.joint_channels, size.part_channels, form.gcn_block, size.dropout)
        if trunk:
            self.trunk_gcn = PartGCN(Graph(joints.NUM_TRUNK, joints.TRUNK_EDGES, joints.TRUNK_SYMMETRIC_EDGES, joints.TRUNK_CENTRE),
                                     Graph(len(joints.TRUNK_PARTS), joints.TRUNK_PART_EDGES, joints.TRUNK_PART_SYMMETRIC_EDGES,
                                           joints.TRUNK_PART_CENTRE),
                                     joints.TRUNK_PARTS, size.joint_channels, size.part_channels, form.gcn_block, size.dropout)
        if hand:
            self.hand_time = TimeTransformer(2 * width, size.hand_layers, size.hand_heads, size.hand_ff, size.dropout,
                                             size.temporal_blocks, size.temporal_kernel, form, streams=2)
        if trunk:
            self.trunk_time = TimeTransformer(width, size.trunk_layers, size.trunk_heads, size.trunk_ff, size.dropout,
                                              size.temporal_blocks, size.temporal_kernel, form)
        if hand:
            self.hand_pool = AttentionPool(width)
        if trunk:
            self.trunk_pool = AttentionPool(width)
        initialise(self, form.init)

    def forward(self, coords: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = {}
        if "hand" in self.parts:
            features["hand"] = self._hand(coords, masks)
        if "trunk" in self.parts:
            features["trunk"] = self._trunk(coords, masks)
        return features

    def _hand(self, coords: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        right, left = coords["right_hand"], coords["left_hand"]
        batch, frames = right.shape[:2]
        # One GCN for both hands: run them as one batch of graphs.
        hands = self.hand_gcn(torch.stack([right, left], dim=2).flatten(0, 2)).view(batch, frames, 2 * self.width)
        hand_found = torch.stack([masks["right_hand"].any(-1), masks["left_hand"].any(-1)], dim=2)  # (B, T, 2)
        frame_has_hand = _usable(hand_found.any(-1))
        hands = self.hand_time(hands, frame_has_hand)
        # Right and left halves of each hand token are pooled together, each hand masked on its own.
        hand_tokens = hands.view(batch, frames, 2, self.width).flatten(1, 2)
        return self.hand_pool(hand_tokens, _usable(hand_found.flatten(1, 2)))

    def _trunk(self, coords: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        trunk = coords["trunk"]
        batch, frames = trunk.shape[:2]
        trunk_tokens = self.trunk_gcn(trunk.flatten(0, 1)).view(batch, frames, self.width)
        trunk_found = _usable(masks["trunk"].any(-1))
        return self.trunk_pool(self.trunk_time(trunk_tokens, trunk_found), trunk_found)
