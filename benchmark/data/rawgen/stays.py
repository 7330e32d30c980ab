"""PATIENTS, ADMISSIONS, ICUSTAYS (and MIMIC-III's TRANSFERS): the generator's stays as MIMIC-III or
MIMIC-IV ICU stays, and stays that the build's cohort rules must drop.

Every generator stay with a series becomes one ICU stay of its own admission, of an adult, without a
transfer (first and last care unit and ward alike), so the build keeps it. Its ids are the task's:
``SUBJECT_ID`` the patient id, ``ICUSTAY_ID`` the listfile's ``stay_id``; a patient's stays follow one
another in the generator's order, so the build numbers its episodes as the generator does. ``LOS`` is
the generator's period in days at full precision (MIMIC-III rounds it to 4 decimals, ~9 s): the
build's ``period_length`` is ``LOS`` x 24, and the discretiser's number of hourly bins hangs on it.

The other stays (``DISTRACTORS``) belong to subjects of their own and each breaks one rule, named by
the attrition row that must drop it: a transfer between care units or wards, an ICU stay without its
ADMISSIONS row, an admission with two ICU stays, a child, dates out of order (OUTTIME before INTIME,
a discharge before the admission, a death before it), a stay without ``LOS``, one without events,
one whose events all fall before the ICU admission. Times are whole seconds in MIMIC's shifted years
(2100-2200); patients over 89 have the ~300-year birth date shift MIMIC-III gives them.

A cohort row may be ``ROLE`` 'hospital': an admission without an ICU stay (a diagnosis task's chest
X-ray outside the ICU), whose ICU times only place the study; no ICU stay is written for it.

MIMIC-IV (``write_mimic4``) has no birth date and no ward ids: a patient's age is ``anchor_age`` in
``anchor_year`` (one of the years of the first admission, up to two before; 91 for patients over 89,
as MIMIC-IV gives them), so the build's ``anchor_age + year(intime) - anchor_year`` is 18 or more
exactly for the adults; the day of death is ``dod``. TRANSFERS is not written: the build does not read
it (a transfer is a change between ICUSTAYS' first and last care unit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import schema

DAY, YEAR = 86_400, 365.25 * 86_400
EPOCH = int(np.datetime64("2100-01-01T00:00:00", "s").astype(np.int64))
UNITS = ["MICU", "SICU", "CCU", "CSRU", "TSICU"]
# Distractor kind -> the attrition row (unit 'stays') that drops it.
DISTRACTORS = {"transfer": "transfers", "ward": "transfers", "no_admission": "admission_rows",
               "two_icu_stays": "one_icu_stay", "child": "adults", "icu_dates": "dates:icu_stay",
               "admission_dates": "dates:admission", "death": "dates:death", "no_los": "length_of_stay",
               "no_events": "events_in_icu", "outside": "events_in_icu"}
# Dropped at the stays step: their subjects have no cohort stay, so their events leave at cohort_subjects.
NON_COHORT = ("transfer", "ward", "no_admission", "two_icu_stays", "child", "icu_dates", "admission_dates", "death")
UNITS_IV = ["Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)", "Coronary Care Unit (CCU)",
            "Cardiac Vascular Intensive Care Unit (CVICU)", "Trauma SICU (TSICU)"]
YEAR_GROUPS = ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"]
OVER_89 = 91  # MIMIC-IV's anchor_age of every patient older than 89
SUBJECT_BASE, HADM_BASE, STAY_BASE = 19_000_000, 29_000_000, 39_000_000  # distractor ids (the task's are below)
COHORT_HADM_OFFSET = -10_000_000  # a cohort stay's admission: its stay id - 10,000,000


@dataclass
class Stays:
    """Every ICU stay written, one row each: ids, ROLE ('cohort' or a distractor kind), SYSTEM
    ('carevue'/'metavision'), times in seconds (ADMIT, INTIME, OUTTIME, DISCH, DOB, DEATH: NaN but for a
    death before the admission), LOS (days, NaN for none) and END (hours: LOS x 24 as the build computes
    it; the timeline's length for a stay without LOS)."""

    table: pd.DataFrame

    def role(self, *roles: str) -> pd.DataFrame:
        return self.table[self.table["ROLE"].isin(roles)]

    def excluded(self) -> dict[str, int]:
        """Stays each attrition row (unit 'stays') must drop."""
        out = {}
        for kind, step in DISTRACTORS.items():
            out[step] = out.get(step, 0) + int((self.table["ROLE"] == kind).sum())
        return out


def build(cohort: pd.DataFrame, distractors: dict[str, int], rng: np.random.Generator) -> Stays:
    """``cohort``: SUBJECT_ID, ICUSTAY_ID, END (hours), SYSTEM per generator stay, in the generator's order
    (and ROLE, 'cohort' or 'hospital', where not every row is an ICU stay);
    ``distractors``: kind -> number of such stays (an admission with two ICU stays counts 2)."""
    own = cohort.assign(ROLE=cohort["ROLE"] if "ROLE" in cohort else "cohort",
                        HADM_ID=cohort["ICUSTAY_ID"] + COHORT_HADM_OFFSET)
    table = pd.concat([own, _distractors(distractors, rng)], ignore_index=True)
    table = table.assign(**_timeline(table, rng))
    _out_of_order(table, rng)
    table["LOS"] = np.where(table["ROLE"] == "no_los", np.nan, table["END"] / 24.0)
    table["END"] = np.where(table["ROLE"] == "no_los", table["END"], table["LOS"] * 24.0)  # as the build reads it
    _two_stay_admissions(table)
    return Stays(table)


def _distractors(counts: dict[str, int], rng) -> pd.DataFrame:
    unknown = set(counts) - set(DISTRACTORS)
    if unknown:
        raise ValueError(f"unknown distractor kind {sorted(unknown)[0]!r}; kinds: {', '.join(DISTRACTORS)}")
    roles = np.concatenate([[k] * n for k, n in counts.items()]) if counts else np.array([], dtype=object)
    n = len(roles)
    # Each distractor stay is its own subject, except the two stays of one admission.
    pair = roles == "two_icu_stays"
    second = pair & (np.cumsum(pair) % 2 == 0)
    subject = SUBJECT_BASE + np.cumsum(~second) - 1
    return pd.DataFrame({"SUBJECT_ID": subject, "ICUSTAY_ID": STAY_BASE + np.arange(n),
                         "HADM_ID": HADM_BASE + np.arange(n), "ROLE": roles,
                         "END": np.clip(rng.lognormal(np.log(45), 0.8, n), 6, 24 * 30),
                         "SYSTEM": np.where(rng.random(n) < 0.5, "carevue", "metavision")})


def _timeline(table: pd.DataFrame, rng) -> dict[str, np.ndarray]:
    """A subject's stays one after another: admission, ICU stay within it, discharge, a gap to the next."""
    n = len(table)
    pre = rng.integers(0, 36 * 3600, n)
    length = np.rint(table["END"].to_numpy() * 3600).astype(np.int64)
    post = rng.integers(6 * 3600, 10 * DAY, n)
    gap = rng.integers(30 * DAY, 700 * DAY, n)
    # The two ICU stays of one admission are hours apart (the second's admission becomes the first's).
    paired = (table["ROLE"] == "two_icu_stays").to_numpy()
    post, gap = np.where(paired, 3600, post), np.where(paired, rng.integers(2 * 3600, DAY, n), gap)
    span = pre + length + post + gap
    subject = table["SUBJECT_ID"].to_numpy()
    first = np.r_[True, subject[1:] != subject[:-1]]
    group = np.cumsum(first) - 1
    before = np.cumsum(span) - span
    offset = before - before[first][group]  # time since the subject's first admission
    start = EPOCH + rng.integers(0, int(60 * YEAR), first.sum())[group]
    admit = start + offset
    intime = admit + pre
    return {"ADMIT": admit, "INTIME": intime, "OUTTIME": intime + length, "DISCH": intime + length + post,
            "DOB": _birth(table["ROLE"].to_numpy(), admit, first, group, rng)}


def _birth(role, admit, first, group, rng) -> np.ndarray:
    """Adults 19-88 at their first admission, 6 % over 89 (born ~300 years before); children under 18."""
    m = int(first.sum())
    age = rng.uniform(19, 88, m) * YEAR
    age = np.where(rng.random(m) < 0.06, rng.uniform(300, 305, m) * YEAR, age)
    child = pd.Series(role == "child").groupby(group).any().to_numpy()
    age = np.where(child, rng.uniform(0, 17, m) * YEAR, age)
    dob = admit[first] - age.astype(np.int64)
    return (dob // DAY * DAY)[group]  # MIMIC's birth dates are midnight


def _out_of_order(table: pd.DataFrame, rng) -> None:
    """The date distractors: OUTTIME before INTIME; a discharge before the admission; a death (DEATH)
    days before the admission."""
    role = table["ROLE"].to_numpy()
    table["DEATH"] = np.nan
    swap = role == "icu_dates"
    table.loc[swap, "OUTTIME"] = table.loc[swap, "INTIME"] - (table.loc[swap, "OUTTIME"] - table.loc[swap, "INTIME"])
    early = role == "admission_dates"
    table.loc[early, "DISCH"] = table.loc[early, "ADMIT"] - rng.integers(3600, 5 * DAY, int(early.sum()))
    dead = role == "death"
    table.loc[dead, "DEATH"] = (table.loc[dead, "ADMIT"] - rng.integers(2 * DAY, 30 * DAY, int(dead.sum()))).astype(float)


def _two_stay_admissions(table: pd.DataFrame) -> None:
    """The second stay of a pair joins the first one's admission (the build drops both)."""
    pair = np.flatnonzero(table["ROLE"].to_numpy() == "two_icu_stays")
    a, b = pair[0::2], pair[1::2]
    table.loc[b, "HADM_ID"] = table.loc[a, "HADM_ID"].to_numpy()
    table.loc[a, "DISCH"] = table.loc[b, "DISCH"].to_numpy()
    table.loc[b, "ADMIT"] = table.loc[a, "ADMIT"].to_numpy()


def write(stays: Stays, folder, rng) -> dict[str, int]:
    """PATIENTS, ADMISSIONS, ICUSTAYS and TRANSFERS under ``folder``; rows written per table."""
    t = stays.table.reset_index(drop=True)
    n = len(t)
    unit = np.array(UNITS)[rng.integers(0, len(UNITS), n)]
    unit = np.where(t["ROLE"] == "child", "NICU", unit)
    ward = rng.integers(1, 60, n)
    last_unit = np.where(t["ROLE"] == "transfer", np.where(unit == "MICU", "SICU", "MICU"), unit)
    last_ward = np.where(t["ROLE"] == "ward", ward + 1, ward)
    no_los = (t["ROLE"] == "no_los").to_numpy()
    icu = pd.DataFrame({"SUBJECT_ID": t["SUBJECT_ID"], "HADM_ID": t["HADM_ID"], "ICUSTAY_ID": t["ICUSTAY_ID"],
                        "DBSOURCE": t["SYSTEM"], "FIRST_CAREUNIT": unit, "LAST_CAREUNIT": last_unit,
                        "FIRST_WARDID": ward, "LAST_WARDID": last_ward, "INTIME": schema.timestamps(t["INTIME"]),
                        "OUTTIME": schema.timestamps(np.where(no_los, np.nan, t["OUTTIME"])), "LOS": t["LOS"]})
    subjects = t.drop_duplicates("SUBJECT_ID").reset_index(drop=True)
    died = _death_of_subject(t)
    patients = pd.DataFrame({"SUBJECT_ID": subjects["SUBJECT_ID"],
                             "GENDER": np.where(rng.random(len(subjects)) < 0.56, "M", "F"),
                             "DOB": schema.timestamps(subjects["DOB"]),
                             "DOD": schema.timestamps(died.reindex(subjects["SUBJECT_ID"]).to_numpy() // DAY * DAY),
                             "EXPIRE_FLAG": died.reindex(subjects["SUBJECT_ID"]).notna().astype(int).to_numpy()})
    admitted = t[t["ROLE"] != "no_admission"].drop_duplicates("HADM_ID").reset_index(drop=True)
    admissions = pd.DataFrame({"SUBJECT_ID": admitted["SUBJECT_ID"], "HADM_ID": admitted["HADM_ID"],
                               "ADMITTIME": schema.timestamps(admitted["ADMIT"]),
                               "DISCHTIME": schema.timestamps(admitted["DISCH"]),
                               "DEATHTIME": schema.timestamps(admitted["DEATH"]), "ADMISSION_TYPE": "EMERGENCY",
                               "ADMISSION_LOCATION": "EMERGENCY ROOM ADMIT", "DISCHARGE_LOCATION": "HOME",
                               "INSURANCE": "Medicare", "ETHNICITY": "UNKNOWN/NOT SPECIFIED", "DIAGNOSIS": "SYNTHETIC",
                               "HOSPITAL_EXPIRE_FLAG": 0, "HAS_CHARTEVENTS_DATA": 1})
    return {"PATIENTS": schema.write(folder, "PATIENTS", patients),
            "ADMISSIONS": schema.write(folder, "ADMISSIONS", admissions),
            "ICUSTAYS": schema.write(folder, "ICUSTAYS", icu),
            "TRANSFERS": schema.write(folder, "TRANSFERS", _transfers(t, unit, last_unit, ward, last_ward))}


def _transfers(t: pd.DataFrame, unit, last_unit, ward, last_ward) -> pd.DataFrame:
    """Admit into the ICU, a transfer where the stay has one (halfway), discharge from the hospital."""
    moved = np.flatnonzero((unit != last_unit) | (ward != last_ward))
    half = (t["INTIME"].to_numpy() + t["OUTTIME"].to_numpy()) // 2
    rows = [
        pd.DataFrame({"i": np.arange(len(t)), "EVENTTYPE": "admit", "CURR_CAREUNIT": unit, "CURR_WARDID": ward,
                      "IN": t["INTIME"].to_numpy(), "OUT": np.where(np.isin(np.arange(len(t)), moved), half, t["OUTTIME"])}),
        pd.DataFrame({"i": moved, "EVENTTYPE": "transfer", "PREV_CAREUNIT": unit[moved], "CURR_CAREUNIT": last_unit[moved],
                      "PREV_WARDID": ward[moved], "CURR_WARDID": last_ward[moved], "IN": half[moved],
                      "OUT": t["OUTTIME"].to_numpy()[moved]}),
        pd.DataFrame({"i": np.arange(len(t)), "EVENTTYPE": "discharge", "IN": t["DISCH"].to_numpy(), "OUT": np.nan}),
    ]
    rows = pd.concat(rows, ignore_index=True).sort_values(["i", "IN"], kind="stable")
    i = rows["i"].to_numpy()
    in_icu = rows["EVENTTYPE"].to_numpy() != "discharge"
    return pd.DataFrame({
        "SUBJECT_ID": t["SUBJECT_ID"].to_numpy()[i], "HADM_ID": t["HADM_ID"].to_numpy()[i],
        "ICUSTAY_ID": schema.nullable(t["ICUSTAY_ID"].to_numpy()[i], ~in_icu), "DBSOURCE": t["SYSTEM"].to_numpy()[i],
        "EVENTTYPE": rows["EVENTTYPE"].to_numpy(), "PREV_CAREUNIT": rows["PREV_CAREUNIT"].to_numpy(),
        "CURR_CAREUNIT": rows["CURR_CAREUNIT"].to_numpy(), "PREV_WARDID": schema.nullable(rows["PREV_WARDID"].fillna(0).to_numpy(np.int64), rows["PREV_WARDID"].isna().to_numpy()),
        "CURR_WARDID": schema.nullable(rows["CURR_WARDID"].fillna(0).to_numpy(np.int64), rows["CURR_WARDID"].isna().to_numpy()),
        "INTIME": schema.timestamps(rows["IN"].to_numpy()), "OUTTIME": schema.timestamps(rows["OUT"].to_numpy()),
        "LOS": np.round((rows["OUT"].to_numpy() - rows["IN"].to_numpy()) / 3600, 2),
    })


def _death_of_subject(t: pd.DataFrame) -> pd.Series:
    """SUBJECT_ID -> the time of death (seconds), for the subjects who died (the date distractors)."""
    dead = t[t["DEATH"].notna()]
    return pd.Series(dead["DEATH"].to_numpy(), index=dead["SUBJECT_ID"].to_numpy(), dtype=np.float64)


def _anchors(t: pd.DataFrame, rng) -> pd.DataFrame:
    """Per subject (in order of first appearance): anchor_year and anchor_age from the birth date and the
    first admission, as MIMIC-IV gives them (see the module's docstring)."""
    first = t.drop_duplicates("SUBJECT_ID")
    admit = first["ADMIT"].to_numpy()
    age = np.floor((admit - first["DOB"].to_numpy()) / YEAR).astype(np.int64)
    year = (admit.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970)
    back = rng.integers(0, 3, len(first))
    old = age > 89
    back = np.where(old, 0, back)
    return pd.DataFrame({"subject_id": first["SUBJECT_ID"].to_numpy(), "anchor_year": year - back,
                         "anchor_age": np.where(old, OVER_89, np.maximum(age - back, 0)),
                         "anchor_year_group": np.array(YEAR_GROUPS)[rng.integers(0, len(YEAR_GROUPS), len(first))]})


def write_mimic4(stays: Stays, folder, rng) -> dict[str, int]:
    """hosp/patients, hosp/admissions and icu/icustays of MIMIC-IV under ``folder``; rows written per table."""
    t = stays.table.reset_index(drop=True)
    if (t["ROLE"] == "ward").any():
        raise ValueError("distractor kind 'ward': MIMIC-IV has no ward ids (a transfer is a change of care unit)")
    n = len(t)
    unit = np.array(UNITS_IV)[rng.integers(0, len(UNITS_IV), n)]
    last_unit = np.where(t["ROLE"] == "transfer", np.where(unit == UNITS_IV[0], UNITS_IV[1], UNITS_IV[0]), unit)
    icu = t[t["ROLE"] != "hospital"].index.to_numpy()
    no_los = (t["ROLE"] == "no_los").to_numpy()
    icustays = pd.DataFrame({"subject_id": t["SUBJECT_ID"].to_numpy()[icu], "hadm_id": t["HADM_ID"].to_numpy()[icu],
                             "stay_id": t["ICUSTAY_ID"].to_numpy()[icu], "first_careunit": unit[icu],
                             "last_careunit": last_unit[icu], "intime": schema.timestamps(t["INTIME"].to_numpy()[icu]),
                             "outtime": schema.timestamps(np.where(no_los, np.nan, t["OUTTIME"])[icu]),
                             "los": t["LOS"].to_numpy()[icu]})
    died = _death_of_subject(t)
    patients = _anchors(t, rng)
    dod = died.reindex(patients["subject_id"].to_numpy()).to_numpy()
    patients["gender"] = np.where(rng.random(len(patients)) < 0.56, "M", "F")
    patients["dod"] = pd.Series(schema.timestamps(dod)).dt.strftime("%Y-%m-%d").fillna("").to_numpy()
    admitted = t[t["ROLE"] != "no_admission"].drop_duplicates("HADM_ID").reset_index(drop=True)
    admissions = pd.DataFrame({
        "subject_id": admitted["SUBJECT_ID"], "hadm_id": admitted["HADM_ID"],
        "admittime": schema.timestamps(admitted["ADMIT"]), "dischtime": schema.timestamps(admitted["DISCH"]),
        "deathtime": schema.timestamps(admitted["DEATH"]), "admission_type": "EW EMER.",
        "admit_provider_id": "P00000", "admission_location": "EMERGENCY ROOM", "discharge_location": "HOME",
        "insurance": "Medicare", "language": "ENGLISH", "marital_status": "MARRIED", "race": "UNKNOWN",
        "hospital_expire_flag": 0})
    return {"patients": schema.write(folder, "patients", patients, "mimic4"),
            "admissions": schema.write(folder, "admissions", admissions, "mimic4"),
            "icustays": schema.write(folder, "icustays", icustays, "mimic4")}
