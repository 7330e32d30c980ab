"""The build's summary: what was read, what was kept per split, and how it compares with the paper.

The expected totals are the MIRACL supplement's Table 1 for MIMIC-III phenotyping (41,904 stays, mean
label cardinality 4.126; Harutyunyan's benchmark has 41,902). A build of the full database that
differs gets a warning naming the difference; on the demo (or any subset) the warning says that the
totals are the full database's, so a difference is expected.
"""
from __future__ import annotations

import json

import pandas as pd
from tabulate import tabulate

from ...cards import label_names
from . import peak
from .listfiles import SPLITS

EXPECTED_STAYS = 41_904
EXPECTED_CARDINALITY = 4.126
FULL_PATIENTS = 46_520  # PATIENTS rows of MIMIC-III 1.4 (and 1.3)
DEMO_PATIENTS = 100


def database_name(counts: dict) -> str:
    n = counts["PATIENTS"]
    if n == FULL_PATIENTS:
        return f"MIMIC-III full database ({n:,} patients, as in 1.4)"
    if n == DEMO_PATIENTS and counts["lower_case_headers"]:
        return f"MIMIC-III Clinical Database Demo 1.4 ({n} patients)"
    return f"MIMIC-III subset of {n:,} patients (the full 1.4 database has {FULL_PATIENTS:,})"


def summarise(ctx, attrition: pd.DataFrame, seconds: dict[str, float]) -> dict:
    counts = json.loads((ctx.step_dir("stays") / "tables.json").read_text())
    names = label_names("phenotyping")
    parts = {s: pd.read_csv(ctx.out / "phenotyping" / f"{s}_multimodal_listfile.csv", keep_default_na=False)
             for s in SPLITS}
    both = pd.concat(parts.values(), ignore_index=True)
    total = len(both)
    cardinality = round(float(both[names].sum(axis=1).mean()), 3) if total else 0.0
    result = {
        "database": database_name(counts),
        "raw": str(ctx.raw), "out": str(ctx.out), "options": ctx.options,
        "tables": {k: v for k, v in counts.items() if k != "lower_case_headers"},
        "stays": {s: len(parts[s]) for s in SPLITS} | {"total": total},
        "episodes": {s: int(parts[s]["stay"].nunique()) for s in SPLITS},
        "patients": {s: int(parts[s]["patient_id"].nunique()) for s in SPLITS},
        "label_cardinality": cardinality,
        "stays_with_note": int((both["notes"] != "").sum()),
        "expected": {"stays": EXPECTED_STAYS, "label_cardinality": EXPECTED_CARDINALITY,
                     "source": "MIRACL supplement Table 1 (full MIMIC-III 1.4)"},
        "step_seconds": seconds,
        # Peak resident memory of each step that ran (a kept step has none; 'own' false: the process's peak
        # so far, where the step's own cannot be sampled) and of the whole build process (peak.py).
        "step_peak_mb": dict(ctx.peak_mb), "step_peak_own": ctx.peak_own, "peak_mb": peak.process_peak_mb(),
        "warnings": [],
    }
    full = counts["PATIENTS"] == FULL_PATIENTS
    if total != EXPECTED_STAYS or abs(cardinality - EXPECTED_CARDINALITY) > 0.005:
        why = ("" if full else f" (expected: {result['database']} is not the full database, whose totals these are)")
        result["warnings"].append(f"{total:,} stays with label cardinality {cardinality:.3f}, the paper reports "
                                  f"{EXPECTED_STAYS:,} and {EXPECTED_CARDINALITY}{why}")
    if not result["stays_with_note"]:
        result["warnings"].append("no stay has a note: the note modality is absent (NOTEEVENTS missing or empty)")
    return result


def render(result: dict, attrition: pd.DataFrame) -> str:
    lines = [f"{result['database']}: {result['raw']} -> {result['out']}", ""]
    lines.append(tabulate(attrition, headers="keys", showindex=False, intfmt=","))
    lines.append("")
    for s in SPLITS:
        lines.append(f"{s:<5}  {result['stays'][s]:>7,} stays ({result['episodes'][s]:,} episode files) of "
                     f"{result['patients'][s]:,} patients")
    lines.append(f"total  {result['stays']['total']:>7,} stays, label cardinality {result['label_cardinality']:.3f}, "
                 f"{result['stays_with_note']:,} with a note (paper: {EXPECTED_STAYS:,}, {EXPECTED_CARDINALITY})")
    return "\n".join(lines)
