"""A materialised split on the device: ragged arrays with offsets, padded per batch by index arithmetic.

Every stay's discretised rows (and every note's token embeddings) are stored back to back with
offsets, without padding; a batch is padded on the fly by gathers, with no host sync.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..backbones.flexcare import Batch, NoteRows


@dataclass
class Split:
    ehr: torch.Tensor  # [R + 1, 76] float32: every stay's kept hourly rows, back to back, then a zero row
    ehr_offsets: torch.Tensor  # [N + 1] long
    note: torch.Tensor  # [K + 1, D] float16: every note's token embeddings, then a zero row
    note_offsets: torch.Tensor  # [N + 1] long
    patient_id: torch.Tensor  # [N] long
    labels: torch.Tensor  # [N, C] uint8 clean labels; the harness never hands train labels to a method

    def __post_init__(self):
        # Widths of a padded batch, fixed per split so that batching needs no host sync.
        self.max_ehr = max(1, int((self.ehr_offsets[1:] - self.ehr_offsets[:-1]).max())) if len(self) else 1
        self.max_note = max(1, int((self.note_offsets[1:] - self.note_offsets[:-1]).max())) if len(self) else 1

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ehr_len(self) -> torch.Tensor:
        return self.ehr_offsets[1:] - self.ehr_offsets[:-1]

    @property
    def note_len(self) -> torch.Tensor:
        return self.note_offsets[1:] - self.note_offsets[:-1]

    def to(self, device) -> "Split":
        return Split(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def batch(self, idx: torch.Tensor, widths: tuple[int, int] | None = None, note_rows: bool = False) -> Batch:
        """The padded inputs of rows ``idx`` (a device tensor): gathers only, no Python objects.

        ``widths`` (series bins, note tokens[, real positions]) default to the split's longest;
        ``batch_widths`` gives tighter ones for a whole epoch's batches at once, ``chunked`` for
        length-sorted parts. The third entry, an upper bound on the rows' series bins plus note tokens,
        becomes ``Batch.tokens`` (a model may pack the real positions into that many slots). With
        ``note_rows`` and that bound, the notes come as their real tokens only (``Batch.note_rows``).
        """
        ehr_w, note_w, *tokens = widths or (self.max_ehr, self.max_note)
        ehr, ehr_len = _pad(self.ehr, self.ehr_offsets, idx, ehr_w)
        common = dict(ehr=ehr, ehr_len=ehr_len, patient_id=self.patient_id[idx], tokens=tokens[0] if tokens else None)
        if note_rows and tokens:
            rows, note_len = _rows(self.note, self.note_offsets, idx, note_w, tokens[0])
            return Batch(note=None, note_len=note_len, note_rows=rows, **common)
        note, note_len = _pad(self.note, self.note_offsets, idx, note_w)
        return Batch(note=note.float(), note_len=note_len, **common)

    def batch_widths(self, batches: list[torch.Tensor], multiple: int = 16) -> list[tuple[int, int, int]]:
        """Padded widths of each batch (its longest series and note, rounded up to ``multiple`` and
        capped at the split's longest) and its real positions (series bins plus note tokens, summed
        over its rows), read back to the host in one transfer for all batches."""
        if not batches:
            return []
        sizes = torch.tensor([len(b) for b in batches])
        idx = torch.cat(batches)
        segment = torch.repeat_interleave(torch.arange(len(batches)), sizes).to(idx.device)
        stats = torch.zeros(len(batches), 3, dtype=torch.long, device=idx.device)
        stats[:, 0].scatter_reduce_(0, segment, self.ehr_len[idx], "amax")
        stats[:, 1].scatter_reduce_(0, segment, self.note_len[idx], "amax")
        stats[:, 2].scatter_add_(0, segment, self.ehr_len[idx] + self.note_len[idx])
        return [(_round_up(a, multiple, self.max_ehr), _round_up(b, multiple, self.max_note), t)
                for a, b, t in stats.cpu().tolist()]

    def chunked(self, batches: list[torch.Tensor], chunks: int, multiple: int = 16):
        """Each batch's rows sorted by series length and cut into ``chunks`` near-equal parts, with
        each part's padded widths: ``[(rows, [(ehr_w, note_w) per part]) per batch]``.

        Batch composition is unchanged; a long stay no longer pads the whole batch to its length,
        only its own part. One host transfer for all batches, as ``batch_widths``.
        """
        if chunks <= 1 or not batches:
            return [(idx, [w]) for idx, w in zip(batches, self.batch_widths(batches, multiple))]
        rows = [idx[self.ehr_len[idx].argsort(stable=True)] for idx in batches]
        parts = [part for idx in rows for part in idx.tensor_split(chunks) if len(part)]
        widths = iter(self.batch_widths(parts, multiple))
        return [(idx, [next(widths) for part in idx.tensor_split(chunks) if len(part)]) for idx in rows]


def _round_up(x: int, multiple: int, cap: int) -> int:
    return max(1, min(cap, -(-x // multiple) * multiple))


def _extent(offsets: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First row and row count of samples ``idx`` in a flat tensor delimited by ``offsets``."""
    start = offsets[idx]
    return start, offsets[idx + 1] - start


def _pad(flat: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor, width: int):
    start, length = _extent(offsets, idx)
    steps = torch.arange(width, device=flat.device)
    rows = torch.where(steps < length.unsqueeze(1), start.unsqueeze(1) + steps, len(flat) - 1)
    return flat[rows], length


def _rows(flat: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor, width: int, capacity: int):
    """The rows of samples ``idx`` one after another in ``capacity`` slots (then the zero row), with
    their places in a [len(idx) * width] padded layout: ``NoteRows`` and the lengths. ``capacity``
    must bound the rows' total (``Batch.tokens`` does)."""
    start, length = _extent(offsets, idx)
    ends = length.cumsum(0)
    slot = torch.arange(capacity, device=flat.device)
    sample = torch.searchsorted(ends, slot, right=True)  # len(idx) for the unused slots
    used = sample < len(idx)
    sample = sample.clamp(max=len(idx) - 1)
    pos = slot - (ends[sample] - length[sample])
    values = flat[torch.where(used, start[sample] + pos, len(flat) - 1)]
    index = torch.where(used, sample * width + pos, len(idx) * width)
    return NoteRows(values, index, width), length
