"""``ehrbench data raw mimic4``: a synthetic MIMIC-IV-shaped task (phenotyping or diagnosis, layout
``mimic4``: ``mimic4-phe``, ``mimic4-dia``) as the tables of MIMIC-IV 2.2, MIMIC-IV-Note 2.2 and
MIMIC-CXR-JPG 2.0.0 that ``ehrbench data build mimic4 --raw --note --cxr`` reads.

The generator's task (``generator.generate``) is inverted, with the MIMIC-III writer's machinery where
the tables are alike: its stays (``stays``, ``write_mimic4``), its series as chart and lab events of
MIMIC-IV's items (``items.as_mimic4``, ``charting``), its phenotypes as ICD-9 or ICD-10 codes
(``diagnoses.rows_mimic4``), its notes as the past medical history of discharge summaries
(``discharge``), and for a diagnosis task its samples as AP chest X-ray studies with CheXpert labels
(``cxr``). The patient split is ``tvtset.csv`` (``subject_id,split``, 0 train, 1 val, 2 test), which
the build reads with ``--split-file``. Out folder::

    mimic-iv/hosp/{patients,admissions,diagnoses_icd,d_icd_diagnoses,labevents}.csv.gz
    mimic-iv/icu/{icustays,chartevents,outputevents}.csv.gz
    mimic-iv-note/note/discharge.csv.gz
    mimic-cxr-jpg/mimic-cxr-2.0.0-{metadata,chexpert}.csv.gz        (a diagnosis task only)
    tvtset.csv, report.json

Phenotyping: each sample with a series is an ICU stay of its own admission, as for MIMIC-III (a sample
without one has no counterpart: the build keeps no stay without events). Diagnosis: each series file
is an ICU stay (of the length ``generator.Generated.periods`` gives), its studies within it, each
admission's note the note of its stay's first study (the build's note is the admission's, the
generator draws one per study); each sample without a series is a study in an admission of its own
without an ICU stay. Its phenotyping task (the build makes one from the stays) has every label 0: a
diagnosis task has no phenotypes, its admissions' codes are all of other groups.

``report.json`` says how many rows each attrition row must drop (``dropped``, as for MIMIC-III), the
chart-time rounding (``timing``) and the studies' placement (``placement``).
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ...cards import label_names
from ...errors import UsageError
from .. import generator
from . import charting, cxr, diagnoses, discharge, items, stays as stays_mod
from .stays import DAY, NON_COHORT
from .volume import Volume, few_mimic4

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
STAY_BASE, HOSPITAL_BASE = 70_000_000, 90_000_000  # diagnosis: ICU stays of the series files; admissions without
STUDY_BASE, NO_ADMISSION_SUBJECT = 58_000_000, 18_000_000  # distractor studies; subjects without an admission


def _rng(spec) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"raw4:{generator.STREAMS_VERSION}:{spec.name}:{spec.n_total}".encode()))


def check(spec) -> None:
    if spec.layout != "mimic4" or spec.kind not in ("phenotyping", "diagnosis"):
        raise UsageError(f"task '{spec.name}' is {spec.kind} in layout {spec.layout}: MIMIC-IV raw tables are written "
                         f"for a task in layout mimic4 (e.g. mimic4-phe or mimic4-dia of track full)")


def samples(gen: generator.Generated, spec) -> pd.DataFrame:
    """Every sample of every split, in the generator's order (by key), with SPLIT and its label cells
    (``CELL:<label>``: the listfile's text)."""
    cells = generator.label_cells(gen, spec)
    parts = [df.assign(SPLIT=name).join(cells[name].add_prefix("CELL:")) for name, df in gen.splits.items()]
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values("key", key=lambda k: k.astype(np.int64), kind="stable").reset_index(drop=True)


def _phenotyping_rows(table: pd.DataFrame, label_names: list[str]) -> pd.DataFrame:
    table = table[table["series"] != ""]
    return pd.DataFrame({"SUBJECT_ID": table["patient"].to_numpy(np.int64),
                         "ICUSTAY_ID": table["key"].astype(np.int64).to_numpy(), "END": table["end"].to_numpy(),
                         "END_GEN": table["end"].to_numpy(), "SERIES": table["series"].to_numpy(), "SYSTEM": "metavision",
                         "NOTE": table["note"].to_numpy(), "ROLE": "cohort",
                         **{name: table[name].to_numpy() for name in label_names}})


def _diagnosis_rows(table: pd.DataFrame, gen: generator.Generated, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per series file (an ICU stay, at its first study) and per study without a series (an
    admission without an ICU stay), in the generator's order; and each study's row."""
    has = table["series"].to_numpy() != ""
    first = has & ~table["series"].duplicated().to_numpy()
    own = ~has | first  # the samples that open a row
    row_of = np.cumsum(own) - 1
    opener = table[own].reset_index(drop=True)
    stay = opener["series"].to_numpy() != ""
    period = np.array([max(gen.periods.get(s, 0.0), e) for s, e in zip(opener["series"], opener["end"])])
    index = np.arange(len(opener))
    rows = pd.DataFrame({
        "SUBJECT_ID": opener["patient"].to_numpy(np.int64),
        "ICUSTAY_ID": np.where(stay, STAY_BASE + np.cumsum(stay) - 1, HOSPITAL_BASE + index),
        "END": np.where(stay, period, rng.uniform(12, 120, len(opener))), "SERIES": opener["series"].to_numpy(),
        "SYSTEM": "metavision", "NOTE": opener["note"].to_numpy(), "ROLE": np.where(stay, "cohort", "hospital")})
    rows["END_GEN"] = rows["END"]
    return rows, row_of


def write(spec, out: str | Path, volume: Volume | None = None, task_files: str | Path | None = None,
          log=lambda line: None) -> dict:
    """The raw tables of ``spec``'s task under ``out`` (and its own task files under ``task_files``); the report."""
    check(spec)
    volume = volume or Volume(distractors=few_mimic4())
    if volume.distractors.get("ward"):
        raise UsageError("distractor stays of kind 'ward': MIMIC-IV has no ward ids (a transfer is a change of care unit)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = generator.generate(spec)
    if task_files is not None:
        generator.write(gen, spec, Path(task_files))
    rng = _rng(spec)
    table = samples(gen, spec)
    events = items.as_mimic4(gen.events)
    names = gen.label_names
    if spec.kind == "phenotyping":
        rows = _phenotyping_rows(table, names)
        phenotypes = rows[names].to_numpy()
    else:
        rows, table["ROW"] = _diagnosis_rows(table, gen, rng)
        phenotypes = np.zeros((int((rows["ROLE"] == "cohort").sum()), len(label_names("phenotyping"))), dtype=np.uint8)
    stays = stays_mod.build(rows, volume.distractors, rng)
    stays.table["SYSTEM"] = "metavision"
    written = stays_mod.write_mimic4(stays, out, rng)
    cohort = stays.role("cohort")
    log(f"      {len(cohort):,} cohort stays, {int((stays.table['ROLE'] == 'hospital').sum()):,} admissions without "
        f"an ICU stay, {len(stays.table) - len(rows):,} distractor stays")
    dropped = charting.Dropped()
    for step, n in stays.excluded().items():
        dropped.add(step, n)
    mapped, timing = charting.mapped_events(events, stays, volume, rng, dropped, "mimic4")
    events_written, masked = charting.write_tables(mapped, stays, volume, rng, dropped, out, log, "mimic4")
    written.update(events_written)
    written["outputevents"] = charting.output_events(stays, volume, rng, out, "mimic4", dropped)
    written.update(_diagnoses(stays, phenotypes, volume, rng, dropped, out))
    notes = _notes(stays, rng, dropped, out)
    written.update(notes)
    placement = cxr.Placement()
    if spec.kind == "diagnosis":
        written.update(_studies(table, stays, events, names, rng, dropped, placement, out))
    _modalities(spec, table, stays, dropped)
    patients = table.drop_duplicates("patient")
    pd.DataFrame({"subject_id": patients["patient"], "split": patients["SPLIT"].map(SPLIT_CODES)}).to_csv(
        out / "tvtset.csv", index=False)
    without = int((table["series"] == "").sum())
    report = {"task": dataclasses.asdict(spec), "tables": written, "dropped": dropped.n,
              "timing": dataclasses.asdict(timing), "placement": dataclasses.asdict(placement), "masked_values": masked,
              "stays": {"cohort": len(cohort), "samples": len(table), "without_series": without,
                        "distractors": volume.distractors},
              "mapped_rows": {t: int((mapped["TABLE"] == k).sum()) for t, k in (("chartevents", "chart"), ("labevents", "lab"))},
              "absent_channels": items.ABSENT_IN_MIMIC4}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _diagnoses(stays, phenotypes: np.ndarray, volume: Volume, rng, dropped, out) -> dict[str, int]:
    """The cohort's codes by its phenotypes; every other admission's (distractors', and a diagnosis task's
    admissions without an ICU stay) leave at cohort_diagnoses."""
    own = stays.role("cohort")
    theirs = stays.role(*NON_COHORT, "hospital").drop_duplicates("HADM_ID")
    frame = diagnoses.rows_mimic4(phenotypes, label_names("phenotyping"), own["HADM_ID"].to_numpy(),
                                  own["SUBJECT_ID"].to_numpy(), theirs["HADM_ID"].to_numpy(),
                                  theirs["SUBJECT_ID"].to_numpy(), volume.diagnoses_per_admission, rng, dropped)
    return diagnoses.write_mimic4(out, frame)


def _notes(stays, rng, dropped, out) -> dict[str, int]:
    """A discharge summary per admission: the task's note (cohort stays and admissions without one), a
    summary without the heading for the distractors'."""
    t = stays.table[stays.table["ROLE"] != "no_admission"].drop_duplicates("HADM_ID")
    task = t["ROLE"].isin(("cohort", "hospital")).to_numpy()
    notes = pd.Series(np.where(task, t["NOTE"].fillna("").to_numpy(object), None), dtype=object)
    frame = discharge.rows(pd.DataFrame({"SUBJECT_ID": t["SUBJECT_ID"].to_numpy(), "HADM_ID": t["HADM_ID"].to_numpy(),
                                         "DISCH": t["DISCH"].to_numpy(), "NOTE": notes.to_numpy()}), rng, dropped)
    return discharge.write(out, frame)


def _studies(table: pd.DataFrame, stays, events: pd.DataFrame, label_names: list[str], rng, dropped,
             placement: cxr.Placement, out) -> dict[str, int]:
    """The task's studies at their times, the distractor studies, their images and CheXpert rows."""
    t = stays.table
    opened = t[t["ROLE"].isin(("cohort", "hospital"))].reset_index(drop=True)  # in the order of the rows
    row = opened.iloc[table["ROW"].to_numpy()]
    has = table["series"].to_numpy() != ""
    time = np.zeros(len(table), dtype=np.int64)
    # Without a series: inside the admission, outside any ICU stay ('hospital' rows have no ICU stay).
    span = (row["OUTTIME"].to_numpy() - row["INTIME"].to_numpy()).astype(np.float64)
    time[~has] = (row["INTIME"].to_numpy() + (rng.random(len(table)) * span).astype(np.int64))[~has]
    _, sec, _, _ = charting.row_seconds(events, stays)  # the chart seconds the events are written at
    bounds = pd.Series(np.arange(len(events))).groupby(events["series"].to_numpy()).agg(["min", "max"])
    hours, ends = events["Hours"].to_numpy(), table["end"].to_numpy()
    intime, period = row["INTIME"].to_numpy(), row["END"].to_numpy()
    for name, idx in table[has].groupby("series").groups.items():  # per ICU stay (its rows are one run), its studies
        k = np.asarray(idx)
        a, b = bounds.loc[name, "min"], bounds.loc[name, "max"] + 1
        time[k] = intime[k[0]] + cxr.study_seconds(ends[k], period[k[0]], hours[a:b], sec[a:b], placement)
    studies = pd.DataFrame({"SUBJECT_ID": table["patient"].to_numpy(np.int64), "STUDY_ID": table["key"].astype(np.int64),
                            "TIME": time, "VIEW": "AP"})
    cells = table[[f"CELL:{n}" for n in label_names]].rename(columns=lambda c: c[5:])
    extra, extra_cells, no_labels = _distractor_studies(studies, cells, stays, rng, dropped)
    metadata = cxr.images(pd.concat([studies, extra, no_labels], ignore_index=True), rng, dropped)
    labels = cxr.chexpert(pd.concat([studies, extra], ignore_index=True), pd.concat([cells, extra_cells], ignore_index=True),
                          label_names)
    return cxr.write(out, metadata, labels, label_names)


def _distractor_studies(studies: pd.DataFrame, cells: pd.DataFrame, stays, rng, dropped):
    """Studies the build drops, with their CheXpert cells; and AP studies without a CheXpert row."""
    n = max(1, len(studies) // 50)
    pick = studies.iloc[rng.integers(0, len(studies), n)]
    next_id = [STUDY_BASE]
    parts, part_cells = [], []

    def new(subject, time, view) -> pd.DataFrame:
        subject = np.asarray(subject, dtype=np.int64)
        ids = np.arange(next_id[0], next_id[0] + len(subject))
        next_id[0] += len(subject)
        return pd.DataFrame({"SUBJECT_ID": subject, "STUDY_ID": ids, "TIME": np.asarray(time, dtype=np.int64), "VIEW": view})

    def add(subject, time, view, step) -> None:
        frame = new(subject, time, view)
        parts.append(frame)
        part_cells.append(pd.DataFrame("", index=range(len(frame)), columns=cells.columns))
        dropped.add(step, len(frame))

    add(pick["SUBJECT_ID"], pick["TIME"] + DAY, "PA", "cxr:ap_study")  # PA images only
    add(NO_ADMISSION_SUBJECT + np.arange(n), pick["TIME"], "AP", "cxr:admitted_subject")
    dead = stays.role("death").drop_duplicates("SUBJECT_ID")
    add(dead["SUBJECT_ID"], dead["DEATH"].to_numpy() + 5 * DAY, "AP", "cxr:after_death")
    outside = stays.role("transfer").drop_duplicates("SUBJECT_ID")  # admitted, in no split of the task
    add(outside["SUBJECT_ID"], outside["DISCH"].to_numpy() + 30 * DAY, "AP", "diagnosis:in_split")
    no_labels = new(pick["SUBJECT_ID"], pick["TIME"] + 2 * DAY, "AP")
    dropped.add("cxr:chexpert", n)
    return pd.concat(parts, ignore_index=True), pd.concat(part_cells, ignore_index=True), no_labels


def _modalities(spec, table: pd.DataFrame, stays, dropped) -> None:
    """The task rows' own attrition (a unit per missing modality): the samples kept without a note or a
    series, and the distractor studies outside the split."""
    cohort = stays.role("cohort")
    dropped.add("phenotyping:note", int((discharge.pmh(cohort["NOTE"].fillna("")) == "").sum()))
    if spec.kind != "diagnosis":
        return
    outside = dropped.n.get("diagnosis:in_split", 0)
    without = int((table["series"] == "").sum())
    dropped.add("diagnosis:in_icu_stay", without + outside)
    first = table.groupby(table["series"].where(table["series"] != "", table["key"]), sort=False)["note"].transform("first")
    dropped.add("diagnosis:note", int((discharge.pmh(first) == "").sum()) + outside)
