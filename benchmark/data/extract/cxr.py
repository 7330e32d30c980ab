"""MIMIC-CXR-JPG studies: the AP chest X-ray studies of the diagnosis task and their CheXpert labels.

``mimic-cxr-2.0.0-metadata.csv`` has one row per image (DICOM_ID) with its study, view position and
acquisition date and time (StudyDate ``YYYYMMDD``, StudyTime ``HHMMSS.fff``, leading zeros of the
hour dropped: 5034.0 is 00:50:34). A study is a sample when one of its images is an AP view; its time
is that of its last AP image, which is also the DICOM_ID the FlexCare layout would carry. Labels are
the study's row of ``mimic-cxr-2.0.0-chexpert.csv``: 1 positive, 0 negative, -1 uncertain, blank
(not mentioned) written as -2, as the reference does; a study without a CheXpert row has no labels and
is dropped. Only studies of subjects with a MIMIC-IV admission are kept: the patient split is a split
of the admissions' subjects, so any other study would belong to no split. A study dated after its
subject's day of death (MIMIC-IV's patients.dod) is out of order (``dates``) and dropped.
A malformed StudyDate/StudyTime or CheXpert value is an error naming the file, the column and the row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...errors import UsageError
from . import dates
from .steps import Attrition

METADATA = ("DICOM_ID", "SUBJECT_ID", "STUDY_ID", "VIEWPOSITION", "STUDYDATE", "STUDYTIME")
FILES = {"CXR_METADATA": "mimic-cxr-2.0.0-metadata", "CXR_CHEXPERT": "mimic-cxr-2.0.0-chexpert"}
AP = "AP"
MISSING = -2


def chexpert_columns(label_names: list[str]) -> tuple[str, ...]:
    return ("SUBJECT_ID", "STUDY_ID", *(n.upper() for n in label_names))


def image_times(images: pd.DataFrame, where: str = FILES["CXR_METADATA"]) -> pd.Series:
    """Each image's acquisition time from StudyDate and StudyTime (``images``' index: the data row);
    a value of another form is an error naming ``where`` (the file)."""
    date = pd.to_datetime(images["STUDYDATE"], format="%Y%m%d", errors="coerce")
    clock = pd.to_numeric(images["STUDYTIME"], errors="coerce")
    bad = date.isna() | clock.isna() | (clock < 0) | (clock >= 240000)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UsageError(f"{where}: table CXR_METADATA columns StudyDate / StudyTime: {images['STUDYDATE'].iloc[row]!r} / "
                         f"{images['STUDYTIME'].iloc[row]!r} (data row {int(images.index[row]) + 1}) is not a date and "
                         f"time, expected YYYYMMDD / HHMMSS.fff")
    seconds = (clock // 10000) * 3600 + ((clock // 100) % 100) * 60 + clock % 100
    return date + pd.to_timedelta(seconds, unit="s")


def labels(chexpert: pd.DataFrame, label_names: list[str], where: str = FILES["CXR_CHEXPERT"]) -> pd.DataFrame:
    """SUBJECT_ID, STUDY_ID and the labels as integers 1, 0, -1 and -2 (blank), named as the card names them."""
    out = chexpert[["SUBJECT_ID", "STUDY_ID"]].copy()
    for name in label_names:
        values = chexpert[name.upper()]
        bad = values.notna() & ~values.isin([1.0, 0.0, -1.0])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UsageError(f"{where}: table CXR_CHEXPERT column {name}: {values[bad].iloc[0]!r} "
                             f"(data row {row + 1}), expected 1, 0, -1 or blank")
        out[name] = values.fillna(MISSING).astype(np.int64).to_numpy()
    return out


def studies(images: pd.DataFrame, chexpert: pd.DataFrame, admitted: pd.Index, label_names: list[str],
            deaths: pd.Series | None = None, files: dict[str, str] = FILES) -> tuple[pd.DataFrame, Attrition]:
    """One row per kept study: SUBJECT_ID, STUDY_ID, DICOM_ID, TIME and the labels; the attrition.
    ``deaths``: each subject's day of death (index SUBJECT_ID), None when PATIENTS has no dod;
    ``files``: the tables' files, for errors."""
    att = Attrition()
    att.add("cxr_images", len(images), 0, "images of the MIMIC-CXR-JPG metadata", "images")
    ap = images["VIEWPOSITION"].fillna("").str.strip() == AP
    att.add("cxr:ap_view", int(ap.sum()), int((~ap).sum()), "not an AP view (PA, lateral, ...)", "images")
    n_studies = images["STUDY_ID"].nunique()
    images = images[ap.to_numpy()].assign(TIME=image_times(images[ap.to_numpy()], files["CXR_METADATA"]))
    last = images.sort_values(["STUDY_ID", "TIME", "DICOM_ID"], kind="stable").drop_duplicates("STUDY_ID", keep="last")
    att.add("cxr_studies", n_studies, 0, "studies of the MIMIC-CXR-JPG metadata", "studies")
    att.add("cxr:ap_study", len(last), n_studies - len(last), "no AP image in the study", "studies")
    table = last[["SUBJECT_ID", "STUDY_ID", "DICOM_ID", "TIME"]].merge(labels(chexpert, label_names, files["CXR_CHEXPERT"]),
                                                                        on=["SUBJECT_ID", "STUDY_ID"], how="inner")
    att.add("cxr:chexpert", len(table), len(last) - len(table), "no row in the CheXpert labels", "studies")
    mine = table["SUBJECT_ID"].isin(admitted)
    att.add("cxr:admitted_subject", int(mine.sum()), int((~mine).sum()),
            "subject has no MIMIC-IV admission (so no split)", "studies")
    table = table[mine.to_numpy()]
    if deaths is None:
        att.add("cxr:after_death", len(table), 0, "not checked: PATIENTS has no dod column", "studies")
    else:
        died = deaths.reindex(table["SUBJECT_ID"].to_numpy()).to_numpy()
        late = table["TIME"].dt.normalize().to_numpy() > died  # NaT (alive) compares False
        att.add("cxr:after_death", int((~late).sum()), int(late.sum()), dates.AFTER_DEATH, "studies")
        table = table[~late]
    table = table.sort_values(["SUBJECT_ID", "TIME", "STUDY_ID"], kind="stable")
    return table.reset_index(drop=True), att
