"""What 'equal' means between the generator's own task files and the ones built from its raw tables.

Listfiles (``phenotyping/{train,test}_multimodal_listfile.csv``): the same rows in the same order
in each split, with identical ``patient_id``, ``stay_id``, ``stay`` and 25 labels, ``period_length``
within 1e-6 h, and ``notes`` identical once whitespace runs are single spaces (the build's cleaning
makes them so). A generator sample without a series has no counterpart: the build keeps no stay
without events, so it is not expected.

Series (``ehr/<stay>``): per file, the generator's rows of the ICU period (hours <= period + 1e-6,
the discretiser's bound) that hold a value, one to one with the built rows, in order; each pair in
the same hourly bin (``trunc(hours - 1e-6)``) and within ``max_shift_s`` seconds (chart times are
whole seconds); each cell empty in both or holding the same value: identical text for categorical
channels, numbers within 1e-9 relative (unit conversions round in the last digits) after the build's
range cleaning (``variable_ranges.csv``: the generator's glucose goes down to 30 mg/dL, the valid
range starts at 33, so the build raises such a value to 33 as it would a real one; ``ranges=False``
for a build with ``--no-ranges``). The generator's
rows after the period, or without a value, have no counterpart (the build drops events outside the
ICU stay and writes rows only where something was charted). Then the discretised series, as the
loaders see them, are equal within float32 rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..extract import variables
from ..loaders import EPISODE_HEADER
from ..timeseries import CHANNELS, IS_CATEGORICAL, discretise

SPLITS = ("train", "test")
KEYS = ["patient_id", "stay_id", "stay"]
EPS = 1e-6


def _listfile(root: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(Path(root) / "phenotyping" / f"{split}_multimodal_listfile.csv", dtype=str,
                       keep_default_na=False)


def listfiles(expected_root: Path, built_root: Path) -> list[str]:
    out = []
    for split in SPLITS:
        want, got = _listfile(expected_root, split), _listfile(built_root, split)
        want = want[want["stay"] != ""].reset_index(drop=True)
        if list(want.columns) != list(got.columns):
            out.append(f"{split}: columns {list(got.columns)} where {list(want.columns)} were expected")
            continue
        if len(want) != len(got) or (want[KEYS].to_numpy() != got[KEYS].to_numpy()).any():
            missing = set(want["stay_id"]) - set(got["stay_id"])
            extra = set(got["stay_id"]) - set(want["stay_id"])
            out.append(f"{split}: {len(got)} rows where {len(want)} were expected (missing stays {sorted(missing)[:5]}, "
                       f"extra {sorted(extra)[:5]}, or another order)")
            continue
        labels = list(want.columns[5:])
        for col in labels:
            bad = np.flatnonzero(want[col].astype(int).to_numpy() != got[col].astype(int).to_numpy())
            if len(bad):
                out.append(f"{split}: label {col!r} differs for stay {want['stay_id'][bad[0]]} ({len(bad)} stays)")
        gap = np.abs(want["period_length"].astype(float).to_numpy() - got["period_length"].astype(float).to_numpy())
        if (gap > EPS).any():
            i = int(np.argmax(gap))
            out.append(f"{split}: period_length of stay {want['stay_id'][i]} is {got['period_length'][i]}, "
                       f"expected {want['period_length'][i]}")
        notes = want["notes"].str.split().str.join(" ").fillna("")
        bad = np.flatnonzero(notes.to_numpy() != got["notes"].to_numpy())
        if len(bad):
            out.append(f"{split}: note of stay {want['stay_id'][bad[0]]} is {got['notes'][bad[0]][:80]!r}, expected "
                       f"{notes[bad[0]][:80]!r} ({len(bad)} stays)")
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


def series(expected_root: Path, built_root: Path, max_shift_s: float = 60.0, ranges: bool = True) -> list[str]:
    """The series of the stays both listfiles hold (``listfiles`` checks that they hold the same)."""
    out = []
    want_rows = pd.concat([_listfile(expected_root, s) for s in SPLITS], ignore_index=True).set_index("stay")
    got_rows = pd.concat([_listfile(built_root, s) for s in SPLITS], ignore_index=True)
    for name, period in zip(got_rows["stay"], got_rows["period_length"].astype(float)):
        end = float(want_rows.loc[name, "period_length"])
        full, got = _episode(Path(expected_root) / "ehr" / name), _episode(Path(built_root) / "ehr" / name)
        full = cleaned(full) if ranges else full
        hours = full["Hours"].astype(float).to_numpy()
        charted = (full[CHANNELS] != "").any(axis=1).to_numpy()
        want = full[(hours <= end + EPS) & charted].reset_index(drop=True)
        if len(want) != len(got):
            out.append(f"{name}: {len(got)} rows where {len(want)} were expected")
            continue
        h, g = want["Hours"].astype(float).to_numpy(), got["Hours"].astype(float).to_numpy()
        off = (np.trunc(h - EPS) != np.trunc(g - EPS)) | (np.abs(g - h) * 3600 > max_shift_s)
        if off.any():
            r = int(np.flatnonzero(off)[0])
            out.append(f"{name}: row {r + 1} at hour {g[r]} where {h[r]} was expected")
            continue
        why = _same_values(want, got)
        if why:
            out.append(f"{name}: {why}")
            continue
        # As the loaders see them: the generator's whole file against its end, the built file against its period.
        a, _ = discretise(np.zeros(len(full), np.int64), hours, {c: full[c].to_numpy(object) for c in CHANNELS},
                          np.array([end]))
        b, _ = discretise(np.zeros(len(got), np.int64), g, {c: got[c].to_numpy(object) for c in CHANNELS},
                          np.array([period]))
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-6):
            out.append(f"{name}: the discretised series differ ({a.shape[0]} and {b.shape[0]} hourly bins)")
    return out


def differences(expected_root: str | Path, built_root: str | Path, max_shift_s: float = 60.0,
                ranges: bool = True) -> list[str]:
    """Every difference between the generator's task files and the built ones (empty: equal)."""
    found = listfiles(Path(expected_root), Path(built_root))
    return found or series(Path(expected_root), Path(built_root), max_shift_s, ranges)


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
