"""The build's summary: what was read, what was kept per split, and how it compares with the paper.

The expected totals are the MIRACL supplement's Table 1 for MIMIC-III phenotyping (41,904 stays, mean
label cardinality 4.126; Harutyunyan's benchmark has 41,902). A build of the full database that
differs gets a warning naming the difference; on the demo (or any subset) the warning says that the
totals are the full database's, so a difference is expected. Records dropped because their dates are
out of order (``dates``) are warned about too.
"""
from __future__ import annotations

import json

import pandas as pd
from tabulate import tabulate

from ...cards import label_names
from . import dates, peak
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
    result["warnings"] += dates.warnings(attrition)
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


# --- MIMIC-IV ------------------------------------------------------------------------------------------
# The MIRACL supplement's Table 1 (its build read MIMIC-IV 2.0): stays / studies and mean label cardinality.
EXPECTED_IV = {"phenotyping": (59_798, 4.575), "diagnosis": (132_576, 2.246)}
PAPER_VERSION = "2.0"
DEMO_PATIENTS_IV = 100
SPLITS_IV = ("train", "val", "test")


def mimic4_version(raw, counts: dict) -> tuple[str | None, str]:
    """The version read, if the folder names it (PhysioNet's .../mimiciv/2.2, mimic-iv-demo-2.2), and what
    the tables themselves tell (admit_provider_id came with 2.2)."""
    import re
    from pathlib import Path

    version = None
    for part in reversed(Path(raw).resolve().parts[-3:]):
        found = re.search(r"(?<![\d.])([23]\.\d)(?:\.\d)?(?![\d.])", part)
        if found:
            version = found.group(1)
            break
    told = ("admissions has admit_provider_id: 2.2 or later" if counts["admit_provider_id"]
            else "admissions has no admit_provider_id: 2.0 or 2.1")
    return version, told


def database_name_iv(raw, counts: dict) -> str:
    version, told = mimic4_version(raw, counts)
    named = f"{version} (from the folder name; {told})" if version else f"(version not in the folder name; {told})"
    if counts["PATIENTS"] == DEMO_PATIENTS_IV and counts["demo_subject_id"]:
        return f"MIMIC-IV Clinical Database Demo {named}, {counts['PATIENTS']} patients"
    return f"MIMIC-IV {named}, {counts['PATIENTS']:,} patients"


def _task(out, task: str) -> dict | None:
    folder = out / task
    if not folder.is_dir():
        return None
    names = label_names(task)
    parts = {s: pd.read_csv(folder / f"{s}_multimodal_listfile.csv", keep_default_na=False) for s in SPLITS_IV}
    both = pd.concat(parts.values(), ignore_index=True)
    total = len(both)
    # MIRACL's labels: uncertain (-1) and missing (-2) CheXpert labels are negatives
    cardinality = round(float((both[names] == 1).sum(axis=1).mean()), 3) if total else 0.0
    return {"samples": {s: len(parts[s]) for s in SPLITS_IV} | {"total": total},
            "patients": {s: int(parts[s]["subject_id"].nunique()) for s in SPLITS_IV},
            "label_cardinality": cardinality,
            "with_series": int((both["time_series"] != "").sum()),
            "with_note": int((both["past_medical_history"] != "").sum())}


def summarise_mimic4(ctx, attrition: pd.DataFrame, seconds: dict[str, float], missing: list[str],
                     event_tables: list[str]) -> dict:
    counts = json.loads((ctx.step_dir("stays") / "tables.json").read_text())
    database = database_name_iv(ctx.raw, counts)
    version, _ = mimic4_version(ctx.raw, counts)
    demo = counts["PATIENTS"] == DEMO_PATIENTS_IV and counts["demo_subject_id"]
    tasks = {t: _task(ctx.out, t) for t in EXPECTED_IV}
    result = {
        "database": database, "raw": str(ctx.raw), "out": str(ctx.out), "options": ctx.options,
        "tables": {k: counts[k] for k in ("PATIENTS", "ADMISSIONS", "ICUSTAYS")},
        "event_tables": event_tables, "missing": missing, "tasks": tasks,
        "icd10": json.loads((ctx.step_dir("phenotypes") / "icd10.json").read_text()),
        "expected": {t: {"samples": n, "label_cardinality": c} for t, (n, c) in EXPECTED_IV.items()}
                    | {"source": f"MIRACL supplement Table 1 (full MIMIC-IV {PAPER_VERSION})"},
        "step_seconds": seconds, "warnings": [],
    }
    why = (" (expected: the demo is not the full database, whose totals these are)" if demo else
           f" (the paper's build read MIMIC-IV {PAPER_VERSION}; this is {version})"
           if version and version != PAPER_VERSION else "")
    for task, got in tasks.items():
        n, card = EXPECTED_IV[task]
        if got is None:
            result["warnings"].append(f"{task}: not built (no MIMIC-CXR-JPG), the paper reports {n:,} samples")
        elif got["samples"]["total"] != n or abs(got["label_cardinality"] - card) > 0.005:
            result["warnings"].append(f"{task}: {got['samples']['total']:,} samples with label cardinality "
                                      f"{got['label_cardinality']:.3f}, the paper reports {n:,} and {card}{why}")
    result["warnings"] += dates.warnings(attrition)
    result["warnings"] += [f"missing: {line}" for line in missing]
    return result


def render_mimic4(result: dict, attrition: pd.DataFrame) -> str:
    lines = [f"{result['database']}: {result['raw']} -> {result['out']}", ""]
    lines.append(tabulate(attrition, headers="keys", showindex=False, intfmt=","))
    lines.append("")
    for task, got in result["tasks"].items():
        n, card = EXPECTED_IV[task]
        if got is None:
            lines.append(f"{task}: not built (paper: {n:,} samples, {card})")
            continue
        per = ", ".join(f"{got['samples'][s]:,} {s} ({got['patients'][s]:,} patients)" for s in SPLITS_IV)
        lines.append(f"{task}: {got['samples']['total']:,} samples: {per}; label cardinality "
                     f"{got['label_cardinality']:.3f}; {got['with_series']:,} with a series, {got['with_note']:,} "
                     f"with a note (paper: {n:,}, {card})")
    c = result["icd10"]
    lines.append(f"ICD-10: {c['data_icd10_codes']:,} distinct codes, {c['data_codes_in_the_gem']:,} in the CMS GEM, "
                 f"{c['data_codes_by_prefix']:,} by a parent code, {c['data_codes_unmapped']:,} unmapped; "
                 f"{c['data_codes_in_a_benchmark_group']:,} in one of the 25 groups")
    return "\n".join(lines)
