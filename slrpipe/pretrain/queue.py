"""A FIFO memory bank of L2-normalized keys (MoCo's queue), one small class for every bank."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class KeyQueue(nn.Module):
    """`size` keys of dimension `dim`; the oldest are overwritten first.

    Keys and the write position are buffers, so they are saved in checkpoints and moved
    with the model; they never receive gradients.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write a batch of keys after the newest, wrapping around the end."""
        keys = keys.detach()
        count = keys.shape[0]
        if count > self.size:  # only the newest `size` keys can be kept
            keys, count = keys[-self.size :], self.size
        # The write position stays on the device: reading it (int(self.pointer)) would make the
        # CPU wait for the GPU once per bank per step.
        positions = (torch.arange(count, device=self.keys.device) + self.pointer) % self.size
        self.keys.index_copy_(0, positions, F.normalize(keys.to(self.keys.dtype), dim=1))
        self.pointer.copy_((self.pointer + count) % self.size)
