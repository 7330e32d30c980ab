"""The FlexCare/MIRACL MIMIC-IV listfiles: ``{phenotyping,diagnosis}/{train,val,test}_multimodal_listfile.csv``.

Layout ``mimic4`` of ``loaders``, MIRACL's columns (FlexCare's ``dicom_id`` column is not written):

- phenotyping: ``subject_id, stay_id, time_series, period_length, past_medical_history, <25 labels>``,
  one row per cohort stay with an episode file, ``period_length`` its length of stay in hours;
- diagnosis: ``subject_id, study_id, time_series, period_len, past_medical_history, <14 labels>``,
  one row per AP study (``cxr``). The study's ICU stay is the cohort stay of its subject whose
  [INTIME, OUTTIME] holds the study time, and ``period_len`` the hours from INTIME to the study (0 when
  the study is in no cohort stay). The study has a series, its stay's episode file read up to
  ``period_len``, only when that is more than 4 hours and not before the file's first row; otherwise
  ``time_series`` is empty (a sample without EHR, not a dropped one).

Both take the note of the admission: the stay's, or the admission whose [ADMITTIME, DISCHTIME] holds
the study time; '' without one. Rows go to the split of their subject (``tvtset``); a subject the split
does not list leaves the task (only possible with a given split file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .steps import Attrition, write_csv
from .tvtset import NAMES

SPLITS = ("train", "val", "test")
MIN_HOURS = 4.0


def _split(table: pd.DataFrame, split: pd.DataFrame, task: str, unit: str, att: Attrition) -> dict[str, pd.DataFrame]:
    which = split.set_index("SUBJECT_ID")["SPLIT"].reindex(table["subject_id"].to_numpy()).to_numpy()
    listed = ~np.isnan(which)
    att.add(f"{task}:in_split", int(listed.sum()), int((~listed).sum()), "subject not in the patient split", unit)
    return {NAMES[k]: table[which == k] for k in (0, 1, 2)}


def _modality(att: Attrition, task: str, unit: str, n: int, kept: int, name: str, reason: str) -> None:
    """Rows of a unit of their own (what the task's samples have), so that the sample chain is not cut."""
    att.add(f"{task}:{name}", kept, n - kept, reason, unit)


def phenotyping(episodes: pd.DataFrame, stays: pd.DataFrame, labels: pd.DataFrame, notes: pd.DataFrame,
                split: pd.DataFrame, label_names: list[str]) -> tuple[dict[str, pd.DataFrame], Attrition]:
    table = episodes.merge(stays[["ICUSTAY_ID", "HADM_ID"]], on="ICUSTAY_ID")
    table = table.merge(notes, on=["SUBJECT_ID", "HADM_ID"], how="left").merge(labels, on="ICUSTAY_ID", how="left")
    table = table.sort_values(["SUBJECT_ID", "EPISODE"], kind="stable")
    out = pd.DataFrame({"subject_id": table["SUBJECT_ID"].to_numpy(), "stay_id": table["ICUSTAY_ID"].to_numpy(),
                        "time_series": table["stay"].to_numpy(), "period_length": table["period_length"].to_numpy(),
                        "past_medical_history": table["past_medical_history"].fillna("").to_numpy()})
    for name in label_names:
        out[name] = table[name].fillna(0).astype("int64").to_numpy()
    att = Attrition()
    parts = _split(out, split, "phenotyping", "stays", att)
    att.add("phenotyping:stays", len(out), 0, "stays of the task", "stays (note)")
    _modality(att, "phenotyping", "stays (note)", len(out), int((out["past_medical_history"] != "").sum()), "note",
              "no past medical history (no discharge summary, or none with the section): empty note, stay kept")
    return parts, att


def _within(events: pd.DataFrame, spans: pd.DataFrame, start: str, end: str, key: str) -> pd.Series:
    """Per row of ``events`` (SUBJECT_ID, TIME; sorted by TIME) the ``key`` of the span of its subject
    holding TIME (the latest starting one), NaN if none: an as-of join, never a per-row loop."""
    spans = spans.sort_values(start, kind="stable")
    hit = pd.merge_asof(events[["SUBJECT_ID", "TIME"]].reset_index(), spans[["SUBJECT_ID", start, end, key]],
                        left_on="TIME", right_on=start, by="SUBJECT_ID", direction="backward")
    inside = hit[end].notna() & (hit["TIME"] <= hit[end])
    return pd.Series(hit[key].where(inside).to_numpy(), index=hit["index"].to_numpy()).reindex(events.index)


def diagnosis(studies: pd.DataFrame, stays: pd.DataFrame, episodes: pd.DataFrame, admissions: pd.DataFrame,
              notes: pd.DataFrame, split: pd.DataFrame, label_names: list[str]) -> tuple[dict[str, pd.DataFrame], Attrition]:
    studies = studies.sort_values("TIME", kind="stable")
    stay = _within(studies, stays, "INTIME", "OUTTIME", "ICUSTAY_ID")
    hadm = _within(studies, admissions, "ADMITTIME", "DISCHTIME", "HADM_ID")
    info = stays.set_index("ICUSTAY_ID").reindex(stay.to_numpy())
    hours = ((studies["TIME"].to_numpy() - info["INTIME"].to_numpy()) / np.timedelta64(1, "h"))
    in_stay = stay.notna().to_numpy()
    files = episodes.set_index("ICUSTAY_ID").reindex(stay.to_numpy())
    series = in_stay & files["stay"].notna().to_numpy() & (hours > MIN_HOURS) & (hours >= files["first_hours"].to_numpy())
    note = notes.set_index(["SUBJECT_ID", "HADM_ID"])["past_medical_history"]
    keys = pd.MultiIndex.from_arrays([studies["SUBJECT_ID"].to_numpy(), hadm.fillna(-1).astype("int64").to_numpy()])
    out = pd.DataFrame({"subject_id": studies["SUBJECT_ID"].to_numpy(), "study_id": studies["STUDY_ID"].to_numpy(),
                        "time_series": np.where(series, files["stay"].fillna("").to_numpy(), ""),
                        "period_len": np.where(in_stay, hours, 0.0),
                        "past_medical_history": note.reindex(keys).fillna("").to_numpy()})
    for name in label_names:
        out[name] = studies[name].to_numpy()
    out = out.sort_values(["subject_id", "study_id"], kind="stable")
    att = Attrition()
    n = len(out)
    parts = _split(out, split, "diagnosis", "studies", att)
    att.add("diagnosis:studies", n, 0, "studies of the task", "studies (series)")
    _modality(att, "diagnosis", "studies (series)", n, int(in_stay.sum()), "in_icu_stay",
              "not during a cohort ICU stay: no series, study kept")
    _modality(att, "diagnosis", "studies (series)", int(in_stay.sum()), int(series.sum()), "series",
              f"within {MIN_HOURS:g} h of ICU admission, before the stay's first row, or the stay has no episode file: "
              "no series, study kept")
    att.add("diagnosis:studies_note", n, 0, "studies of the task", "studies (note)")
    _modality(att, "diagnosis", "studies (note)", n, int((out["past_medical_history"] != "").sum()), "note",
              "not during an admission with a past medical history: empty note, study kept")
    return parts, att


def write(parts: dict[str, pd.DataFrame], folder: Path, unit: str) -> Attrition:
    folder.mkdir(parents=True, exist_ok=True)
    att = Attrition()
    for split in SPLITS:
        write_csv(parts[split], folder / f"{split}_multimodal_listfile.csv")
        att.add(f"{folder.name}:{split}", len(parts[split]), 0, f"{split} split of the patient split (tvtset.csv)",
                f"{unit} ({split})")
    return att
