"""The detection track: how well a method's per-entry suspicion finds the wrong training labels.

A method may return, after any epoch, a suspicion score per training entry (``Method.suspicion``): an
``[N, C]`` tensor of probabilities in [0, 1] that the entry's observed label is wrong. Only the harness
holds the clean training labels: the runner closes ``scorer`` over them and the noisy labels and hands
the closure to the trainer, never to the method. The scores go into the epoch's curve row under
``"detection"``.

Each direction of noise is scored apart, over the entries that can carry it:

- ``missed_positive``: entries observed 0; wrong where the clean label is 1 (a flip 1 -> 0, rho+);
- ``spurious_positive``: entries observed 1; wrong where the clean label is 0 (a flip 0 -> 1, rho-).

Per direction: ``candidates`` (entries observed in that class), ``noisy`` (of them, truly flipped),
``flagged`` (score > ``THRESHOLD``), ``true_positives`` (flagged and truly flipped), ``precision`` =
true_positives / flagged (0 when nothing is flagged), ``recall`` = true_positives / noisy, ``f1`` (their
harmonic mean, 0 when both are 0), ``auprc`` (average precision of the scores against the truly flipped
entries, scikit-learn's step-wise definition with ties grouped, as the test mAP: ``metrics.average_precision``)
and ``base_rate`` = noisy / candidates (the AUPRC of scores that know nothing). Where a direction has no
flipped entry (e.g. rho+ = 0) precision, recall, F1 and AUPRC are null: there is nothing to detect.

The threshold rule is fixed: an entry is flagged when its score exceeds 0.5, i.e. when the method holds
its observed label more likely wrong than right. It is the method's own decision, made without the
clean labels. The alternative, flagging the top k entries with k the true number of flips, would hand the
scorer a number only the clean labels give and make precision, recall and F1 one number (R-precision);
AUPRC already scores the ranking without any threshold.
"""
from __future__ import annotations

import functools

import torch

from .errors import RunFailed
from .metrics import average_precision

THRESHOLD = 0.5
# direction -> the observed value of its entries (the clean value is the other one)
DIRECTIONS = {"missed_positive": 0, "spurious_positive": 1}
COUNTS = ("candidates", "noisy", "flagged", "true_positives")
RATES = ("precision", "recall", "f1", "auprc", "base_rate")
METRICS = ("precision", "recall", "f1", "auprc")  # what the leaderboard's detection table shows


def check_suspicion(scores, shape: tuple[int, int], where: str = "Method.suspicion()") -> torch.Tensor:
    """``scores`` as a float tensor, or ``RunFailed`` naming the hook and what is wrong."""
    if not isinstance(scores, torch.Tensor):
        raise RunFailed(f"{where} returned {type(scores).__name__}; expected None or an [N, C] tensor of "
                        f"probabilities that each observed training label is wrong")
    if tuple(scores.shape) != tuple(shape):
        raise RunFailed(f"{where} returned a tensor of shape {list(scores.shape)}; expected {list(shape)} "
                        f"(one score per training sample and label)")
    if scores.is_complex():
        raise RunFailed(f"{where} returned a complex tensor; expected real probabilities in [0, 1]")
    values = scores.detach().double()  # bool and integer scores (0/1 flags) are probabilities too
    finite = torch.isfinite(values)
    inside = finite & (values >= 0) & (values <= 1)
    ok, all_finite, low, high = torch.stack([inside.all().double(), finite.all().double(), values.min(),
                                             values.max()]).tolist()  # one host read
    if not ok:
        what = "non-finite values" if not all_finite else f"values in [{low:g}, {high:g}]"
        raise RunFailed(f"{where} returned {what}; expected probabilities in [0, 1] (a score above "
                        f"{THRESHOLD} flags the entry as wrong)")
    return values


def score_suspicion(scores: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor) -> dict:
    """Detection metrics of ``scores`` [N, C] against the flips from ``clean`` to ``noisy`` labels."""
    values = check_suspicion(scores, tuple(noisy.shape))
    clean, noisy = clean.to(values.device) > 0.5, noisy.to(values.device) > 0.5
    wrong = clean != noisy
    numbers = {}
    for direction, observed in DIRECTIONS.items():
        where = noisy == bool(observed)
        s, truth = values[where], wrong[where]
        flagged = s > THRESHOLD
        tp = (flagged & truth).sum().double()
        n_flagged, n_noisy = flagged.sum().double(), truth.sum().double()
        n = torch.tensor(float(s.numel()), dtype=torch.float64, device=s.device)
        precision = tp / n_flagged.clamp_min(1)
        recall = tp / n_noisy.clamp_min(1)
        f1 = 2 * tp / (n_flagged + n_noisy).clamp_min(1)  # = 2PR / (P + R); 0 when both are 0
        auprc = (average_precision(truth.unsqueeze(1), s.unsqueeze(1))[0] if s.numel()
                 else torch.zeros((), dtype=torch.float64, device=s.device))
        numbers[direction] = torch.stack([n, n_noisy, n_flagged, tp, precision, recall, f1, auprc,
                                          n_noisy / n.clamp_min(1)])
    table = torch.stack(list(numbers.values())).tolist()  # one host read
    out: dict = {"threshold": THRESHOLD}
    for direction, row in zip(numbers, table):
        counts = dict(zip(COUNTS, (int(round(v)) for v in row[:4])))
        rates = dict(zip(RATES, (round(v, 6) for v in row[4:])))
        if counts["noisy"] == 0:  # nothing to detect in this direction
            rates.update(precision=None, recall=None, f1=None, auprc=None)
        out[direction] = {**counts, **rates}
    return out


def scorer(clean: torch.Tensor, noisy: torch.Tensor):
    """``score_suspicion`` bound to one run's clean and noisy training labels (the trainer's hook)."""
    return functools.partial(score_suspicion, clean=clean, noisy=noisy)
