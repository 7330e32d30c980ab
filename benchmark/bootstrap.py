"""How much a run's test mAP owes to which patients happen to be in the test set: a patient-clustered
bootstrap of the last epoch's mAP, computed by the harness at the end of a run (records keep no
per-stay predictions, so it cannot be done later).

Patients, not stays, are drawn with replacement (a patient's stays are correlated: resampling stays
would understate the spread), ``B`` times from a fixed RNG seed: every run of a task draws the very
same resamples, so intervals of two methods or seeds are comparable draw for draw. A resample is the
test set with each stay weighted by how often its patient was drawn; its mAP follows the run's
empty-label policy (a label without a positive in a resample scores 0, or is left out). The interval
is the percentile one; it measures test-set sampling error only, apart from the spread over seeds.
"""
from __future__ import annotations

import torch

from .metrics import tie_groups

B = 1000
SEED = 20240517  # fixed across runs: the same resamples for every method and seed of a task
LEVEL = 0.95
_CHUNK_ELEMENTS = 1 << 24  # resamples x stays x labels per chunk: ~128 MB of float64 at a time


def cluster_weights(patient_id: torch.Tensor, b: int, seed: int) -> torch.Tensor:
    """[b, N] float64: how often each stay's patient is drawn in each of ``b`` resamples of the patients."""
    patients, index = torch.unique(patient_id.cpu(), return_inverse=True)
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(patients), (b, len(patients)), generator=g)
    counts = torch.zeros(b, len(patients), dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(b, len(patients), dtype=torch.float64))
    return counts[:, index].to(patient_id.device)


def weighted_average_precision(y: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[b, L] AP of [N, L] ``y`` against ``scores`` with stay weights [b, N]: the AP of a test set in
    which stay i appears weights[k, i] times (ties grouped as in ``metrics.average_precision``, which
    stays as it is so that the headline's float summation order never changes); 0 where no positive."""
    s, order = torch.sort(scores.double(), dim=0, descending=True, stable=True)
    ys = torch.gather(y.double(), 0, order)
    gid, is_last = tie_groups(s)
    w = weights[:, order]  # [b, N, L]: each label's stays in its own score order
    wy = w * ys
    seen = torch.cumsum(w, 1)
    # A prefix of stays that were not drawn holds no weight: its precision is never credited (wy = 0).
    precision = torch.where(seen > 0, torch.cumsum(wy, 1) / seen.clamp(min=1e-300), torch.zeros_like(seen))
    groups = gid.unsqueeze(0).expand_as(precision)
    group_precision = torch.zeros_like(precision).scatter_add_(1, groups, precision * is_last)
    positives = wy.sum(1)
    return (wy * torch.gather(group_precision, 1, groups)).sum(1) / positives.clamp(min=1e-300)


def resampled_maps(y: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor, empty_label: str) -> torch.Tensor:
    """[b] mAP of each resample under the run's empty-label policy."""
    y = y.to(scores.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, y.numel()))
    out = []
    for part in weights.split(chunk):
        ap = weighted_average_precision(y, scores, part)
        if empty_label == "zero":
            out.append(ap.mean(1))
        else:
            has_pos = (part @ y.double()) > 0  # [b, L]: the label has a drawn positive
            out.append((ap * has_pos).sum(1) / has_pos.sum(1).clamp(min=1))
    return torch.cat(out)


def map_interval(y: torch.Tensor, scores: torch.Tensor, patient_id: torch.Tensor, empty_label: str = "zero",
                 b: int = B, seed: int = SEED, level: float = LEVEL) -> dict:
    """The record's ``metrics.bootstrap``: the percentile interval of the test mAP over ``b`` patient
    resamples, their std, and what defines them (``b``, ``seed``, ``level``, the unit, the patients)."""
    weights = cluster_weights(patient_id, b, seed).to(scores.device)
    maps = resampled_maps(y, scores, weights, empty_label).cpu()
    tail = (1 - level) / 2
    low, high = torch.quantile(maps, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"b": b, "seed": seed, "level": level, "unit": "patient", "patients": int(torch.unique(patient_id).numel()),
            "low": low, "high": high, "std": float(maps.std(correction=1)), "mean": float(maps.mean())}
