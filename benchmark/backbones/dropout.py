"""Dropout on the CPU with its masks drawn by NumPy's PCG64, and the attention that uses it.

On a CPU at the quick track's width the arithmetic of a step is small, and PyTorch's per-element
Bernoulli draws (its CPU generator is MT19937) cost more than all the step's matrix products: 20 % of
a quick epoch (docs/ranking.md, "Where a quick run's step goes"). PCG64 fills the same mask about four
times faster. Only the random draws differ: each layer keeps an element with probability 1 - p and
scales it by 1 / (1 - p), as ``F.dropout`` does. On a GPU, and outside training, nothing changes.

Every mask's generator is seeded from PyTorch's CPU generator (one 63-bit draw), so a run stays a pure
function of ``torch.manual_seed``: the same seed gives the same masks, run after run.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of ``shape``: 1 / (1 - p) where an element is kept (probability 1 - p), else 0.

    Element i is kept where ``Generator(PCG64(seed)).random(n, dtype=float32)[i] >= p``. That draw is
    ``(u_i >> 8) * 2**-24`` of the generator's i-th 32-bit output u_i (the low half of each 64-bit
    output, then its high half), so the same test reads u_i >= 256 * ceil(float32(p) * 2**24) off the
    raw outputs: the same masks, without a float pass and ``np.where``'s broadcast (a third of the time
    of a quick-track step went into these masks)."""
    seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
    n = math.prod(shape)
    raw = np.random.PCG64(seed).random_raw((n + 1) // 2)
    threshold = _threshold(p)
    keep = raw.view(np.uint32)[:n] >= threshold if threshold < 2**32 else np.zeros(n, bool)
    scaled = np.multiply(keep, np.float32(1.0 / (1.0 - p)), dtype=np.float32)
    return torch.from_numpy(scaled.reshape(tuple(shape))).to(dtype)


@functools.lru_cache(maxsize=16)
def _threshold(p: float) -> int:
    """The least 32-bit output whose float32 draw is >= p (compared in float32, as NumPy compares a
    float32 array with a Python float); 2**32 where no draw is (float32(p) above 1 - 2**-24)."""
    return math.ceil(float(np.float32(p)) * 2**24) << 8


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with PCG64 masks when ``x`` is on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x.dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` with :func:`dropout`'s CPU masks."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              p: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)`` for a float additive
    ``mask``, a boolean one (True: attend) or none; on the CPU with ``p > 0`` written out, its attention dropout by
    :func:`dropout`. PyTorch's CPU path for dropout is the math kernel, which also scans the whole
    [B, H, S, S] score tensor for rows masked everywhere; FlexCare's and M3Care's masks leave every query a key."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return dropout(torch.softmax(scores, -1), p, True) @ v
