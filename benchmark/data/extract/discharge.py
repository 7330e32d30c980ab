"""MIMIC-IV notes (FlexCare's ``extract_multimodal_data``): the past medical history of an admission's
discharge summary.

MIMIC-IV-Note's ``discharge`` table holds the discharge summaries, one row per note with its
SUBJECT_ID and HADM_ID. The note of an admission is the section of its summary that starts at
"past medical history:" and ends at "social history" (the text's end when no such heading follows),
lower-cased, stripped of ASCII punctuation and line breaks, whitespace runs made one space (so the
text has no comma, as the reference's comma-split loaders need). A summary without the heading gives
no note. An admission with several summaries keeps its first by chart time (the table's order for
ties); the later ones are counted, not used.

The table is streamed in chunks (MIMIC-IV-Note 2.2 has ~330 k summaries, ~1.1 GB of text): each
chunk is cut to its sections at once, so only the sections (a few hundred characters each) are kept.
Every admission's note is kept, not only the cohort's: the diagnosis task reads the admissions its
chest X-rays fall in.
"""
from __future__ import annotations

import re

import pandas as pd

from . import tables
from .notes import clean_text
from .steps import Attrition

DISCHARGE = ("SUBJECT_ID", "HADM_ID", "CHARTTIME", "TEXT")
START, END = "past medical history:", "social history"
_SECTION = re.compile(re.escape(START) + r"(.*?)(?:" + re.escape(END) + r"|\Z)", re.S)
CHUNK_ROWS = 20_000  # ~200 MB of note text per chunk


def section(text: pd.Series) -> pd.Series:
    """The cleaned past-medical-history section of each text; NaN where there is no heading."""
    found = text.str.lower().str.extract(_SECTION, expand=False)
    return clean_text(found).where(found.notna())


def extract(table: tables.Table | None, log, chunk_rows: int = CHUNK_ROWS) -> tuple[pd.DataFrame, Attrition]:
    """Per admission (SUBJECT_ID, HADM_ID) its past_medical_history, and the attrition of the summaries."""
    att = Attrition()
    empty = pd.DataFrame({"SUBJECT_ID": pd.Series(dtype="int64"), "HADM_ID": pd.Series(dtype="int64"),
                          "past_medical_history": pd.Series(dtype=str)})
    if table is None:
        att.add("discharge", 0, 0, "MIMIC-IV-Note not given (--note): no notes, every past_medical_history is empty",
                "notes")
        return empty, att
    counts = {"read": 0, "no_hadm": 0}
    parts, order = [], 0
    dtypes = {"SUBJECT_ID": "int64", "HADM_ID": "float64", "CHARTTIME": str, "TEXT": str}
    for i, chunk in enumerate(tables.chunks(table, dtypes, chunk_rows), 1):
        counts["read"] += len(chunk)
        known = chunk["HADM_ID"].notna()
        counts["no_hadm"] += int((~known).sum())
        chunk = chunk[known]
        parts.append(pd.DataFrame({
            "SUBJECT_ID": chunk["SUBJECT_ID"].to_numpy(), "HADM_ID": chunk["HADM_ID"].astype("int64").to_numpy(),
            "TIME": tables.times(chunk["CHARTTIME"], table, "CHARTTIME").to_numpy(),
            "ORDER": range(order, order + len(chunk)), "past_medical_history": section(chunk["TEXT"].fillna("")).to_numpy()}))
        order += len(chunk)
        if i % 5 == 0:
            log(f"      discharge: {counts['read']:,} summaries read")
    frame = pd.concat(parts, ignore_index=True) if parts else empty.assign(TIME=pd.NaT, ORDER=0)
    frame = frame.sort_values(["SUBJECT_ID", "HADM_ID", "TIME", "ORDER"], kind="stable", na_position="last")
    first = ~frame.duplicated(["SUBJECT_ID", "HADM_ID"])
    later = int((~first).sum())
    frame = frame[first.to_numpy()]
    has = frame["past_medical_history"].notna() & (frame["past_medical_history"] != "")
    out = frame.loc[has.to_numpy(), ["SUBJECT_ID", "HADM_ID", "past_medical_history"]].reset_index(drop=True)
    left = counts["read"]
    att.add("discharge", left, 0, "discharge summaries (MIMIC-IV-Note)", "notes")
    left -= counts["no_hadm"]
    att.add("notes:admission_id", left, counts["no_hadm"], "no HADM_ID", "notes")
    left -= later
    att.add("notes:one_per_admission", left, later, "a later summary of the same admission (the first by chart time kept)",
            "notes")
    att.add("notes:past_medical_history", len(out), left - len(out),
            f"no '{START}' heading, or an empty section before '{END}'", "notes")
    log(f"      {counts['read']:,} discharge summaries, {len(out):,} admissions with a past medical history")
    return out, att
