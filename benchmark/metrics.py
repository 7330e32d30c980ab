"""Test metrics, computed by the harness from a model's test scores, on the device, vectorised.

The headline is macro mAP: the unweighted mean over labels of per-label average precision, with AP
defined as scikit-learn's ``average_precision_score`` (step-wise, ties grouped). Scores are logits;
ranking metrics on logits equal those on probabilities, without float32 saturation ties.

A label with no positive in the test set has no defined AP. Named switch ``empty_label``:
  "zero" (default, the reference's ``robust_metrics``): it scores 0 and stays in the mean;
  "skip": it is left out of the mean.
Either way the record lists such labels. ROC-AUC is undefined for a label with one class only:
macro ROC-AUC averages the labels that have both classes.
"""
from __future__ import annotations

import torch

EMPTY_LABEL_POLICIES = ("zero", "skip")


def tie_groups(sorted_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of a sorted [N, L] matrix: group id of each row among equal scores, and a mask of
    the last row of each group."""
    change = sorted_scores[1:] != sorted_scores[:-1]
    first = torch.ones_like(sorted_scores[:1], dtype=torch.bool)
    gid = torch.cumsum(torch.cat([first, change]).long(), dim=0) - 1
    is_last = torch.cat([change, first])
    return gid, is_last


def average_precision(y: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Per-label AP of [N, L] binary ``y`` against ``scores`` (float64, [L]); 0 where no positive."""
    s, order = torch.sort(scores.double(), dim=0, descending=True, stable=True)
    ys = torch.gather(y.double(), 0, order)
    gid, is_last = tie_groups(s)
    rank = torch.arange(1, len(s) + 1, device=s.device, dtype=torch.float64).unsqueeze(1)
    precision = torch.cumsum(ys, 0) / rank
    # Every positive in a tie group is credited with the precision at the group's end.
    group_precision = torch.zeros_like(precision).scatter_add_(0, gid, precision * is_last)
    positives = ys.sum(0)
    ap = (ys * torch.gather(group_precision, 0, gid)).sum(0) / positives.clamp(min=1)
    return ap


def roc_auc(y: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Per-label ROC-AUC (Mann-Whitney with average ranks for ties); NaN for one-class labels."""
    s, order = torch.sort(scores.double(), dim=0, stable=True)
    ys = torch.gather(y.double(), 0, order)
    gid, is_last = tie_groups(s)
    n = len(s)
    idx = torch.arange(1, n + 1, device=s.device, dtype=torch.float64).unsqueeze(1).expand_as(s)
    # Average rank of a tie group = (first rank + last rank) / 2.
    last_rank = torch.zeros_like(s).scatter_add_(0, gid, idx * is_last)
    size = torch.zeros_like(s).scatter_add_(0, gid, torch.ones_like(s))
    avg_rank = torch.gather(last_rank - (size - 1) / 2, 0, gid)
    pos = ys.sum(0)
    neg = n - pos
    u = (ys * avg_rank).sum(0) - pos * (pos + 1) / 2
    auc = u / (pos * neg)
    return torch.where((pos > 0) & (neg > 0), auc, torch.full_like(auc, float("nan")))


def f1_scores(y: torch.Tensor, scores: torch.Tensor, threshold_logit: float = 0.0):
    """(micro-F1, macro-F1) of predictions p > 0.5, i.e. logit > 0; 0 where undefined."""
    pred = (scores > threshold_logit).double()
    yd = y.double()
    tp = (pred * yd).sum(0)
    fp = (pred * (1 - yd)).sum(0)
    fn = ((1 - pred) * yd).sum(0)
    denom = 2 * tp + fp + fn
    per_label = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    micro_denom = denom.sum()
    micro = (2 * tp.sum() / micro_denom) if micro_denom > 0 else torch.zeros((), dtype=torch.float64)
    return micro, per_label.mean()


def evaluate(y: torch.Tensor, scores: torch.Tensor, empty_label: str = "zero") -> dict:
    """All test metrics of one epoch, as plain Python numbers."""
    if empty_label not in EMPTY_LABEL_POLICIES:
        raise ValueError(f"empty_label must be one of {EMPTY_LABEL_POLICIES}, got {empty_label!r}")
    y = y.to(scores.device)
    ap = average_precision(y, scores)
    has_pos = y.sum(0) > 0
    mean_ap = ap.mean() if empty_label == "zero" else ap[has_pos].mean()
    auc = roc_auc(y, scores)
    micro_auc = roc_auc(y.reshape(-1, 1), scores.reshape(-1, 1))[0]
    micro_f1, macro_f1 = f1_scores(y, scores)
    values = torch.stack(
        [mean_ap, micro_f1, macro_f1, torch.nanmean(auc), micro_auc]
    ).tolist()  # one host sync for the lot
    out = dict(zip(("map", "micro_f1", "macro_f1", "macro_auc", "micro_auc"), values))
    out["per_label_ap"] = ap.tolist()
    out["labels_without_positives"] = torch.nonzero(~has_pos).flatten().tolist()
    return out
