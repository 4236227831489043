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
from slrpipe.config import ModelSize
from slrpipe.model.gcn import PartGCN

MAX_FRAMES = 512  # learned positional embeddings cover sequences up to this length


class TemporalBlock(nn.Module):
    """Residual 1-D convolution over time on (B, T, C) features."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.conv(x.transpose(1, 2)).transpose(1, 2)))


class TimeTransformer(nn.Module):
    """Temporal convolutions, learned positions and a Transformer over frame tokens."""

    def __init__(self, width: int, layers: int, heads: int, ff: int, dropout: float, blocks: int, kernel: int) -> None:
        super().__init__()
        self.temporal = nn.Sequential(*(TemporalBlock(width, kernel) for _ in range(blocks)))
        self.position = nn.Parameter(torch.zeros(1, MAX_FRAMES, width))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, ff, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.temporal(tokens) + self.position[:, : tokens.shape[1]]
        return self.transformer(x, src_key_padding_mask=~valid)


class AttentionPool(nn.Module):
    """Softmax over a learned per-token score, masked tokens excluded: (B, N, C) -> (B, C)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = self.score(tokens).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("bn,bnc->bc", weights, tokens)


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
        hand, trunk = "hand" in self.parts, "trunk" in self.parts
        # Created in this order (GCNs, Transformers, pools) so that a seed still gives the two-part
        # encoder the initial weights, and so the results, it had before parts could be left out.
        if hand:
            self.hand_gcn = PartGCN(joints.NUM_HAND, joints.HAND_EDGES, joints.HAND_PARTS, joints.HAND_PART_EDGES,
                                    size.joint_channels, size.part_channels)
        if trunk:
            self.trunk_gcn = PartGCN(joints.NUM_TRUNK, joints.TRUNK_EDGES, joints.TRUNK_PARTS, joints.TRUNK_PART_EDGES,
                                     size.joint_channels, size.part_channels)
        if hand:
            self.hand_time = TimeTransformer(2 * width, size.hand_layers, size.hand_heads, size.hand_ff, size.dropout,
                                             size.temporal_blocks, size.temporal_kernel)
        if trunk:
            self.trunk_time = TimeTransformer(width, size.trunk_layers, size.trunk_heads, size.trunk_ff, size.dropout,
                                              size.temporal_blocks, size.temporal_kernel)
        if hand:
            self.hand_pool = AttentionPool(width)
        if trunk:
            self.trunk_pool = AttentionPool(width)

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
