"""Helpers over padded sequences shared by the stand-alone multimodal models (M3Care, MedFuse: their
method folders' ``model.py``).

A padded batch is ``x [B, T, D]`` with true lengths ``lengths [B]``; length 0 means the modality is
missing. Everything here is shape-static (no host reads), so a step using it can be captured.
"""
from __future__ import annotations

import math

import torch


def valid_steps(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] bool: True where step t < length."""
    return torch.arange(width, device=lengths.device) < lengths.unsqueeze(1)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid steps of each row: [B, D]; a row of length 0 gives zeros."""
    keep = valid_steps(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / lengths.clamp_min(1).unsqueeze(-1).to(x.dtype)


def last_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The output at step ``length - 1`` of each row ([B, D]; step 0 for length 0). For a
    unidirectional RNN run over the padded batch this is the final state of the packed sequence."""
    at = (lengths.clamp_min(1) - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    return x.gather(1, at).squeeze(1)


def sinusoid(width: int, d: int, device: torch.device | None = None) -> torch.Tensor:
    """Vaswani et al.'s fixed positional encoding, [width, d] (d even)."""
    pos = torch.arange(width, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(width, d, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table
