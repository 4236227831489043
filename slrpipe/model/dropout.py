"""Dropout whose random numbers are cheap on the CPU.

PyTorch's CPU dropout draws one Bernoulli number per element, which was about 12 % of a CPU
pretraining step (bench/RESULTS.md, "Pretraining step on CPU"). Here one 64-bit draw gives four
elements 16 random bits each, and an element is kept when its bits clear a threshold: the drop
probability is p rounded to a multiple of 1/65536 (0.1 -> 0.100006). On a GPU, PyTorch's fused
dropout is already cheap and is used as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_LEVELS = 1 << 16  # 16 random bits per element


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # every 64-bit value
    bits = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform over [-32768, 32767]
    keep = bits >= round(p * _LEVELS) - _LEVELS // 2
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


class Dropout(nn.Module):
    """nn.Dropout with the cheap CPU random numbers above (no parameters, so state dicts match)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], not {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
