"""MIMIC-CXR-JPG's metadata and CheXpert labels: each sample of a diagnosis task as an AP chest X-ray
study at its time, and studies and images the build must drop.

A study of the generator's task is one AP image (StudyDate ``YYYYMMDD``, StudyTime ``HHMMSS.fff`` with
milliseconds, the hour's leading zero dropped, as MIMIC-CXR writes them); some studies have a lateral
image too (an image the build drops, the study kept) or an earlier AP image (the study's time is its
last AP image's). Its CheXpert row holds the generator's label cells: '1.0' -> 1, '0.0' -> 0, '-1.0'
(uncertain) -> -1, blank (not mentioned) left blank, which the build writes as -2.

When a study is. A study with a series lies in its ICU stay at ``study_seconds`` after the stay's
admission: whole seconds (the build keeps a study's time to the second), as close to the generator's
``period_len`` as keeps what the loaders see: the same rows of the series up to the study (no chart
second between the generator's end and the study's), the same number of hourly bins, more than 4 h
(the build gives no series to a study within 4 h of the ICU admission). ``Placement`` counts the
studies no second satisfies (none expected) and the largest shift. A study without a series lies in
an admission of its own without an ICU stay (``stays``' 'hospital' rows), so its ``period_len`` is 0.

Distractors (``Dropped``): lateral and PA images (``cxr:ap_view``), studies of PA images only
(``cxr:ap_study``), AP studies without a CheXpert row (``cxr:chexpert``), studies of subjects without
an admission (``cxr:admitted_subject``), a study after its subject's death (``cxr:after_death``), and
studies of admitted subjects outside the task's patient split (``diagnosis:in_split``, a month after
their discharge: no stay, no note).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import schema
from .charting import EPS, Dropped
from .stays import DAY

CHEXPERT = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": np.nan}
MIN_SECONDS = 4 * 3600 + 1  # the build's series need more than 4 h
LATERAL_SHARE, EARLIER_AP_SHARE = 0.3, 0.1


@dataclass
class Placement:
    conflicts: int = 0  # studies with a series for which no second keeps the loaders' view
    max_shift_s: float = 0.0  # largest |study time - generator's period_len|, seconds


def study_seconds(ends: np.ndarray, period: float, hours: np.ndarray, seconds: np.ndarray,
                  placement: Placement) -> np.ndarray:
    """Seconds after the ICU admission of the studies of one stay (``ends``: their generator periods,
    hours), given the stay's ``period`` (hours) and its series rows' generator ``hours`` and chart
    ``seconds`` (file order, seconds strictly increasing)."""
    if not len(seconds):  # every series has its admission row (weight and height at hour 0)
        raise ValueError("a stay's series has no row: no study can be placed in it")
    j = np.searchsorted(hours, ends + EPS, side="right")  # the rows the generator's view reads
    r_in = np.where(j > 0, seconds[np.maximum(j - 1, 0)], 0)  # the last second read, and the first not
    r_out = np.where(j < len(seconds), seconds[np.minimum(j, len(seconds) - 1)], np.iinfo(np.int64).max // 4)
    bins = (ends + 1.0 - EPS).astype(np.int64)  # the discretiser's n_bins
    lo = np.maximum.reduce([r_in, np.ceil((bins - 1 + EPS) * 3600).astype(np.int64), np.full(len(ends), MIN_SECONDS)])
    hi = np.minimum.reduce([r_out - 1, np.floor((bins + EPS) * 3600).astype(np.int64),
                            np.full(len(ends), int(np.floor(period * 3600)))])
    placement.conflicts += int((lo > hi).sum())
    out = np.clip(np.rint(ends * 3600).astype(np.int64), lo, np.maximum(hi, lo))
    if len(out):
        placement.max_shift_s = max(placement.max_shift_s, float(np.abs(out - ends * 3600).max()))
    return out


def _dicom(study: np.ndarray, k: int) -> np.ndarray:
    return np.array([f"{zlib.crc32(f'{s}:{k}'.encode()):08x}-{s}-{k}" for s in study], dtype=object)


def _clock(seconds: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """StudyDate and StudyTime of ``seconds`` (since 1970), with milliseconds."""
    stamp = schema.timestamps(seconds)
    date = pd.Series(stamp).dt.strftime("%Y%m%d").astype(np.int64).to_numpy()
    of_day = seconds.astype(np.int64) % DAY
    clock = (of_day // 3600) * 10_000 + (of_day // 60 % 60) * 100 + of_day % 60
    return date, clock + rng.integers(0, 1000, len(seconds)) / 1000.0


def images(studies: pd.DataFrame, rng, dropped: Dropped) -> pd.DataFrame:
    """Metadata rows of ``studies`` (SUBJECT_ID, STUDY_ID, TIME in seconds, VIEW: 'AP' or 'PA')."""
    frames = []

    def add(rows: pd.DataFrame, k: int, view, time) -> None:
        date, clock = _clock(np.asarray(time), rng)
        frames.append(pd.DataFrame({"dicom_id": _dicom(rows["STUDY_ID"].to_numpy(), k),
                                    "subject_id": rows["SUBJECT_ID"].to_numpy(), "study_id": rows["STUDY_ID"].to_numpy(),
                                    "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)", "ViewPosition": view,
                                    "Rows": 2544, "Columns": 3056, "StudyDate": date, "StudyTime": clock,
                                    "ProcedureCodeSequence_CodeMeaning": "CHEST (PORTABLE AP)",
                                    "ViewCodeSequence_CodeMeaning": np.where(np.asarray(view) == "LATERAL", "lateral",
                                                                             "antero-posterior"),
                                    "PatientOrientationCodeSequence_CodeMeaning": "Erect"}))

    add(studies, 0, studies["VIEW"].to_numpy(), studies["TIME"].to_numpy())
    dropped.add("cxr:ap_view", int((studies["VIEW"] != "AP").sum()))
    lateral = studies[rng.random(len(studies)) < LATERAL_SHARE]
    add(lateral, 1, "LATERAL", lateral["TIME"].to_numpy() + 30)
    dropped.add("cxr:ap_view", len(lateral))
    earlier = studies[(studies["VIEW"] == "AP").to_numpy() & (rng.random(len(studies)) < EARLIER_AP_SHARE)]
    add(earlier, 2, "AP", earlier["TIME"].to_numpy() - 120)  # the study's time stays its last AP image's
    return pd.concat(frames, ignore_index=True).sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")


def chexpert(studies: pd.DataFrame, cells: pd.DataFrame, label_names: list[str]) -> pd.DataFrame:
    """CheXpert rows: per study its label cells (the generator's listfile text) as numbers, blank for blank."""
    out = pd.DataFrame({"subject_id": studies["SUBJECT_ID"].to_numpy(), "study_id": studies["STUDY_ID"].to_numpy()})
    for name in label_names:
        out[name] = cells[name].map(CHEXPERT).to_numpy()
    return out


def write(folder, metadata: pd.DataFrame, labels: pd.DataFrame, label_names: list[str]) -> dict[str, int]:
    return {"mimic-cxr-2.0.0-metadata": schema.write(folder, "mimic-cxr-2.0.0-metadata", metadata, "mimic4"),
            "mimic-cxr-2.0.0-chexpert": schema.write(folder, "mimic-cxr-2.0.0-chexpert", labels, "mimic4",
                                                     schema.chexpert_columns(label_names))}
