"""Materialised task tensors: what every run of a task shares, fingerprinted.

A task materialises once into a ``TaskData`` (train and test ``Split``s of padded tensors). The
fingerprint is a content hash of every tensor, so a record says exactly which data it ran on.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import numpy as np
import torch

from .backbones.flexcare import Batch
from .protocol import TaskSpec


@dataclass
class Split:
    ehr: torch.Tensor  # [N, T, 76] float32, left-aligned, zero padded
    ehr_len: torch.Tensor  # [N] long, 0 = no time series
    note: torch.Tensor  # [N, n, note_dim] float32 token embeddings, zero padded
    note_len: torch.Tensor  # [N] long, 0 = no note
    patient_id: torch.Tensor  # [N] long
    labels: torch.Tensor  # [N, C] clean labels (uint8); the harness never hands train labels to a method

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "Split":
        return Split(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def batch(self, idx: torch.Tensor) -> Batch:
        """Inputs of the rows ``idx`` (a device tensor): an index, no Python objects, no sync."""
        return Batch(
            ehr=self.ehr[idx],
            ehr_len=self.ehr_len[idx],
            note=self.note[idx],
            note_len=self.note_len[idx],
            patient_id=self.patient_id[idx],
        )


@dataclass
class TaskData:
    spec: TaskSpec
    label_names: list[str]
    train: Split
    test: Split

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(repr(self.spec).encode())
        h.update("\n".join(self.label_names).encode())
        for split in (self.train, self.test):
            for f in fields(split):
                t = getattr(split, f.name).contiguous().cpu()
                h.update(f"{f.name}{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.numpy().tobytes())
        return h.hexdigest()

    def mean_cardinality(self) -> float:
        return float(self.train.labels.float().sum(1).mean())


def to_split(arrays: dict[str, np.ndarray]) -> Split:
    return Split(
        ehr=torch.from_numpy(np.ascontiguousarray(arrays["ehr"], dtype=np.float32)),
        ehr_len=torch.from_numpy(arrays["ehr_len"].astype(np.int64)),
        note=torch.from_numpy(np.ascontiguousarray(arrays["note"], dtype=np.float32)),
        note_len=torch.from_numpy(arrays["note_len"].astype(np.int64)),
        patient_id=torch.from_numpy(arrays["patient_id"].astype(np.int64)),
        labels=torch.from_numpy(arrays["labels"].astype(np.uint8)),
    )
