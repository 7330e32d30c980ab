"""Dates out of order: records whose own times contradict each other, dropped with a named reason.

The reference pipelines check none of these; a record whose dates contradict each other cannot be
placed in time, so the build drops it, counts it in ``attrition.csv`` and warns in the summary. On
the PhysioNet demos (MIMIC-III 1.4, MIMIC-IV 2.2) only one fires: 635 of MIMIC-III's chart events
carry the ICUSTAY_ID of a cohort stay but are charted before its INTIME (they would leave at the
episode step's ICU period anyway, so the series are the reference's). The checks, each an attrition
row:

- ``dates:icu_stay`` (stays): ICUSTAYS' OUTTIME before its INTIME;
- ``dates:admission`` (stays): the stay's admission has DISCHTIME before ADMITTIME;
- ``dates:death`` (stays): a death before the admission: ADMISSIONS' DEATHTIME before ADMITTIME, or
  the day of death of PATIENTS (DOD, a day) before the day of ADMITTIME;
- ``<table>:before_stay`` (events of CHARTEVENTS and OUTPUTEVENTS): an event whose ICUSTAY_ID names a
  cohort stay, charted before that stay's INTIME (an event without a stay id, as every LABEVENTS row,
  claims no stay: one charted before the ICU admission is outside the ICU period, not out of order);
- ``cxr:after_death`` (studies): a chest X-ray study dated after its subject's day of death. A study
  carries no stay or admission id (it is matched to the stay holding its time), so it cannot be dated
  before a stay of its own.

The stay checks come after the reference's cohort rules, so they never change which stays those rules
keep (an admission with two ICU stays loses both, whatever their dates). A check whose columns the
table lacks (the vendored MIMIC-III demo keeps only the columns the reference reads) is not run; its
attrition row says so.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

ADMISSION_TIMES = ("ADMITTIME", "DISCHTIME", "DEATHTIME")  # read when ADMISSIONS has them
DEATH_DAY = "DOD"  # PATIENTS
BEFORE_STAY = "dates out of order: charted before the INTIME of the ICU stay its ICUSTAY_ID names"
AFTER_DEATH = "dates out of order: dated after the subject's day of death (PATIENTS.DOD)"


def stay_checks(columns) -> list[tuple[str, Callable[[pd.DataFrame], pd.Series], str]]:
    """(step, stays -> which are kept, reason) per check, in order, for stays with INTIME, OUTTIME and
    whichever of the admission's ADMITTIME, DISCHTIME, DEATHTIME and the patient's DOD were read
    (``columns``; parsed). Each check is applied to the stays the one before kept."""
    have = set(columns)
    out = [("dates:icu_stay", lambda s: ~(s["OUTTIME"] < s["INTIME"]), "dates out of order: OUTTIME before INTIME (ICUSTAYS)")]
    if {"ADMITTIME", "DISCHTIME"} <= have:
        out.append(("dates:admission", lambda s: ~(s["DISCHTIME"] < s["ADMITTIME"]),
                    "dates out of order: the admission's DISCHTIME before its ADMITTIME (ADMISSIONS)"))
    else:
        out.append(("dates:admission", _everyone, "not checked: ADMISSIONS has no ADMITTIME and DISCHTIME columns"))
    checked = [what for cols, what in (({"DEATHTIME", "ADMITTIME"}, "ADMISSIONS.DEATHTIME before ADMITTIME"),
                                       ({DEATH_DAY, "ADMITTIME"}, "PATIENTS.DOD a day before ADMITTIME's")) if cols <= have]

    def alive(s: pd.DataFrame) -> pd.Series:
        died = pd.Series(False, index=s.index)
        if {"DEATHTIME", "ADMITTIME"} <= have:
            died |= s["DEATHTIME"] < s["ADMITTIME"]
        if {DEATH_DAY, "ADMITTIME"} <= have:
            died |= s[DEATH_DAY].dt.normalize() < s["ADMITTIME"].dt.normalize()
        return ~died

    out.append(("dates:death", alive, f"dates out of order: death before the admission ({'; '.join(checked)})" if checked
                else "not checked: no DEATHTIME in ADMISSIONS, no DOD in PATIENTS (or no ADMITTIME)"))
    return out


def _everyone(stays: pd.DataFrame) -> pd.Series:
    return pd.Series(True, index=stays.index)


def warnings(attrition: pd.DataFrame) -> list[str]:
    """A warning per date check that dropped something."""
    rows = attrition[attrition["step"].str.startswith("dates:") | attrition["step"].str.endswith(":before_stay")
                     | (attrition["step"] == "cxr:after_death")]
    return [f"dates out of order: {int(r.excluded):,} {r.unit} dropped at {r.step} ({r.reason.removeprefix('dates out of order: ')})"
            for r in rows.itertuples() if int(r.excluded) > 0]
