"""What 'equal' means between the generator's own task files and the ones built from its raw tables.

Three shapes (``Shape``): MIMIC-III phenotyping (``MIMIC3``), MIMIC-IV phenotyping and diagnosis
(``MIMIC4_PHE``, ``MIMIC4_DIA``). What is compared is the generator's files as the database can hold
them (``Shape.events``, ``Shape.notes``): the MIMIC-III shape takes them as they are; MIMIC-IV charts
no capillary refill and no Glasgow coma scale total and spells the scale's words as MetaVision does
(``items.as_mimic4``), and its note is the past medical history section of a discharge summary
(``discharge.pmh``: the generator's note without its two headings and its social history).

Listfiles (``<task>/{train,[val,]test}_multimodal_listfile.csv``): the same rows in the same order
in each split, with identical patient, sample and series columns and labels (MIMIC-IV diagnosis: the
generator's CheXpert cells '1.0', '0.0', '-1.0' and blank as the build's 1, 0, -1 and -2), the period
within 1e-6 h (diagnosis: ``max_shift_s``, a study's time is whole seconds), and the note identical
once whitespace runs are single spaces (the build's cleaning makes them so; MIMIC-IV diagnosis: the
note of a study with a series is the note of its stay's first study, as the build's note is the
admission's). A phenotyping sample without a series has no counterpart: the build keeps no stay
without events, so it is not expected (a diagnosis study without a series is, with an empty series
and period 0).

Series (``ehr/<file>``, per sample with one): the generator's rows up to the sample's period (hours
<= period + 1e-6, the discretiser's bound) that hold a value, one to one with the built rows, in
order (diagnosis: the built rows up to the built period, as studies of one stay share its file); each pair in the same hourly bin (``trunc(hours - 1e-6)``) and within
``max_shift_s`` seconds (chart times are whole seconds); each cell empty in both or holding the same
value: identical text for categorical channels, numbers within 1e-9 relative (unit conversions round
in the last digits) after the build's range cleaning (``variable_ranges.csv``: the generator's glucose
goes down to 30 mg/dL, the valid range starts at 33, so the build raises such a value to 33 as it
would a real one; ``ranges=False`` for a build with ``--no-ranges``). The generator's rows after the
period, or without a value, have no counterpart (the build drops events outside the ICU stay and
writes rows only where something was charted). Then the discretised series, as the loaders see them
(the generator's whole file against its period, the built file against the built period), are equal
within float32 rounding.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..extract import variables
from ..loaders import EPISODE_HEADER
from ..timeseries import CHANNELS, IS_CATEGORICAL, discretise
from . import discharge, items

EPS = 1e-6
CHEXPERT = {"1.0": 1, "0.0": 0, "-1.0": -1, "": -2}  # the generator's label cells -> the build's CheXpert values


def _whitespace(notes: pd.Series) -> pd.Series:
    return notes.str.split().str.join(" ").fillna("")


@dataclass(frozen=True)
class Shape:
    task_dir: str
    splits: tuple[str, ...]
    patient: str
    key: str
    series: str
    end: str
    note: str
    events: Callable[[pd.DataFrame], pd.DataFrame]  # the generator's series as the database charts them
    notes: Callable[[pd.Series], pd.Series]  # the generator's notes as the build extracts them
    labels: Callable[[pd.Series], np.ndarray]  # label cells -> what the build writes
    keeps_without_series: bool = False  # a sample without a series is a sample of the build too
    note_of_stay: bool = False  # a sample's note is its series' first sample's (the admission's)
    # Samples share a file, each reading it up to its own period (diagnosis); else a file is one sample's
    # and every built row must be within its period.
    shared_files: bool = False


def _ints(cells: pd.Series) -> np.ndarray:
    return cells.astype(int).to_numpy()


def _chexpert(cells: pd.Series) -> np.ndarray:
    return cells.map(lambda c: CHEXPERT.get(c, c)).astype(int).to_numpy()


MIMIC3 = Shape("phenotyping", ("train", "test"), "patient_id", "stay_id", "stay", "period_length", "notes",
               lambda e: e, _whitespace, _ints)
MIMIC4_PHE = Shape("phenotyping", ("train", "val", "test"), "subject_id", "stay_id", "time_series", "period_length",
                   "past_medical_history", items.as_mimic4, discharge.pmh, _ints)
MIMIC4_DIA = Shape("diagnosis", ("train", "val", "test"), "subject_id", "study_id", "time_series", "period_len",
                   "past_medical_history", items.as_mimic4, discharge.pmh, _chexpert, keeps_without_series=True,
                   note_of_stay=True, shared_files=True)
SHAPES = {("mimic3-miracl", "phenotyping"): MIMIC3, ("mimic4", "phenotyping"): MIMIC4_PHE,
          ("mimic4", "diagnosis"): MIMIC4_DIA}


def _listfile(root: Path, shape: Shape, split: str) -> pd.DataFrame:
    path = Path(root) / shape.task_dir / f"{split}_multimodal_listfile.csv"
    if not path.is_file():
        return pd.DataFrame(columns=[shape.patient, shape.key, shape.series, shape.end, shape.note])
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def expected_rows(root: Path, shape: Shape) -> dict[str, pd.DataFrame]:
    """Per split, the generator's rows the build should give, with their notes as the build extracts them."""
    want = {split: _listfile(root, shape, split) for split in shape.splits}
    everything = pd.concat(list(want.values()), ignore_index=True)
    note = shape.notes(everything[shape.note])
    if shape.note_of_stay:  # the note of the series' first sample (by key), for every sample of that series
        stay = everything[shape.series].where(everything[shape.series] != "", "key:" + everything[shape.key])
        order = np.argsort(everything[shape.key].astype(np.int64).to_numpy(), kind="stable")
        note = note.iloc[order].groupby(stay.iloc[order].to_numpy()).transform("first").reindex(everything.index)
    notes = dict(zip(everything[shape.key], note))
    out = {}
    for split, frame in want.items():
        frame = frame.assign(**{shape.note: frame[shape.key].map(notes).fillna("")})
        if not shape.keeps_without_series:
            frame = frame[frame[shape.series] != ""]
        out[split] = frame.reset_index(drop=True)
    return out


def listfiles(expected_root: Path, built_root: Path, shape: Shape = MIMIC3, max_shift_s: float = 60.0) -> list[str]:
    out = []
    keys = [shape.patient, shape.key, shape.series]
    tolerance = max_shift_s / 3600 if shape.keeps_without_series else EPS
    for split, want in expected_rows(expected_root, shape).items():
        got = _listfile(built_root, shape, split)
        if list(want.columns) != list(got.columns):
            out.append(f"{split}: columns {list(got.columns)} where {list(want.columns)} were expected")
            continue
        if len(want) != len(got) or (want[keys].to_numpy() != got[keys].to_numpy()).any():
            missing = set(want[shape.key]) - set(got[shape.key])
            extra = set(got[shape.key]) - set(want[shape.key])
            out.append(f"{split}: {len(got)} rows where {len(want)} were expected (missing {shape.key} "
                       f"{sorted(missing)[:5]}, extra {sorted(extra)[:5]}, or another order)")
            continue
        labels = list(want.columns[5:])
        for col in labels:
            bad = np.flatnonzero(shape.labels(want[col]) != got[col].astype(int).to_numpy())
            if len(bad):
                out.append(f"{split}: label {col!r} differs for {shape.key} {want[shape.key][bad[0]]} ({len(bad)} rows)")
        gap = np.abs(want[shape.end].astype(float).to_numpy() - got[shape.end].astype(float).to_numpy())
        if (gap > tolerance + 1e-9).any():
            i = int(np.argmax(gap))
            out.append(f"{split}: {shape.end} of {shape.key} {want[shape.key][i]} is {got[shape.end][i]}, "
                       f"expected {want[shape.end][i]}")
        bad = np.flatnonzero(want[shape.note].to_numpy() != got[shape.note].to_numpy())
        if len(bad):
            out.append(f"{split}: note of {shape.key} {want[shape.key][bad[0]]} is {got[shape.note][bad[0]][:80]!r}, "
                       f"expected {want[shape.note][bad[0]][:80]!r} ({len(bad)} rows)")
    return out


def _episode(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)[EPISODE_HEADER]


def cleaned(frame: pd.DataFrame) -> pd.DataFrame:
    """The generator's values as the build's range cleaning leaves them: outliers empty, the rest clipped
    to the valid range."""
    bounds = variables.ranges()
    frame = frame.copy()
    for ch in CHANNELS:
        code = variables.CODE[ch]
        if code not in bounds.index:
            continue
        lo_out, lo, hi, hi_out = bounds.loc[code]
        text = frame[ch].to_numpy(object)
        have = text != ""
        x = text[have].astype(float)
        fixed = np.where((x < lo_out) | (x > hi_out), "", pd.Series(np.clip(x, lo, hi)).astype(str).to_numpy(object))
        changed = (x < lo) | (x > hi)
        text[np.flatnonzero(have)[changed]] = fixed[changed]
        frame[ch] = text
    return frame


def _same_values(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    for ch in CHANNELS:
        x, y = a[ch].to_numpy(object), b[ch].to_numpy(object)
        if ((x == "") != (y == "")).any():
            r = int(np.flatnonzero((x == "") != (y == ""))[0])
            return f"{ch} at row {r + 1}: {y[r]!r} where {x[r]!r} was expected"
        have = x != ""
        if IS_CATEGORICAL[ch] and ch != "Capillary refill rate":
            bad = np.flatnonzero(have & (x != y))
        else:
            u, v = x[have].astype(float), y[have].astype(float)
            bad = np.flatnonzero(have)[np.abs(u - v) > 1e-9 * np.maximum(1.0, np.abs(u))]
        if len(bad):
            return f"{ch} at row {bad[0] + 1}: {y[bad[0]]!r} where {x[bad[0]]!r} was expected"
    return None


def series(expected_root: Path, built_root: Path, max_shift_s: float = 60.0, ranges: bool = True,
           shape: Shape = MIMIC3) -> list[str]:
    """The series of the samples both listfiles hold (``listfiles`` checks that they hold the same)."""
    out = []
    want_rows = pd.concat([_listfile(expected_root, shape, s) for s in shape.splits], ignore_index=True).set_index(shape.key)
    got_rows = pd.concat([_listfile(built_root, shape, s) for s in shape.splits], ignore_index=True)
    got_rows = got_rows[got_rows[shape.series] != ""]
    files: dict[tuple[str, str], pd.DataFrame] = {}

    def read(root: Path, name: str, generated: bool) -> pd.DataFrame:
        if (str(root), name) not in files:
            frame = _episode(Path(root) / "ehr" / name)
            files[(str(root), name)] = cleaned(shape.events(frame)) if generated and ranges else (
                shape.events(frame) if generated else frame)
        return files[(str(root), name)]

    for key, name, period in zip(got_rows[shape.key], got_rows[shape.series], got_rows[shape.end].astype(float)):
        end = float(want_rows.loc[key, shape.end])
        full, built = read(expected_root, want_rows.loc[key, shape.series], True), read(built_root, name, False)
        hours = full["Hours"].astype(float).to_numpy()
        charted = (full[CHANNELS] != "").any(axis=1).to_numpy()
        want = full[(hours <= end + EPS) & charted].reset_index(drop=True)
        got = built[built["Hours"].astype(float).to_numpy() <= period + EPS].reset_index(drop=True) \
            if shape.shared_files else built
        label = f"{name} ({shape.key} {key})" if shape.shared_files else name
        if len(want) != len(got):
            out.append(f"{label}: {len(got)} rows where {len(want)} were expected")
            continue
        h, g = want["Hours"].astype(float).to_numpy(), got["Hours"].astype(float).to_numpy()
        off = (np.trunc(h - EPS) != np.trunc(g - EPS)) | (np.abs(g - h) * 3600 > max_shift_s)
        if off.any():
            r = int(np.flatnonzero(off)[0])
            out.append(f"{label}: row {r + 1} at hour {g[r]} where {h[r]} was expected")
            continue
        why = _same_values(want, got)
        if why:
            out.append(f"{label}: {why}")
            continue
        # As the loaders see them: the generator's whole file against its end, the built file against its period.
        a, _ = discretise(np.zeros(len(full), np.int64), hours, {c: full[c].to_numpy(object) for c in CHANNELS},
                          np.array([end]))
        gh = built["Hours"].astype(float).to_numpy()
        b, _ = discretise(np.zeros(len(built), np.int64), gh, {c: built[c].to_numpy(object) for c in CHANNELS},
                          np.array([period]))
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-6):
            out.append(f"{label}: the discretised series differ ({a.shape[0]} and {b.shape[0]} hourly bins)")
    return out


def differences(expected_root: str | Path, built_root: str | Path, max_shift_s: float = 60.0,
                ranges: bool = True, shape: Shape = MIMIC3) -> list[str]:
    """Every difference between the generator's task files and the built ones (empty: equal)."""
    found = listfiles(Path(expected_root), Path(built_root), shape, max_shift_s)
    return found or series(Path(expected_root), Path(built_root), max_shift_s, ranges, shape)


def attrition(dropped: dict[str, int], table: pd.DataFrame) -> list[str]:
    """The build's attrition rows against the raw writer's known drops (``report.json``'s ``dropped``):
    every row the report names excludes exactly that many; every other rule of a step with a known drop
    excludes none (the task's own rows all pass)."""
    out = []
    by_step = table.set_index("step")["excluded"]
    for step, n in sorted(dropped.items()):
        if step not in by_step.index:
            out.append(f"attrition has no row {step!r} (the raw tables drop {n:,} there)")
        elif int(by_step[step]) != n:
            out.append(f"attrition row {step!r} excludes {int(by_step[step]):,}, the raw tables planted {n:,}")
    for step, n in by_step.items():
        if step not in dropped and int(n) != 0:
            out.append(f"attrition row {step!r} excludes {int(n):,}, the raw tables planted none there")
    return out
