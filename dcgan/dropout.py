"""Dropout whose CPU mask is cheap to draw: torch's CPU dropout draws one Bernoulli number per element, the largest
single cost of this GAN's training step on a CPU (docs/benchmarks.md, "Dropout"); here each random 64-bit integer
gives 8 mask bytes."""

import torch
from torch import nn


class ByteDropout(nn.Dropout):
    """nn.Dropout whose mask, on a CPU, drops an element when its random byte is below round(256 p): p is rounded to
    a multiple of 1/256 (0.3 -> 77/256 = 0.301), and the kept elements are scaled by 256 / (256 - 77) as usual. On
    GPUs, whose dropout is already fast, it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        if not self.training or self.p == 0 or x.device.type != "cpu" or not dense:
            return super().forward(x)
        cut = round(256 * self.p)
        # The full int64 range (random_() alone would leave every 8th byte's top bit 0).
        words = torch.empty((x.numel() + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        # In place, so that the mask stays uint8 0/1: on a CPU a comparison that returns bool, and a bool -> bf16
        # conversion, are not vectorised (docs/benchmarks.md).
        keep = words.view(torch.uint8)[: x.numel()].ge_(cut)
        scale = keep.to(x.dtype).mul_(256 / (256 - cut)).as_strided(x.size(), x.stride())  # x's memory layout
        return x * scale
