"""Notes in the style of Khadanga et al. (MIRACL's ``mimic3note``): the first notes of an ICU stay.

A NOTEEVENTS row belongs to the cohort stay of its admission (HADM_ID; each cohort admission has one
ICU stay). Every category is kept, as the reference does (its discharge-summary filter is commented
out); a row without a chart time is dropped. Notes with 0 <= CHARTTIME - INTIME <= 48 h are kept, the
first 5 by chart time are joined with spaces, lower-cased, and stripped of ASCII punctuation and line
breaks (whitespace runs become one space).

Named switch ``first_admission_only`` (off by default): the reference's extraction overwrites its
per-admission frame inside its loop over a subject's admissions, so only the subject's first ICU stay
(episode 1) can receive notes (spec 11.7, B21). On, every later episode gets an empty note, as there.

NOTEEVENTS is streamed in chunks; only the 5 earliest notes per stay seen so far are kept between
chunks, so memory is bounded by 5 notes per stay. Without the table, or with an empty one (the
PhysioNet demo ships NOTEEVENTS with its header only), every stay gets an empty note.
"""
from __future__ import annotations

import string

import numpy as np
import pandas as pd

from . import tables
from .steps import Attrition

NOTEEVENTS = ("SUBJECT_ID", "HADM_ID", "CHARTTIME", "TEXT")
WINDOW_HOURS = 48.0
FIRST_NOTES = 5
_PUNCTUATION = "[" + "".join("\\" + c for c in string.punctuation) + "]"


def clean_text(text: pd.Series) -> pd.Series:
    """Lower case, no ASCII punctuation, no line breaks, single spaces."""
    out = text.str.lower().str.replace(_PUNCTUATION, "", regex=True)
    return out.str.replace(r"\s+", " ", regex=True).str.strip()


def _earliest(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values(["ICUSTAY_ID", "TIME", "ORDER"], kind="stable")
    return frame[frame.groupby("ICUSTAY_ID").cumcount() < FIRST_NOTES]


def extract(table: tables.Table | None, stays: pd.DataFrame, first_admission_only: bool, log,
            chunk_rows: int = 200_000) -> tuple[pd.DataFrame, Attrition]:
    """Per cohort stay (ICUSTAY_ID) its note text ('' if none), and the attrition of the note rows."""
    att = Attrition()
    out = pd.DataFrame({"ICUSTAY_ID": stays["ICUSTAY_ID"].to_numpy(), "notes": ""})
    if table is None:
        log("      NOTEEVENTS not found: every stay gets an empty note (the note modality is absent)")
        att.add("noteevents", 0, 0, "NOTEEVENTS not found: no notes, every stay's note is empty", "notes")
        return out, att
    eligible = stays if not first_admission_only else stays[stays["EPISODE"] == 1]
    info = eligible.set_index("HADM_ID")[["ICUSTAY_ID", "INTIME"]]
    counts = {"read": 0, "no_time": 0, "other_admission": 0, "outside": 0}
    kept, order = None, 0
    dtypes = {"SUBJECT_ID": "int64", "HADM_ID": "float64", "CHARTTIME": str, "TEXT": str}
    for chunk in tables.chunks(table, dtypes, chunk_rows):
        counts["read"] += len(chunk)
        time = tables.times(chunk["CHARTTIME"], table, "CHARTTIME")
        timed = time.notna() & chunk["HADM_ID"].notna()
        counts["no_time"] += int((~timed).sum())
        chunk, time = chunk[timed], time[timed]
        match = info.reindex(chunk["HADM_ID"].astype("int64").to_numpy())
        ours = match["ICUSTAY_ID"].notna().to_numpy()
        counts["other_admission"] += int((~ours).sum())
        hours = (time.to_numpy()[ours] - match["INTIME"].to_numpy()[ours]) / np.timedelta64(1, "h")
        inside = (hours >= 0) & (hours <= WINDOW_HOURS)
        counts["outside"] += int((~inside).sum())
        new = pd.DataFrame({"ICUSTAY_ID": match["ICUSTAY_ID"].to_numpy()[ours][inside].astype("int64"),
                            "TIME": time.to_numpy()[ours][inside], "TEXT": chunk["TEXT"].fillna("").to_numpy()[ours][inside]})
        new["ORDER"] = range(order, order + len(new))  # ties in chart time keep the table's order
        order += len(new)
        kept = _earliest(new if kept is None else pd.concat([kept, new], ignore_index=True))
    in_window = counts["read"] - counts["no_time"] - counts["other_admission"] - counts["outside"]
    used = 0 if kept is None else len(kept)
    if counts["read"] == 0:
        log("      NOTEEVENTS has no rows (the PhysioNet demo's is empty): every stay gets an empty note")
    if kept is not None and len(kept):
        joined = kept.groupby("ICUSTAY_ID", sort=False)["TEXT"].agg(" ".join)
        text = clean_text(joined)
        out["notes"] = text.reindex(out["ICUSTAY_ID"].to_numpy()).fillna("").to_numpy()
    att.add("noteevents", counts["read"], 0, "rows of NOTEEVENTS" + ("" if counts["read"] else
                                                                       " (none: every stay's note is empty)"), "notes")
    left = counts["read"] - counts["no_time"]
    att.add("notes:chart_time", left, counts["no_time"], "no CHARTTIME or no HADM_ID", "notes")
    left -= counts["other_admission"]
    why = "admission is not a cohort stay's" + (" (first_admission_only: or not the subject's episode 1)"
                                               if first_admission_only else "")
    att.add("notes:admission", left, counts["other_admission"], why, "notes")
    att.add("notes:first_48h", in_window, counts["outside"], "outside 0-48 h after ICU admission", "notes")
    att.add("notes:first_five", used, in_window - used, f"beyond the first {FIRST_NOTES} of the stay", "notes")
    return out, att
