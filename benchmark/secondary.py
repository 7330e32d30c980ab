"""Secondary test metrics of a run, computed by the harness on the clean test labels at the last epoch
(the record's ``metrics.secondary``); the headline stays macro mAP (``metrics``).

- Calibration over every (stay, label) pair, probabilities sigmoid(logit): the expected calibration
  error over ``ECE_BINS`` equal-width bins of [0, 1] (sum over bins of |sum(y - p)| / pairs, the
  bin-size-weighted gap between accuracy and confidence; p = 1 falls in the last bin), and the Brier
  score, the mean of (p - y)^2.
- AP by label prevalence: each label's prevalence on the clean test labels puts it in a band of
  ``PREVALENCE_BANDS`` (rare below 10 %, common at 20 % and above); a band's mAP is the mean AP of its
  labels under the run's empty-label policy (a label without a test positive counts 0, or not at all).
- mAP by modality: on the test stays with both modalities, with the time series only, with the notes
  only, and with one of the two missing (the diagnosis task is 76 % without series), each under the
  run's empty-label policy over the labels; ``n`` stays and how many labels have no positive there.
"""
from __future__ import annotations

import torch

from .metrics import average_precision

ECE_BINS = 15
# (name, lowest prevalence, prevalence below which the band ends); a band's range is [low, high).
PREVALENCE_BANDS = (("rare", 0.0, 0.10), ("medium", 0.10, 0.20), ("common", 0.20, 1.01))


def calibration(y: torch.Tensor, logits: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """ECE and Brier score over every (stay, label) pair."""
    p = torch.sigmoid(logits.double()).flatten()
    t = y.double().flatten().to(p.device)
    which = (p * bins).long().clamp(max=bins - 1)
    gap = torch.zeros(bins, dtype=torch.float64, device=p.device).scatter_add_(0, which, t - p)
    ece, brier = torch.stack([gap.abs().sum() / len(p), ((p - t) ** 2).mean()]).tolist()
    return {"ece": ece, "ece_bins": bins, "brier": brier}


def _mean_ap(ap: torch.Tensor, has_pos: torch.Tensor, empty_label: str) -> float | None:
    kept = ap if empty_label == "zero" else ap[has_pos]
    return float(kept.mean()) if len(kept) else None


def prevalence_bands(y: torch.Tensor, ap: torch.Tensor, empty_label: str) -> dict:
    """{band: {low, high, labels, map}} of the per-label ``ap`` by test prevalence."""
    prevalence = y.double().mean(0).to(ap.device)
    out = {}
    for name, low, high in PREVALENCE_BANDS:
        member = (prevalence >= low) & (prevalence < high)
        has_pos = prevalence[member] > 0
        out[name] = {"low": low, "high": min(high, 1.0), "labels": int(member.sum()),
                     "map": _mean_ap(ap[member], has_pos, empty_label)}
    return out


def modality_groups(ehr_len: torch.Tensor, note_len: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks of the test stays by the modalities they have (length 0 = missing)."""
    ehr, note = ehr_len > 0, note_len > 0
    return {"both": ehr & note, "ehr_only": ehr & ~note, "note_only": ~ehr & note, "one_missing": ehr ^ note}


def by_modality(y: torch.Tensor, logits: torch.Tensor, ehr_len: torch.Tensor, note_len: torch.Tensor,
                empty_label: str) -> dict:
    """{group: {n, map, labels_without_positives}} for each group of ``modality_groups``."""
    y = y.to(logits.device)
    out = {}
    for name, mask in modality_groups(ehr_len.to(logits.device), note_len.to(logits.device)).items():
        n = int(mask.sum())
        if not n:
            out[name] = {"n": 0, "map": None, "labels_without_positives": y.shape[1]}
            continue
        has_pos = y[mask].sum(0) > 0
        out[name] = {"n": n, "map": _mean_ap(average_precision(y[mask], logits[mask]), has_pos, empty_label),
                     "labels_without_positives": int((~has_pos).sum())}
    return out


def secondary(test, logits: torch.Tensor, empty_label: str = "zero") -> dict:
    """The record's ``metrics.secondary`` for a test ``Split`` and the last epoch's ``logits``."""
    y = test.labels.to(logits.device)
    return {**calibration(y, logits),
            "prevalence_bands": prevalence_bands(y, average_precision(y, logits), empty_label),
            "modality": by_modality(y, logits, test.ehr_len, test.note_len, empty_label)}
