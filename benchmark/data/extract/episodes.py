"""Episodes (Harutyunyan's ``extract_episodes_from_subjects`` and ``create_phenotyping``): one time
series file per cohort stay, its rows the chart times within the ICU stay.

Per stay: hours since ICU admission; only events with 0 < hours < LOS (in hours, from ICUSTAYS.LOS),
within 1e-6, are kept (the phenotyping task sees the whole ICU period); events at one chart time of
one variable are one value (the largest, as the reference keeps the last after sorting by value); one
row per chart time, a column per variable, '' where not charted. A stay without LOS, or without any
event within its ICU period, has no episode and leaves the task. The files are
``ehr/{SUBJECT_ID}_episode{k}_timeseries.csv`` with the header ``Hours`` + the 17 variables, which is
what the loaders read (``loaders.EPISODE_HEADER``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..loaders import EPISODE_HEADER
from ..timeseries import CHANNELS
from . import events as ev
from .steps import Attrition

EPS = 1e-6


def episode_name(subject: np.ndarray, episode: np.ndarray) -> np.ndarray:
    return (pd.Series(subject).astype(str) + "_episode" + pd.Series(episode).astype(str) + "_timeseries.csv").to_numpy()


def in_window(frame: pd.DataFrame, stays: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Events with their hours since ICU admission, cut to the ICU period of their stay."""
    info = stays.set_index("ICUSTAY_ID").reindex(frame["ICUSTAY_ID"].to_numpy())
    hours = (frame["TIME"].to_numpy() - info["INTIME_S"].to_numpy()) / 3600.0
    period = info["LOS"].to_numpy() * 24.0
    no_los = np.isnan(period)
    inside = ~no_los & (hours > -EPS) & (hours < period + EPS)
    counts = {"no_los": int(no_los.sum()), "outside": int((~no_los & ~inside).sum())}
    return frame[inside].assign(HOURS=hours[inside]), counts


def pivot(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Long events -> one row per (stay, chart time), sorted; and the number of same-time duplicates merged."""
    number = pd.to_numeric(frame["VALUE"], errors="coerce")
    frame = frame.assign(NUMBER=number).sort_values(["ICUSTAY_ID", "TIME", "CODE", "NUMBER", "VALUE"], kind="stable")
    last = ~frame.duplicated(["ICUSTAY_ID", "TIME", "CODE"], keep="last")
    duplicates = int((~last).sum())
    frame = frame[last.to_numpy()]
    stay, time = frame["ICUSTAY_ID"].to_numpy(), frame["TIME"].to_numpy()
    new_row = np.ones(len(frame), dtype=bool)
    new_row[1:] = (stay[1:] != stay[:-1]) | (time[1:] != time[:-1])
    row = np.cumsum(new_row) - 1
    grid = np.full((int(new_row.sum()), len(CHANNELS)), "", dtype=object)
    grid[row, frame["CODE"].to_numpy().astype(np.int64)] = frame["VALUE"].to_numpy()
    table = pd.DataFrame(grid, columns=CHANNELS)
    table.insert(0, "Hours", frame["HOURS"].to_numpy()[new_row])
    table.insert(0, "ICUSTAY_ID", stay[new_row])
    return table, duplicates


def write_files(table: pd.DataFrame, names: pd.Series, folder: Path) -> pd.DataFrame:
    """One CSV per stay of ``table`` (rows grouped by stay, in order); per stay (index) the rows written
    and the hours of its first row (the diagnosis task's series starts there).

    The whole table is formatted by pandas once and cut at line ends, so the Python loop runs per
    stay (file), never per row."""
    body = table.drop(columns="ICUSTAY_ID").to_csv(index=False, header=False, lineterminator="\n").encode()
    line_end = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord("\n"))
    stay = table["ICUSTAY_ID"].to_numpy()
    first = np.flatnonzero(np.r_[True, stay[1:] != stay[:-1]]) if len(stay) else np.zeros(0, dtype=np.int64)
    last = np.r_[first[1:], len(stay)] - 1
    header = (",".join(EPISODE_HEADER) + "\n").encode()
    for a, b, s in zip(first, last, stay[first]):
        start = line_end[a - 1] + 1 if a else 0
        (folder / names[s]).write_bytes(header + body[start:line_end[b] + 1])
    return pd.DataFrame({"rows": last - first + 1, "first_hours": table["Hours"].to_numpy()[first]}, index=stay[first])


def build(stays: pd.DataFrame, event_dir: dict[str, Path], buckets: int, ehr: Path, log) -> tuple[pd.DataFrame, Attrition]:
    """The episode files of every bucket in ``ehr``; per kept stay its file name, period and row count.
    ``event_dir`` names the folder of each event table's buckets (the tables read, in order)."""
    stays = stays.assign(INTIME_S=stays["INTIME"].to_numpy().astype("datetime64[s]").astype(np.int64))
    names = pd.Series(episode_name(stays["SUBJECT_ID"].to_numpy(), stays["EPISODE"].to_numpy()),
                      index=stays["ICUSTAY_ID"].to_numpy())
    ehr.mkdir(parents=True, exist_ok=True)
    counts = {"events": 0, "no_los": 0, "outside": 0, "duplicates": 0}
    rows = []
    for b in range(buckets):
        frame = pd.concat([ev.read_bucket(event_dir[t], t, b) for t in event_dir], ignore_index=True)
        counts["events"] += len(frame)
        frame, cut = in_window(frame, stays)
        table, dup = pivot(frame)
        counts["no_los"] += cut["no_los"]
        counts["outside"] += cut["outside"]
        counts["duplicates"] += dup
        rows.append(write_files(table, names, ehr))
        if buckets > 1:
            log(f"      episodes: bucket {b + 1}/{buckets} written")
    written = pd.concat(rows) if rows else pd.DataFrame({"rows": pd.Series(dtype=np.int64), "first_hours": 0.0})
    return _kept(stays, names, written), _attrition(stays, written, counts, list(event_dir))


def _kept(stays: pd.DataFrame, names: pd.Series, written: pd.DataFrame) -> pd.DataFrame:
    kept = stays[stays["ICUSTAY_ID"].isin(written.index)]
    return pd.DataFrame({
        "SUBJECT_ID": kept["SUBJECT_ID"].to_numpy(), "ICUSTAY_ID": kept["ICUSTAY_ID"].to_numpy(),
        "EPISODE": kept["EPISODE"].to_numpy(), "stay": names[kept["ICUSTAY_ID"]].to_numpy(),
        "period_length": kept["LOS"].to_numpy() * 24.0, "rows": written["rows"][kept["ICUSTAY_ID"]].to_numpy(),
        "first_hours": written["first_hours"][kept["ICUSTAY_ID"]].to_numpy(),
    })


def _attrition(stays: pd.DataFrame, written: pd.DataFrame, counts: dict[str, int], sources: list[str]) -> Attrition:
    att = Attrition()
    left = counts["events"]
    att.add("events", left, 0, f"validated, cleaned events of {', '.join(sources[:-1]) + ' and ' if len(sources) > 1 else ''}"
                               f"{sources[-1]}", "events")
    for step, key, reason in (("length_of_stay", "no_los", "the stay has no length of stay (ICUSTAYS.LOS empty)"),
                              ("icu_period", "outside", "outside the ICU stay (hours since admission not in [0, LOS])"),
                              ("one_per_time", "duplicates", "same stay, chart time and variable as another (the largest value kept)")):
        left -= counts[key]
        att.add(f"episodes:{step}", left, counts[key], reason, "events")
    no_los = int(stays["LOS"].isna().sum())
    att.add("length_of_stay", len(stays) - no_los, no_los, "no length of stay (ICUSTAYS.LOS empty)", "stays")
    att.add("events_in_icu", len(written), len(stays) - no_los - len(written),
            "no event of the 17 variables within the ICU stay", "stays")
    return att
