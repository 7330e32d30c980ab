"""Event validation (Harutyunyan's ``validate_events``): every event must belong to one cohort ICU stay.

In order: an event without an admission id is dropped; one whose admission is not a cohort stay's
admission of the same subject is dropped; one without an ICU stay id gets its admission's stay (each
cohort admission has exactly one ICU stay, so the stay is known); one whose ICU stay id is not its
admission's stay is dropped. LABEVENTS has no ICU stay column: all its events take the second path.
"""
from __future__ import annotations

import pandas as pd

REASONS = {
    "no_hadm": "no admission id (HADM_ID empty)",
    "other_hadm": "admission is not a cohort stay's admission of the same subject",
    "other_stay": "ICUSTAY_ID is not the admission's ICU stay",
}


def admissions(stays: pd.DataFrame) -> pd.DataFrame:
    """The lookup: index HADM_ID -> SUBJECT_ID, ICUSTAY_ID of the cohort's stays."""
    return stays.set_index("HADM_ID")[["SUBJECT_ID", "ICUSTAY_ID"]]


def validate(events: pd.DataFrame, lookup: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The events that pass, with ICUSTAY_ID filled in (int64), and the count per reason
    (plus 'recovered': events that got their admission's stay id)."""
    counts = {}
    has_hadm = events["HADM_ID"].notna()
    counts["no_hadm"] = int((~has_hadm).sum())
    events = events[has_hadm]
    hadm = events["HADM_ID"].astype("int64")
    subject = lookup["SUBJECT_ID"].reindex(hadm.to_numpy()).to_numpy()
    ok = subject == events["SUBJECT_ID"].to_numpy()  # NaN (unknown admission) compares unequal
    counts["other_hadm"] = int((~ok).sum())
    events, hadm = events[ok], hadm[ok]
    stay = lookup["ICUSTAY_ID"].reindex(hadm.to_numpy()).to_numpy()
    given = events["ICUSTAY_ID"] if "ICUSTAY_ID" in events else pd.Series(float("nan"), index=events.index)
    missing = given.isna().to_numpy()
    counts["recovered"] = int(missing.sum())
    same = missing | (given.to_numpy() == stay)
    counts["other_stay"] = int((~same).sum())
    events = events[same].assign(ICUSTAY_ID=stay[same].astype("int64"))
    return events, counts
