"""The detection tables: how well each method's suspicion found the wrong training labels.

A record's curve rows hold the harness's scores of a method's ``suspicion()`` (``benchmark/detection.py``:
precision, recall and F1 of the entries scored above 0.5, and AUPRC, for missed positives and spurious
positives apart). ``report.detection_fields`` takes the last epoch's into a run's row (and ``runs.csv``);
a run whose last epoch has no scores has none. ``task_tables`` gives one table per noise setting of a task: rows the
methods that scored, per direction mean (std) over the seeds of the protocol's noise draw, and the
direction's base rate (the AUPRC of scores that know nothing). Cells mixing data, harness versions or
code are not averaged, as in the result tables.
"""
from __future__ import annotations

from benchmark.protocol import parse_noise

from . import stats
from .report import DETECTION_DIRECTIONS, DETECTION_METRICS, cell_flags, noise_order

_TITLES = {"missed_positive": ("missed positives", "clean 1, observed 0: a condition the labels miss (rho+)"),
           "spurious_positive": ("spurious positives", "clean 0, observed 1: a condition the labels add (rho-)")}
DIRECTIONS = tuple((d, *_TITLES[d]) for d in DETECTION_DIRECTIONS)  # (key, title, what it is)
METRICS = (("precision", "P"), ("recall", "R"), ("f1", "F1"), ("auprc", "AUPRC"))
FIELDS = tuple(f"det_{d}_{m}" for d in DETECTION_DIRECTIONS for m in DETECTION_METRICS)  # report.detection_fields
LEGEND = ("Detection: a method's suspicion() scores, per training entry, its probability that the observed label "
          "is wrong; the harness alone, which holds the clean training labels, scores them at every epoch "
          "(benchmark/detection.py). Shown: the last epoch, mean (std) over the seeds of the protocol's noise draw "
          "(std with ddof=1). P, R, F1: precision, recall and F1 of the entries scored above 0.5 (the method's own "
          "decision, no oracle count of the flips); precision is 0 when nothing is flagged. AUPRC: average "
          "precision of the scores against the truly flipped entries (scikit-learn's step-wise definition, as the "
          "test mAP); the base rate, the share of flipped entries among the candidates, is what scores that know "
          "nothing get. Missed positives: entries observed 0 whose clean label is 1; spurious positives: entries "
          "observed 1 whose clean label is 0; each is scored over its own candidates. '-': no flipped entry of "
          "that direction (nothing to detect), or no run with scores. Only methods that return suspicion scores "
          "have rows.")


def cell(runs: list[dict]) -> dict | None:
    """A detection cell: per direction and metric the mean, std and n over the runs that have it; None
    when no run of the cell has scores."""
    scored = [r for r in runs if any(r.get(f) is not None for f in FIELDS)]
    if not scored:
        return None
    flags = [f for f in cell_flags({"runs": scored}) if f.startswith("mixed") or f.startswith("n=")]
    mixed = any(f.startswith("mixed") for f in flags)
    out = {"n": len(scored), "runs": len(runs), "flags": flags, "seeds": sorted(r["seed"] for r in scored),
           "directions": {}}
    for d, *_ in DIRECTIONS:
        metrics = {}
        for m in (*(k for k, _ in METRICS), "base_rate"):
            values = [] if mixed else [r[f"det_{d}_{m}"] for r in scored if r.get(f"det_{d}_{m}") is not None]
            metrics[m] = {k: v for k, v in stats.describe(values).items() if k != "se"}
        out["directions"][d] = metrics
    return out


def task_tables(methods: dict) -> list[dict]:
    """{row label: {noise: cell of ``report.collect``}} of one task -> one table per noise setting that
    has a scored run: {"noise", "label", "rows": [{"method", **cell}], "base_rate": per direction}."""
    noises = noise_order({n for cells in methods.values() for n in cells})
    tables = []
    for noise in noises:
        rows = []
        for label, cells in sorted(methods.items()):
            c = cells.get(noise)
            scored = cell(c["runs"]) if c else None
            if scored is not None:
                rows.append({"method": label, **scored})
        if not rows:
            continue
        base = {}
        for d, *_ in DIRECTIONS:  # the column's flip share: one noisy matrix per seed, the same for every method
            values = [r["directions"][d]["base_rate"]["mean"] for r in rows
                      if r["directions"][d]["base_rate"]["mean"] is not None]
            base[d] = [min(values), max(values)] if values else None
        rows.sort(key=lambda r: (-_mean_f1(r), r["method"]))
        tables.append({"noise": noise, "label": parse_noise(noise).label(), "rows": rows, "base_rate": base})
    return tables


def _mean_f1(row: dict) -> float:
    values = [row["directions"][d]["f1"]["mean"] for d, *_ in DIRECTIONS
              if row["directions"][d]["f1"]["mean"] is not None]
    return sum(values) / len(values) if values else -1.0


def value_text(summary: dict) -> str:
    """mean (std), one value, or '-'."""
    if not summary["n"]:
        return "-"
    return f"{summary['mean']:.3f}" + (f" ({summary['std']:.3f})" if summary["std"] is not None else "")


def base_text(span) -> str:
    if not span:
        return "-"
    low, high = span
    return f"{low:.3f}" if abs(high - low) < 5e-4 else f"{low:.3f}-{high:.3f}"
