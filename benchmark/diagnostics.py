"""Scores of a method's label corrections against the clean training labels, for the run record.

Only the harness holds the clean training labels. A correcting method exposes its current corrected
labels and partition (``Method.corrections``); the runner closes ``score_corrections`` over the clean
and noisy labels and hands the closure to the trainer, never to the method.
"""
from __future__ import annotations

import functools

import torch

PARTITION = ("clean", "uncertain", "noisy")  # codes 0, 1, 2 of a partition matrix


def score_corrections(corrections: dict, clean: torch.Tensor, noisy: torch.Tensor, threshold: float = 0.5) -> dict:
    """How well ``corrections`` ({"labels": [N, C], "partition": [N, C] 0/1/2}) find and fix the noise.

    - ``share_*``: the partition's share of entries;
    - ``flagged_noisy_precision`` / ``_recall``: of the entries flagged noisy (2), the share whose
      observed label is really wrong, and of the wrong entries, the share flagged; the same for
      ``flagged_suspect_*`` = flagged uncertain or noisy (1 or 2); precision 0 when nothing is flagged;
    - ``agreement_before``: share of observed labels equal to the clean ones; ``agreement_after``:
      the same for the corrected labels thresholded at ``threshold`` (p > 0.5 -> 1), overall and on
      the entries of each partition class (``agreement_after_clean`` ...; None for an empty class).
    """
    labels, part = corrections["labels"], corrections["partition"]
    clean, noisy = clean.to(labels.device) > 0.5, noisy.to(labels.device) > 0.5
    wrong = noisy != clean
    fixed = (labels > threshold) == clean
    numbers = {f"share_{name}": (part == k).double().mean() for k, name in enumerate(PARTITION)}
    for name, flagged in (("noisy", part == 2), ("suspect", part >= 1)):
        hits = (flagged & wrong).sum().double()
        numbers[f"flagged_{name}_precision"] = hits / flagged.sum().clamp_min(1)
        numbers[f"flagged_{name}_recall"] = hits / wrong.sum().clamp_min(1)
    numbers["agreement_before"] = (noisy == clean).double().mean()
    numbers["agreement_after"] = fixed.double().mean()
    for k, name in enumerate(PARTITION):
        where = part == k
        numbers[f"agreement_after_{name}"] = (fixed & where).sum() / where.sum().clamp_min(1)
        numbers[f"agreement_before_{name}"] = ((noisy == clean) & where).sum() / where.sum().clamp_min(1)
    counts = torch.stack([(part == k).sum() for k in range(3)]).tolist()
    values = dict(zip(numbers, torch.stack(list(numbers.values())).double().tolist()))  # one host read
    out = {key: round(v, 6) for key, v in values.items()}
    for k, name in enumerate(PARTITION):  # a class without entries has no agreement
        if counts[k] == 0:
            out[f"agreement_after_{name}"] = out[f"agreement_before_{name}"] = None
    return out


def scorer(clean: torch.Tensor, noisy: torch.Tensor):
    """``score_corrections`` bound to one run's clean and noisy training labels (the trainer's hook)."""
    return functools.partial(score_corrections, clean=clean, noisy=noisy)
