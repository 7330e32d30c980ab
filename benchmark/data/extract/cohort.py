"""The cohort (Harutyunyan's ``extract_subjects``): which ICU stays of MIMIC-III or MIMIC-IV become samples.

In order, as the reference applies them: ICU stays with a transfer (first and last care unit, or first
and last ward, differ; MIMIC-IV has no ward ids, so there the care units alone) are dropped; stays
without their ADMISSIONS or PATIENTS row are dropped (none in MIMIC-III 1.4); then every stay of an
admission that still has more than one ICU stay; then stays of patients younger than 18 at ICU
admission. Then, beyond the reference, stays whose dates are out of order (``dates``). A subject's
stays are numbered by admission time: the episode ``k`` of ``{subject}_episode{k}_timeseries.csv``.

The tables come with their timestamps parsed (``tables.times``, which names the file, column and row
of a malformed one): ICUSTAYS' INTIME and OUTTIME, PATIENTS' DOB (MIMIC-III), and where read,
ADMISSIONS' ADMITTIME, DISCHTIME, DEATHTIME and PATIENTS' DOD.

Age is the calendar age at ICU admission. MIMIC-III shifts the birth date of patients older than 89
by about 300 years, further than a nanosecond timestamp difference reaches, so it is computed from
the calendar fields, which cannot overflow. MIMIC-IV has no birth date: a patient's age is given in
one (shifted) year, ``anchor_age`` in ``anchor_year``, so the age at ICU admission is
``anchor_age + year(INTIME) - anchor_year`` (the reference's rule; patients over 89 have anchor_age 91).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import dates
from .steps import Attrition

MIN_AGE = 18
ICUSTAYS = ("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "FIRST_CAREUNIT", "LAST_CAREUNIT", "FIRST_WARDID",
            "LAST_WARDID", "INTIME", "OUTTIME", "LOS")
ADMISSIONS = ("SUBJECT_ID", "HADM_ID")
PATIENTS = ("SUBJECT_ID", "DOB")
ICUSTAYS_IV = ("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "FIRST_CAREUNIT", "LAST_CAREUNIT", "INTIME", "OUTTIME", "LOS")
PATIENTS_IV = ("SUBJECT_ID", "ANCHOR_AGE", "ANCHOR_YEAR")


def age_years(born: pd.Series, at: pd.Series) -> np.ndarray:
    """Whole years from ``born`` to ``at`` (birthday reached or not), from the calendar fields."""
    before_birthday = (at.dt.month < born.dt.month) | ((at.dt.month == born.dt.month) & (at.dt.day < born.dt.day))
    return (at.dt.year - born.dt.year - before_birthday.astype(int)).to_numpy()


@dataclass(frozen=True)
class Rules:
    """What differs between the databases: how a transfer shows and how the age is known."""

    patient_columns: tuple[str, ...]
    same_unit: Callable[[pd.DataFrame], pd.Series]  # ICU stays -> no transfer
    age: Callable[[pd.DataFrame], np.ndarray]  # stays with their patient's columns and INTIME parsed -> years
    transfer: str  # the reason of the transfer rule, in words


def _same_unit_and_ward(stays: pd.DataFrame) -> pd.Series:
    return (stays["FIRST_CAREUNIT"] == stays["LAST_CAREUNIT"]) & (stays["FIRST_WARDID"] == stays["LAST_WARDID"])


def _age_from_birth(stays: pd.DataFrame) -> np.ndarray:
    return age_years(stays["DOB"], stays["INTIME"])


def _age_from_anchor(stays: pd.DataFrame) -> np.ndarray:
    return (stays["ANCHOR_AGE"] + stays["INTIME"].dt.year - stays["ANCHOR_YEAR"]).to_numpy()


MIMIC3 = Rules(("DOB",), _same_unit_and_ward, _age_from_birth, "transfer between care units or wards during the ICU stay")
MIMIC4 = Rules(("ANCHOR_AGE", "ANCHOR_YEAR"), lambda s: s["FIRST_CAREUNIT"] == s["LAST_CAREUNIT"], _age_from_anchor,
               "transfer between care units during the ICU stay")


def select(icustays: pd.DataFrame, admissions: pd.DataFrame, patients: pd.DataFrame,
           rules: Rules = MIMIC3) -> tuple[pd.DataFrame, Attrition]:
    """The cohort's stays (SUBJECT_ID, HADM_ID, ICUSTAY_ID, INTIME, OUTTIME, LOS, AGE, EPISODE) and the attrition.

    ``admissions`` has SUBJECT_ID, HADM_ID and any of ``dates.ADMISSION_TIMES``; ``patients`` the rules'
    columns and, if read, DOD; every timestamp parsed."""
    att = Attrition()
    stays = icustays.copy()
    att.add("icustays", len(stays), 0, "ICU stays in ICUSTAYS", "stays")

    def keep(mask: pd.Series, step: str, reason: str) -> None:
        nonlocal stays
        att.add(step, int(mask.sum()), int((~mask).sum()), reason, "stays")
        stays = stays[mask.to_numpy()]

    keep(rules.same_unit(stays), "transfers", rules.transfer)
    known = (stays.set_index(["SUBJECT_ID", "HADM_ID"]).index.isin(admissions.set_index(["SUBJECT_ID", "HADM_ID"]).index)
             & stays["SUBJECT_ID"].isin(patients["SUBJECT_ID"]).to_numpy())
    keep(pd.Series(known, index=stays.index), "admission_rows", "no ADMISSIONS or PATIENTS row for the stay")
    per_admission = stays.groupby("HADM_ID")["ICUSTAY_ID"].transform("size")
    keep(per_admission == 1, "one_icu_stay", "admission with more than one ICU stay (all of its stays)")
    patient = patients[["SUBJECT_ID", *rules.patient_columns]].drop_duplicates("SUBJECT_ID")
    stays = stays.merge(patient, on="SUBJECT_ID", how="left")
    stays["AGE"] = rules.age(stays)
    keep(stays["AGE"] >= MIN_AGE, "adults", f"younger than {MIN_AGE} at ICU admission")
    timed = [c for c in dates.ADMISSION_TIMES if c in admissions]
    stays = stays.merge(admissions[["SUBJECT_ID", "HADM_ID", *timed]].drop_duplicates(["SUBJECT_ID", "HADM_ID"]),
                        on=["SUBJECT_ID", "HADM_ID"], how="left")
    if dates.DEATH_DAY in patients:
        stays = stays.merge(patients[["SUBJECT_ID", dates.DEATH_DAY]].drop_duplicates("SUBJECT_ID"), on="SUBJECT_ID",
                            how="left")
    for step, kept, reason in dates.stay_checks(stays.columns):
        keep(kept(stays), step, reason)
    stays = stays.sort_values(["SUBJECT_ID", "INTIME", "ICUSTAY_ID"], kind="stable")
    stays["EPISODE"] = stays.groupby("SUBJECT_ID").cumcount() + 1
    columns = ["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "INTIME", "OUTTIME", "LOS", "AGE", "EPISODE"]
    return stays[columns].reset_index(drop=True), att
