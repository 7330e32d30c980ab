"""What a reader must see beside a run's number, computed in one place for the harness that writes a
record and the tables and leaderboard that read it. No torch here: the leaderboard imports this module.

- **Collapsed runs.** The protocol keeps the last epoch (no early stopping), so a run whose model fell
  to chance late in training still counts in its cell's mean; the tables mark it so that a reader
  sees why the number is low. A run is *collapsed* when its last-epoch macro AUC on the clean test
  labels is below ``COLLAPSE_AUC``. ``collapse(curve)`` says when it fell; the runner writes its
  answer into ``metrics.collapsed``, and readers of older records without that field derive the same
  from ``metrics.curve`` with ``record_collapse``.
- **FlexCare fusion layouts.** From harness 0.3.0 the FlexCare backbone (bce, focal, asl, gce, mllsc,
  multit, miracl) has the hyper-parameter ``fusion_layout``; records of earlier harnesses ran the
  two-modality layout and have no such key. ``fusion_layout(spec)`` names the layout of any record.
"""
from __future__ import annotations

import math

COLLAPSE_AUC = 0.55  # a last-epoch clean-test macro AUC below this: the run collapsed (or never learned)

# ``metrics.collapsed`` of a record: null, or an object with these fields (key -> allowed types).
COLLAPSE_FIELDS: dict[str, tuple[type, ...]] = {
    "epoch": (int,),  # the epoch it fell: the first of the final run of epochs below COLLAPSE_AUC
    "macro_auc": (int, float),  # its last-epoch macro AUC (the record's metrics.final.macro_auc)
    "peak_macro_auc": (int, float),  # the best macro AUC of any epoch
    "peak_epoch": (int,),  # the first epoch with that best
    "never_learned": (bool,),  # no epoch reached COLLAPSE_AUC: ``epoch`` is then the curve's first
}

# Note encoders that cost what a trained encoder costs but carry no information: their runs measure
# speed, not what notes add, so the leaderboard keeps them out of its result tables by default.
# ``random-bert-base`` is the built-in one (``data.notes``); the path is the same model as a folder,
# which embedded the notes of every committed full-track record set of harness < 0.4.0 (their READMEs,
# docs/performance.md).
TIMING_ENCODER = "random-bert-base"
TIMING_ENCODERS = {TIMING_ENCODER: "random-weight BERT-base (timing only)",
                   "/tmp/ehrc/encoders/bert-base-random": "random-weight BERT-base (timing only)"}

# Whether a note encoder was pretrained on MIMIC notes, the benchmark's own test notes: a ClinicalBERT-family
# encoder (Bio_ClinicalBERT, BlueBERT's PubMed+MIMIC models, Clinical-Longformer, GatorTron) saw them,
# so its runs' numbers may owe something to that. Read off the encoder's name or folder path, in order;
# an encoder none of these matches is "unknown".
ENCODER_PRETRAINING = (
    ("minilm", False, "all-MiniLM-L6-v2: general web text"),
    (TIMING_ENCODER, False, "random weights"),
    ("bert-base-random", False, "random weights"),
    ("clinicalbert", True, "ClinicalBERT family: pretrained on MIMIC-III notes"),
    ("clinical_bert", True, "ClinicalBERT family: pretrained on MIMIC-III notes"),
    ("clinical-bert", True, "ClinicalBERT family: pretrained on MIMIC-III notes"),
    ("bluebert", True, "BlueBERT: PubMed and MIMIC-III notes"),
    ("clinical-longformer", True, "Clinical-Longformer: MIMIC-III notes"),
    ("gatortron", True, "GatorTron: clinical notes including MIMIC-III"),
    ("mimic", True, "named after MIMIC"),
    ("biobert", False, "BioBERT: PubMed abstracts and PMC articles"),
    ("pubmedbert", False, "PubMedBERT: PubMed"),
    ("biomedbert", False, "BiomedBERT: PubMed"),
)


def encoder_pretraining(name: str, path: str | None = None) -> tuple[bool | None, str]:
    """(pretrained on MIMIC notes: True, False or None for unknown, why) of a spec's encoder."""
    text = f"{name} {path or ''}".lower()
    for pattern, saw_mimic, why in ENCODER_PRETRAINING:
        if pattern in text:
            return saw_mimic, why
    return None, "not a known encoder: check its model card"


TWO_MODALITY = "two_modality"  # FlexCare's layout in harness < 0.3.0 (the only one those records ran)
RELEASED = "released"  # the authors' released function, the default from harness 0.3.0


def encoder_of(spec: dict) -> str:
    """The note encoder a run's spec names (a built-in name or a folder), "" when it has none."""
    task = spec.get("task_spec")
    return str(task.get("encoder") or "") if isinstance(task, dict) else ""


def _auc(row: object) -> float | None:
    value = row.get("macro_auc") if isinstance(row, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def collapse(curve: list[dict]) -> dict | None:
    """``metrics.collapsed`` of a run with this per-epoch curve (rows with ``epoch`` and ``macro_auc``):
    None when its last epoch has macro AUC >= COLLAPSE_AUC (a run that fell and recovered by the end is
    not collapsed), else ``{"epoch", "macro_auc", "peak_macro_auc", "peak_epoch", "never_learned"}``
    (``COLLAPSE_FIELDS``). Epochs are numbered as the curve numbers them (its rows' ``epoch``, else their
    position from 1); rows without a finite macro AUC are left out. None for a curve with no such row."""
    points = [(row.get("epoch", i + 1), auc) for i, row in enumerate(curve) if (auc := _auc(row)) is not None]
    if not points or points[-1][1] >= COLLAPSE_AUC:
        return None
    start = len(points) - 1
    while start > 0 and points[start - 1][1] < COLLAPSE_AUC:
        start -= 1
    peak_epoch, peak = max(points, key=lambda p: p[1])  # max keeps the first of equal values
    return {"epoch": points[start][0], "macro_auc": points[-1][1], "peak_macro_auc": peak, "peak_epoch": peak_epoch,
            "never_learned": start == 0}


def record_collapse(record: dict) -> dict | None:
    """``metrics.collapsed`` of a record; for a record written before the field existed, derived from
    its ``metrics.curve`` (or, with no curve, from ``metrics.final`` as a curve of one epoch). None for
    a failed run: it has no last-epoch number to explain."""
    if record["status"] != "done":
        return None
    metrics = record["metrics"]
    if "collapsed" in metrics:
        return metrics["collapsed"]
    return collapse(metrics.get("curve") or [metrics["final"]])


def fusion_layout(spec: dict) -> str | None:
    """The FlexCare fusion layout the run of ``spec`` (a record's ``spec``) trained with: its
    ``method.hparams["fusion_layout"]`` when there, else "two_modality" when the hyper-parameters have
    FlexCare's ``structural_mask`` (a FlexCare method of harness < 0.3.0, which had only that layout),
    else None (a method on another backbone: M3Care, MedFuse)."""
    hparams = spec["method"].get("hparams") or {}
    if "fusion_layout" in hparams:
        return hparams["fusion_layout"]
    return TWO_MODALITY if "structural_mask" in hparams else None


def describe_collapse(seed: int, c: dict) -> str:
    """One line for a tooltip: which seed, where it fell, its peak and last-epoch macro AUC."""
    if c["never_learned"]:
        return (f"seed {seed} collapsed: never reached macro AUC {COLLAPSE_AUC:g} (peak {c['peak_macro_auc']:.3f} "
                f"at epoch {c['peak_epoch']}), last-epoch macro AUC {c['macro_auc']:.3f}")
    return (f"seed {seed} collapsed: fell below macro AUC {COLLAPSE_AUC:g} at epoch {c['epoch']} (peak "
            f"{c['peak_macro_auc']:.3f} at epoch {c['peak_epoch']}), last-epoch macro AUC {c['macro_auc']:.3f}")
