"""MIMIC-III 1.4's tables as the raw writer spells them: each table's columns in the database's order
and case (upper, as the full database; the demo's are lower), and a CSV writer that appends frames.

The writer fills the columns a frame lacks with empty fields and numbers ``ROW_ID`` on, so that every
table has the full database's width: the build parses only the columns it reads, but its CSV parser
still reads every byte of a row, so a projection from these files needs rows of MIMIC-III's size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = {
    "PATIENTS": ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
    "ADMISSIONS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
                   "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE", "LANGUAGE", "RELIGION", "MARITAL_STATUS",
                   "ETHNICITY", "EDREGTIME", "EDOUTTIME", "DIAGNOSIS", "HOSPITAL_EXPIRE_FLAG", "HAS_CHARTEVENTS_DATA"],
    "ICUSTAYS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT", "LAST_CAREUNIT",
                 "FIRST_WARDID", "LAST_WARDID", "INTIME", "OUTTIME", "LOS"],
    "TRANSFERS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "EVENTTYPE", "PREV_CAREUNIT",
                  "CURR_CAREUNIT", "PREV_WARDID", "CURR_WARDID", "INTIME", "OUTTIME", "LOS"],
    "CHARTEVENTS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "ITEMID", "CHARTTIME", "STORETIME", "CGID", "VALUE",
                    "VALUENUM", "VALUEUOM", "WARNING", "ERROR", "RESULTSTATUS", "STOPPED"],
    "LABEVENTS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"],
    "OUTPUTEVENTS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "CHARTTIME", "ITEMID", "VALUE", "VALUEUOM",
                     "STORETIME", "CGID", "STOPPED", "NEWBOTTLE", "ISERROR"],
    "DIAGNOSES_ICD": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "D_ICD_DIAGNOSES": ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
    "NOTEEVENTS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "DESCRIPTION",
                   "CGID", "ISERROR", "TEXT"],
}


def timestamps(seconds) -> np.ndarray:
    """Seconds since 1970 -> timestamps that pandas writes as MIMIC's 'YYYY-MM-DD HH:MM:SS'; NaN: empty (NaT)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    out = np.where(np.isnan(seconds), 0, seconds).astype(np.int64).astype("datetime64[s]")
    out[np.isnan(seconds)] = np.datetime64("NaT")
    return out


def nullable(ids, missing) -> pd.arrays.IntegerArray:
    """Integer ids with some left empty (an id MIMIC does not record)."""
    return pd.arrays.IntegerArray(np.asarray(ids, dtype=np.int64), np.asarray(missing, dtype=bool))


class TableWriter:
    """``TABLE.csv`` under a folder, written frame by frame; ``rows`` counts what was written."""

    def __init__(self, folder: Path, name: str):
        self.name, self.columns, self.rows = name, COLUMNS[name], 0
        self.path = Path(folder) / f"{name}.csv"
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._fh.write(",".join(self.columns) + "\n")

    def append(self, frame: pd.DataFrame) -> None:
        unknown = set(frame.columns) - set(self.columns)
        if unknown:  # a misspelt column would be written as an empty one in silence
            raise ValueError(f"{self.name}: no column {sorted(unknown)[0]} in MIMIC-III 1.4")
        frame = frame.reindex(columns=self.columns)
        frame["ROW_ID"] = np.arange(self.rows + 1, self.rows + 1 + len(frame))
        frame.to_csv(self._fh, header=False, index=False, lineterminator="\n", date_format="%Y-%m-%d %H:%M:%S")
        self.rows += len(frame)

    def close(self) -> None:
        self._fh.close()


def write(folder: Path, name: str, frame: pd.DataFrame) -> int:
    """A whole (small) table in one go; its row count."""
    writer = TableWriter(folder, name)
    try:
        writer.append(frame)
    finally:
        writer.close()
    return writer.rows
