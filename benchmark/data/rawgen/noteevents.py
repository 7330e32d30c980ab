"""NOTEEVENTS: each stay's note as the first notes of its ICU stay, and notes the build must not use.

A stay with a note gets it as 1-5 NOTEEVENTS rows, its words cut in order, charted one after another
within 48 h of the ICU admission, each as a clinician types it (a capital letter, a full stop, a line
break), which the build's cleaning undoes; a stay whose note is cut in 5 gets a sixth row later in the
48 h, beyond the first five. Distractors, counted by the attrition row that drops them: notes before
the ICU admission or after its first 48 h, discharge summaries (a chart date, no chart time), notes of
the distractor stays' admissions. The build joins and cleans the first five, so a note comes back
with its whitespace runs made single spaces (the generator writes a double space where a note has no
history phrase).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema
from .charting import Dropped

WINDOW = 48 * 3600
CATEGORIES = ["Nursing/other", "Radiology", "Nursing", "ECG", "Physician ", "Echo", "Respiratory "]


def _pieces(note: str, k: int) -> list[str]:
    words = note.split()
    cuts = np.linspace(0, len(words), k + 1).round().astype(int)
    return [" ".join(words[a:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _typed(text: str, rng) -> str:
    text = text[:1].upper() + text[1:] + "."
    if " " in text and rng.random() < 0.5:  # a line break for one space
        at = text.index(" ")
        text = text[:at] + "\n" + text[at + 1:]
    return text


def cohort_rows(stays: pd.DataFrame, notes: list[str], rng, dropped: Dropped) -> pd.DataFrame:
    """Rows of the cohort's notes (``stays``: SUBJECT_ID, HADM_ID, INTIME; ``notes``: one per stay, '' for none)."""
    out = []
    for i, note in enumerate(notes):
        s = stays.iloc[i]
        if note:
            parts = _pieces(note, int(rng.integers(1, 6)))
            times = np.sort(rng.choice(WINDOW // 60, size=len(parts) + 1, replace=False)) * 60
            for text, t in zip(parts, times):
                out.append((s.SUBJECT_ID, s.HADM_ID, s.INTIME + t, _typed(text, rng), s.INTIME + t))
            if len(parts) == 5:
                out.append((s.SUBJECT_ID, s.HADM_ID, s.INTIME + times[-1], "Addendum: seen again, plan unchanged.",
                            s.INTIME + times[-1]))
                dropped.add("notes:first_five", 1)
        if rng.random() < 0.3:  # outside the first 48 h, either side
            t = -int(rng.integers(60, 24 * 3600)) if rng.random() < 0.5 else WINDOW + int(rng.integers(60, 96 * 3600))
            out.append((s.SUBJECT_ID, s.HADM_ID, s.INTIME + t, "Nursing progress note: outside the window.", s.INTIME + t))
            dropped.add("notes:first_48h", 1)
        if rng.random() < 0.2:  # a discharge summary: chart date only
            out.append((s.SUBJECT_ID, s.HADM_ID, np.nan, "Discharge summary: not charted at a time.", s.DISCH))
            dropped.add("notes:chart_time", 1)
    return _frame(out, rng)


def other_rows(stays: pd.DataFrame, rng, dropped: Dropped) -> pd.DataFrame:
    """A note of each of ``stays`` (distractor stays outside the cohort) in its first 48 h."""
    t = stays["INTIME"].to_numpy() + rng.integers(0, WINDOW, len(stays))
    rows = list(zip(stays["SUBJECT_ID"], stays["HADM_ID"], t, ["Note of a stay the build drops."] * len(stays), t))
    dropped.add("notes:admission", len(rows))
    return _frame(rows, rng)


def _frame(rows: list[tuple], rng) -> pd.DataFrame:
    """(subject, admission, chart time or NaN, text, the time its chart date is of) -> NOTEEVENTS rows."""
    subject, hadm, time, text, day = (list(c) for c in zip(*rows)) if rows else ([], [], [], [], [])
    time, day = np.array(time, dtype=np.float64), np.array(day, dtype=np.float64)
    return frame(np.array(subject, dtype=np.int64), np.array(hadm, dtype=np.int64), time, day,
                 np.array(text, dtype=object), rng)


def frame(subject, hadm, time, day, text, rng) -> pd.DataFrame:
    n = len(subject)
    untimed = np.isnan(time)
    category = np.where(untimed, "Discharge summary", np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)])
    return pd.DataFrame({"SUBJECT_ID": subject, "HADM_ID": hadm,
                         "CHARTDATE": pd.Series(schema.timestamps(day // 86_400 * 86_400)).dt.strftime("%Y-%m-%d").to_numpy(),
                         "CHARTTIME": schema.timestamps(time), "STORETIME": schema.timestamps(np.where(untimed, day, time) + 600),
                         "CATEGORY": category, "DESCRIPTION": "Report", "CGID": rng.integers(14_000, 21_000, n),
                         "ISERROR": np.nan, "TEXT": text})
