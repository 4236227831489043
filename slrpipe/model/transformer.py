"""A Transformer encoder over frame tokens, parameter for parameter nn.TransformerEncoder with
batch-first nn.TransformerEncoderLayers: the same state-dict keys, and from the same seed the
same initial weights, so checkpoints load either way.

Why not nn.TransformerEncoder itself: in training, nn.MultiheadAttention projects batch-first
tokens through a transposed view, which matmul runs as a batched product against a copy of
the projection weights for every sample, and its dropout draws one Bernoulli number per
element; together about 20 % of a CPU pretraining step (bench/RESULTS.md). Here the projection
is one matrix product over all tokens and dropout is slrpipe.model.dropout's.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from slrpipe.model.dropout import Dropout, dropout


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask, holding nn.MultiheadAttention's
    parameters (in_proj_weight, in_proj_bias, out_proj), initialised as it does them."""

    def __init__(self, width: int, heads: int, dropout_p: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads, self.dropout_p = heads, dropout_p
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        # nn.MultiheadAttention's order of random draws: out_proj (above), then in_proj.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), valid (B, T): attention only to valid keys."""
        batch, frames, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(batch, frames, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        key_valid = valid[:, None, None, :]  # (B, 1, 1, T)
        if self.training and self.dropout_p > 0:
            scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
            weights = torch.softmax(scores.masked_fill(~key_valid, float("-inf")), dim=-1)
            attended = dropout(weights, self.dropout_p) @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, width))


class TransformerLayer(nn.Module):
    """nn.TransformerEncoderLayer(width, heads, ff, dropout, activation, batch_first=True,
    norm_first): pre-norm (norm_first) or post-norm, same submodules in the same order."""

    def __init__(self, width: int, heads: int, ff: int, dropout_p: float, activation: str, norm_first: bool) -> None:
        super().__init__()
        self.self_attn = SelfAttention(width, heads, dropout_p)
        self.linear1 = nn.Linear(width, ff)
        self.dropout = Dropout(dropout_p)
        self.linear2 = nn.Linear(ff, width)
        self.norm_first = norm_first
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout1, self.dropout2 = Dropout(dropout_p), Dropout(dropout_p)
        self.activation = {"relu": F.relu, "gelu": F.gelu}[activation]

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout1(self.self_attn(self.norm1(x), valid))
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self.dropout1(self.self_attn(x, valid)))
        return self.norm2(x + self._feed_forward(x))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerStack(nn.Module):
    """`count` copies of one layer. Copies, as nn.TransformerEncoder makes them: every layer
    starts from the same weights, which a seed's initial model depends on."""

    def __init__(self, layer: TransformerLayer, count: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(count))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, valid)
        return x
