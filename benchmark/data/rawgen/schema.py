"""The tables as the raw writer spells them: each table's columns in the database's order and case,
and a CSV writer that appends frames.

- MIMIC-III 1.4 (``COLUMNS``): upper case, as the full database (the demo's are lower), ``TABLE.csv``
  in one folder;
- MIMIC-IV 2.2 with MIMIC-IV-Note 2.2 and MIMIC-CXR-JPG 2.0.0 (``COLUMNS_IV``): lower case (the CXR
  files' own mixed case), gzip as PhysioNet publishes them, each database in its own folder as it is
  downloaded: ``mimic-iv/{hosp,icu}/``, ``mimic-iv-note/note/``, ``mimic-cxr-jpg/`` (``FOLDERS``).

The writer fills the columns a frame lacks with empty fields and numbers the row id (``ROW_ID``,
MIMIC-IV's ``labevent_id``) on, so that every table has the full database's width: the build parses
only the columns it reads, but its CSV parser still reads every byte of a row, so a projection from
these files needs rows of the database's size. The gzip files carry no timestamp: the same tables
are the same bytes.
"""
from __future__ import annotations

import gzip
import io
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


# MIMIC-IV 2.2, MIMIC-IV-Note 2.2, MIMIC-CXR-JPG 2.0.0: table -> (its folder, its columns).
FOLDERS = {"mimic4": "mimic-iv", "note": "mimic-iv-note", "cxr": "mimic-cxr-jpg"}
HOSP, ICU, NOTE, CXR = (f"{FOLDERS['mimic4']}/hosp", f"{FOLDERS['mimic4']}/icu", f"{FOLDERS['note']}/note",
                        FOLDERS["cxr"])
COLUMNS_IV = {
    "patients": (HOSP, ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]),
    "admissions": (HOSP, ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                                     "admit_provider_id", "admission_location", "discharge_location", "insurance",
                                     "language", "marital_status", "race", "edregtime", "edouttime",
                                     "hospital_expire_flag"]),
    "diagnoses_icd": (HOSP, ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]),
    "d_icd_diagnoses": (HOSP, ["icd_code", "icd_version", "long_title"]),
    "labevents": (HOSP, ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
                                    "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
                                    "ref_range_upper", "flag", "priority", "comments"]),
    "icustays": (ICU, ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime",
                                  "outtime", "los"]),
    "chartevents": (ICU, ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime",
                                     "itemid", "value", "valuenum", "valueuom", "warning"]),
    "outputevents": (ICU, ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime",
                                      "itemid", "value", "valueuom"]),
    "discharge": (NOTE, ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                                         "storetime", "text"]),
    "mimic-cxr-2.0.0-metadata": (CXR, [
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
        "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning"]),
    "mimic-cxr-2.0.0-chexpert": (CXR, ["subject_id", "study_id"]),  # and the 14 labels (``chexpert_columns``)
}
ROW_IDS = ("ROW_ID", "labevent_id")


def chexpert_columns(label_names: list[str]) -> list[str]:
    return [*COLUMNS_IV["mimic-cxr-2.0.0-chexpert"][1], *label_names]


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
    """A table under a folder, written frame by frame; ``rows`` counts what was written.

    ``database`` 'mimic3': ``TABLE.csv`` of MIMIC-III 1.4; 'mimic4': ``<its folder>/<table>.csv.gz`` of
    ``COLUMNS_IV`` (``columns`` for a table whose columns depend on the task: the CheXpert labels)."""

    def __init__(self, folder: Path, name: str, database: str = "mimic3", columns: list[str] | None = None):
        self.name, self.rows = name, 0
        if database == "mimic3":
            self.columns, self.path = columns or COLUMNS[name], Path(folder) / f"{name}.csv"
            self._fh = open(self.path, "w", newline="", encoding="utf-8")
        else:
            where, own = COLUMNS_IV[name]
            self.columns, self.path = columns or own, Path(folder) / where / f"{name}.csv.gz"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = io.TextIOWrapper(gzip.GzipFile(self.path, "wb", compresslevel=1, mtime=0), encoding="utf-8",
                                        newline="")
        self.database = database
        self._fh.write(",".join(self.columns) + "\n")

    def append(self, frame: pd.DataFrame) -> None:
        unknown = set(frame.columns) - set(self.columns)
        if unknown:  # a misspelt column would be written as an empty one in silence
            raise ValueError(f"{self.name}: no column {sorted(unknown)[0]} in "
                             f"{'MIMIC-III 1.4' if self.database == 'mimic3' else 'MIMIC-IV 2.2'}")
        frame = frame.reindex(columns=self.columns)
        for column in ROW_IDS:
            if column in self.columns:
                frame[column] = np.arange(self.rows + 1, self.rows + 1 + len(frame))
        frame.to_csv(self._fh, header=False, index=False, lineterminator="\n", date_format="%Y-%m-%d %H:%M:%S")
        self.rows += len(frame)

    def close(self) -> None:
        self._fh.close()


def write(folder: Path, name: str, frame: pd.DataFrame, database: str = "mimic3", columns: list[str] | None = None) -> int:
    """A whole (small) table in one go; its row count."""
    writer = TableWriter(folder, name, database, columns)
    try:
        writer.append(frame)
    finally:
        writer.close()
    return writer.rows
