"""The page's second tab: what a record says beside its mAP (``metrics.secondary``, computed by the
harness at the last epoch, benchmark/secondary.py) and how much the test set's patients move its mAP
(``metrics.bootstrap``, benchmark/bootstrap.py). ``row_fields`` flattens them into a run's row (and
``runs.csv``), ``cell_metrics`` summarises a cell's runs. Records written before those fields have
none: their cells show '-'.
"""
from __future__ import annotations

from . import stats

# (row key, column title, which way is better, what it is). Prevalence by the clean test labels.
METRICS = (
    ("ece", "ECE", "lower", "expected calibration error over 15 equal-width bins of every (stay, label) pair"),
    ("brier", "Brier", "lower", "mean squared error of the probabilities over every (stay, label) pair"),
    ("ap_rare", "mAP, rare labels", "higher", "mean AP of labels with test prevalence below 10 %"),
    ("ap_medium", "mAP, medium labels", "higher", "mean AP of labels with test prevalence 10-20 %"),
    ("ap_common", "mAP, common labels", "higher", "mean AP of labels with test prevalence 20 % or more"),
    ("map_both", "mAP, both modalities", "higher", "mAP on the test stays with time series and notes"),
    ("map_one_missing", "mAP, one missing", "higher", "mAP on the test stays missing the series or the notes"),
    ("map_ehr_only", "mAP, series only", "higher", "mAP on the test stays without notes"),
    ("map_note_only", "mAP, notes only", "higher", "mAP on the test stays without time series"),
    ("boot_half_width", "test-set 95 % half-width", "lower",
     "half the width of the run's patient-clustered bootstrap interval of its mAP (test-set sampling error)"),
)
BANDS = ("rare", "medium", "common")
GROUPS = ("both", "one_missing", "ehr_only", "note_only")


def row_fields(metrics: dict) -> dict:
    """A done record's secondary metrics and bootstrap interval as flat row fields (None where absent)."""
    sec, boot = metrics.get("secondary") or {}, metrics.get("bootstrap") or {}
    bands, groups = sec.get("prevalence_bands") or {}, sec.get("modality") or {}
    return {"ece": sec.get("ece"), "brier": sec.get("brier"),
            **{f"ap_{b}": (bands.get(b) or {}).get("map") for b in BANDS},
            **{f"map_{g}": (groups.get(g) or {}).get("map") for g in GROUPS},
            "n_both": (groups.get("both") or {}).get("n"), "n_one_missing": (groups.get("one_missing") or {}).get("n"),
            "boot_low": boot.get("low"), "boot_high": boot.get("high"), "boot_std": boot.get("std"),
            "boot_b": boot.get("b"), "boot_seed": boot.get("seed"),
            "boot_half_width": (boot["high"] - boot["low"]) / 2 if boot else None}


def cell_metrics(runs: list[dict], mixed: bool) -> dict:
    """{metric: mean, std, n over the cell's runs that have it} (none for a mixed cell, never averaged),
    and the runs' bootstrap intervals by seed."""
    out = {}
    for key, *_ in METRICS:
        values = [] if mixed else [r[key] for r in runs if r.get(key) is not None]
        out[key] = {k: v for k, v in stats.describe(values).items() if k != "se"}
    intervals = sorted([r["seed"], r["boot_low"], r["boot_high"]] for r in runs if r.get("boot_low") is not None)
    resamples = sorted({(r["boot_b"], r["boot_seed"]) for r in runs if r.get("boot_b") is not None})
    return {"metrics": out, "intervals": intervals, "resamples": [list(x) for x in resamples]}


def metric_text(summary: dict, runs: int) -> str:
    """mean (std) of a metric, '[k/n]' when only k of the cell's n runs have it, '-' when none."""
    if not summary["n"]:
        return "-"
    text = f"{summary['mean']:.3f}" + (f" ({summary['std']:.3f})" if summary["std"] is not None else "")
    return text + (f" [{summary['n']}/{runs}]" if summary["n"] < runs else "")
