"""MedFuse (Hayat, Geras & Shamout, MLHC 2022) on time series and notes, with LSTM fusion.

Written from the spec (reference/baselines.md section 8), not from the authors' code. The note takes
the chest X-ray's place: each modality is encoded to one vector, the vectors of the modalities a
sample has form a sequence in the fixed order [ehr, note], and a fusion LSTM reads it:

  both          -> [h_ehr, h_note]   (length 2)
  no note       -> [h_ehr]           (length 1, MedFuse's own case)
  no series     -> [h_note]          (length 1, our extension: MedFuse always has the series)
  neither       -> [0]               (length 1, a zero vector: finite, and rare by construction)

A missing modality shortens the sequence; it is never a zero token in a length-2 sequence (that is
MedFuse's different "missing token" baseline). Instead of packing (which reads lengths on the host),
the LSTMs run over the padded batch and each row's output at step ``length - 1`` is taken: for a
unidirectional LSTM that is exactly the packed sequence's final hidden state.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.backbones.dropout import Dropout
from benchmark.backbones.flexcare import Batch, ModelOutput
from benchmark.backbones.sequence import last_valid, masked_mean


class MedFuse(nn.Module):
    #: Every sample is encoded and fused on its own, so length-sorted parts of a batch can be too.
    accepts_parts = True

    def __init__(self, num_labels: int, ehr_dim: int = 76, note_dim: int = 768, hidden: int = 128,
                 ehr_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        d = hidden
        # MedFuse stacks single-layer LSTMs, each initialised on its own (below).
        self.ehr_lstms = nn.ModuleList(nn.LSTM(ehr_dim if i == 0 else d, d, batch_first=True) for i in range(ehr_layers))
        self.drop = Dropout(dropout)  # on the EHR feature only, as MedFuse
        self.note_proj = nn.Linear(note_dim, d)  # the analogue of MedFuse's CXR -> EHR-size projection
        self.fusion = nn.LSTM(d, d, batch_first=True)  # PyTorch's default init, as MedFuse
        self.head = nn.Linear(d, num_labels)
        self._init()

    def _init(self) -> None:
        """MedFuse's: Xavier-uniform input weights, orthogonal recurrent weights, zero biases for
        the EHR LSTMs; Xavier-uniform weights and zero biases for the linear layers."""
        for lstm in self.ehr_lstms:
            for name, p in lstm.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(p)
                else:
                    nn.init.zeros_(p)
        for linear in (self.note_proj, self.head):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, batch: Batch | list[Batch]) -> ModelOutput:
        parts = batch if isinstance(batch, list) else [batch]
        fused, h_ehr, h_note, has_ehr, has_note = (torch.cat(x) for x in zip(*(self._fuse(p) for p in parts)))
        return ModelOutput(
            logits=self.head(fused),
            aux=fused.new_zeros((), dtype=torch.float32),
            extras={"ehr_feature": h_ehr, "note_feature": h_note, "has_ehr": has_ehr, "has_note": has_note,
                    "patient_id": torch.cat([p.patient_id for p in parts])},
        )

    def _fuse(self, batch: Batch):
        x = batch.ehr
        for lstm in self.ehr_lstms:
            x, _ = lstm(x)
        h_ehr = self.drop(last_valid(x, batch.ehr_len))
        h_note = self.note_proj(masked_mean(batch.note, batch.note_len)).to(h_ehr.dtype)
        has_ehr, has_note = batch.ehr_len > 0, batch.note_len > 0
        first = torch.where(has_ehr.unsqueeze(1), h_ehr, h_note) * (has_ehr | has_note).unsqueeze(1).to(h_ehr.dtype)
        out, _ = self.fusion(torch.stack([first, h_note], 1))
        fused = last_valid(out, has_ehr.long() + has_note.long())
        return fused, h_ehr, h_note, has_ehr, has_note
