"""The real positions of a padded batch, packed into a fixed number of rows.

A full-track batch of 128 stays is padded to its longest series (up to 512 hourly bins) while the
median stay has 45: about 4.7 padded positions per real one. Every position-wise layer (projections,
feed-forward, layer norms, dropout, residuals) then works mostly on padding. Packing runs those layers
on the real positions only and scatters them back into the padded layout for attention, whose mask
already ignores padding. For every real position the function is unchanged; padded positions were
never read.

The number of rows (``capacity``) is fixed on the host from ``Batch.tokens`` (the data layer sums the
batch's lengths once per epoch), so the step needs no host sync and a CUDA graph can hold it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class PackedPositions:
    """``pack``: [B, S, e] -> [capacity, e] (real positions first, then zero rows);
    ``unpack``: back to [B, S, e] with zeros at the padding; ``read``: given positions of every sample."""

    def __init__(self, keep: torch.Tensor, capacity: int):
        b, s = keep.shape
        if capacity < 1 or capacity > b * s:
            raise ValueError(f"capacity must be in 1..{b * s} (batch x positions), got {capacity}")
        self.shape, self.capacity = (b, s), capacity
        self.keep, self.counts = keep, keep.sum(1)  # kept positions per sample, in the packed order
        flat = keep.reshape(-1)
        # Slot of each kept position, in order; the rest go to one spill slot past the end. The caller
        # guarantees at most ``capacity`` kept positions (an overflow fails as an index error).
        self.slot = torch.cumsum(flat, 0) - 1
        spill = torch.where(flat, self.slot, capacity)
        # Source row of each slot; b * s is an all-zero row appended by ``pack`` (unused slots).
        source = torch.full((capacity + 1,), b * s, dtype=torch.long, device=keep.device)
        self.source = source.scatter(0, spill, torch.arange(b * s, device=keep.device))[:capacity]

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        b, s = self.shape
        return F.pad(x.reshape(b * s, -1), (0, 0, 0, 1)).index_select(0, self.source)

    def unpack(self, h: torch.Tensor) -> torch.Tensor:
        b, s = self.shape
        return scatter_rows(h, self.source, b * s).view(b, s, -1)

    def read(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rows of ``positions`` (a device tensor; each kept in every sample) of every sample:
        [B, len(positions), e]."""
        b, s = self.shape
        return h[self.slot.view(b, s).index_select(1, positions)]


def scatter_rows(h: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
    """[rows, e] zeros with row ``index[i]`` set to ``h[i]``; an index of ``rows`` sends its row nowhere."""
    # Unused slots write into one extra last row, which is then cut off (so they get no gradient).
    return h.new_zeros(rows + 1, h.shape[-1]).index_copy(0, index, h)[:rows]
