"""Step bodies that the MIMIC-III and MIMIC-IV builds share: the cohort's stays read back, the event
tables streamed into stay buckets, and the episode files built from the buckets.

Both builds name their steps alike (``stays``, ``chartevents``, ``labevents``, ``outputevents``,
``episodes``) and write the same files in them, so a step of one database reads a step of the
other's kind the same way.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import dates, episodes, events, tables
from .steps import Context, write_csv

EVENT_TABLES = ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS")  # in this order in the episodes' events
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# One bucket per ~2 GB of uncompressed CHARTEVENTS (gzip shrinks MIMIC's CSVs about 7-fold): a bucket's
# events then fit in a few hundred MB.
BUCKET_BYTES = 2 * 1024**3
GZIP_RATIO = 7


def buckets_for(table: tables.Table) -> int:
    size = table.size * (GZIP_RATIO if table.path.name.lower().endswith(".gz") else 1)
    return max(1, math.ceil(size / BUCKET_BYTES))


def dates_read(table: tables.Table, columns: tuple[str, ...]) -> dict[str, type]:
    """The dtypes of those of ``columns`` the table has (the date checks read them when present)."""
    return {c: str for c in columns if tables.has(table, c)}


def parse_times(frame: pd.DataFrame, table: tables.Table, columns: tuple[str, ...]) -> None:
    """Parse, in place, those of ``columns`` that ``frame`` (read from ``table``) holds; the day of death
    may be a day alone ('YYYY-MM-DD', as MIMIC-IV's dod is)."""
    for col in columns:
        if col in frame:
            formats = (tables.TIMESTAMP, tables.DAY) if col == dates.DEATH_DAY else (tables.TIMESTAMP,)
            frame[col] = tables.times(frame[col], table, col, formats)


def read_times(path: Path, columns: tuple[str, ...], dtype: dict | None = None) -> pd.DataFrame:
    """A step's CSV with its timestamp ``columns`` parsed."""
    frame = pd.read_csv(path, dtype=dtype)
    for col in columns:
        frame[col] = pd.to_datetime(frame[col], format=TIME_FORMAT)
    return frame


def stays(ctx: Context) -> pd.DataFrame:
    return read_times(ctx.step_dir("stays") / "stays.csv", ("INTIME", "OUTTIME"), {"LOS": "float64"})


def run_events(table: str, columns: tuple[str, ...] | None = None):
    def run(ctx: Context, tmp: Path):
        return events.extract(ctx.tables[table], stays(ctx), tmp, ctx.options["buckets"], ctx.options["ranges"], ctx.log,
                              columns=columns)
    return run


def event_tables(ctx: Context) -> list[str]:
    return [t for t in EVENT_TABLES if t in ctx.tables]


def run_episodes(ctx: Context, tmp: Path):
    folders = {t: ctx.step_dir(t.lower()) for t in event_tables(ctx)}
    kept, att = episodes.build(stays(ctx), folders, ctx.options["buckets"], tmp / "ehr", ctx.log)
    write_csv(kept, tmp / "episodes.csv")
    ctx.log(f"      {len(kept):,} episode files, {int(kept['rows'].sum()):,} rows")
    return att
