"""CHARTEVENTS and LABEVENTS (MIMIC-IV: and OUTPUTEVENTS) -> validated, cleaned events of the cohort, in stay buckets on disk.

A table is streamed in chunks (CHARTEVENTS is ~330 M rows in MIMIC-III): each chunk is cut to the 17
variables' itemids and the cohort's subjects first (cheap integer tests, so most rows leave before any
text is parsed), then validated (``validate``), its times parsed (a malformed one is an error naming
the file, column and row; an empty one drops the event), events whose stay id names a cohort stay
but which are charted before that stay's INTIME dropped (``dates``: out of order), its values cleaned
(``variables``), and appended to the bucket file of its stay (``ICUSTAY_ID % buckets``). The episode step then reads
one bucket at a time, so memory is bounded by a bucket, not by the table. The MIMIC-III build does not
read OUTPUTEVENTS: none of the 17 variables comes from it. The MIMIC-IV build reads it, as the
reference does (its itemids pass through the same map, which links none of them to a variable, so
its attrition shows every row dropped at ``itemids``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import dates, tables, validate, variables
from .steps import Attrition

COLUMNS = {
    "CHARTEVENTS": ("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUEUOM"),
    "LABEVENTS": ("SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUEUOM"),
}
OUTPUTEVENTS = ("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUEUOM")
_ALL_COLUMNS = {**COLUMNS, "OUTPUTEVENTS": OUTPUTEVENTS}
# MIMIC-IV's deidentification replaced some values' text by '___' (in the demo, every glucose of
# LABEVENTS' 50931) while VALUENUM kept the number: read with VALUENUM, such a value is the number.
MASKED = ("___", "")
_DTYPES = {"SUBJECT_ID": "int64", "HADM_ID": "float64", "ICUSTAY_ID": "float64", "ITEMID": "int64",
           "CHARTTIME": str, "VALUE": str, "VALUEUOM": str, "VALUENUM": str}
_EXCLUDED = ("items", "subjects", "no_hadm", "other_hadm", "other_stay", "empty", "before", "unusable", "spelling",
             "outlier")
EVENT_HEADER = ["ICUSTAY_ID", "TIME", "CODE", "VALUE"]  # TIME: seconds since 1970 (MIMIC's shifted dates)


def bucket_path(folder: Path, table: str, bucket: int) -> Path:
    return folder / f"{table.lower()}-{bucket:03d}.csv"


class Counter:
    """Event counts per rule, summed over the chunks, then written as attrition rows."""

    def __init__(self):
        self.n = {}

    def add(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.n[k] = self.n.get(k, 0) + int(v)

    def kept(self) -> int:
        return self.n.get("read", 0) - sum(v for k, v in self.n.items() if k in _EXCLUDED)

    def attrition(self, table: str, use_ranges: bool, stay_ids: bool = True) -> Attrition:
        att, t, n = Attrition(), table.lower(), self.n.get
        left = n("read", 0)
        att.add(t, left, 0, f"rows of {table}", f"{t} rows")
        rules = [
            ("itemids", "items", "itemid is not one of the 17 variables' (itemid_to_variable_map.csv, status ready)"),
            ("cohort_subjects", "subjects", "subject has no cohort stay"),
            ("admission_id", "no_hadm", validate.REASONS["no_hadm"]),
            ("admission", "other_hadm", validate.REASONS["other_hadm"]),
            ("icu_stay", "other_stay", validate.REASONS["other_stay"]
             + f"; {n('recovered', 0):,} events without one took their admission's stay"),
            ("time_and_value", "empty", "no CHARTTIME or no VALUE" + (
                f"; {n('unmasked', 0):,} masked values ('___') read from VALUENUM" if "unmasked" in self.n else "")),
            ("before_stay", "before", dates.BEFORE_STAY if stay_ids else f"(no ICUSTAY_ID in {table}: no stay to be before)"),
            ("cleaning", "unusable", "value unusable after unit cleaning (not a number, unknown refill text)"),
            ("spelling", "spelling", "Glasgow coma scale text that is none of the discretiser's spellings"),
        ]
        if use_ranges:
            rules.append(("ranges", "outlier", "outside the variable's outlier range (variable_ranges.csv); "
                          f"{n('clipped', 0):,} more moved to the nearest valid bound"))
        for step, key, reason in rules:
            gone = n(key, 0)
            left -= gone
            att.add(f"{t}:{step}", left, gone, reason, f"{t} rows")
        return att


def extract(table: tables.Table, stays: pd.DataFrame, folder: Path, buckets: int, use_ranges: bool,
            log, chunk_rows: int = tables.CHUNK_ROWS, columns: tuple[str, ...] | None = None) -> Attrition:
    """Stream ``table`` into ``buckets`` bucket files under ``folder``; the attrition of its events.
    ``columns``: the columns read, if not the table's default (MIMIC-IV adds VALUENUM)."""
    items = variables.item_map(table.name.lower())
    subjects = pd.Index(stays["SUBJECT_ID"].unique())
    lookup = validate.admissions(stays)
    paths = [bucket_path(folder, table.name, b) for b in range(buckets)]
    for p in paths:
        p.write_text(",".join(EVENT_HEADER) + "\n")
    counter = Counter()
    dtypes = {c: _DTYPES[c] for c in (columns or _ALL_COLUMNS[table.name])}
    intime = stays.set_index("ICUSTAY_ID")["INTIME"]
    read = 0
    for i, chunk in enumerate(tables.chunks(table, dtypes, chunk_rows), 1):
        read += len(chunk)
        _append(_one_chunk(chunk, items, subjects, lookup, intime, use_ranges, counter, table), paths, buckets)
        if i % 10 == 0:  # a line per ~20 M rows: CHARTEVENTS takes minutes
            log(f"      {table.name}: {read:,} rows read, {counter.kept():,} events kept so far")
    log(f"      {table.name}: {read:,} rows read, {counter.kept():,} events kept")
    return counter.attrition(table.name, use_ranges, "ICUSTAY_ID" in dtypes)


def _one_chunk(chunk: pd.DataFrame, items: variables.ItemMap, subjects: pd.Index, lookup: pd.DataFrame,
               intime: pd.Series, use_ranges: bool, counter: Counter, table: tables.Table) -> pd.DataFrame:
    counts = {"read": len(chunk)}
    mapped = chunk["ITEMID"].isin(items.items.index)
    counts["items"] = int((~mapped).sum())
    chunk = chunk[mapped]
    ours = chunk["SUBJECT_ID"].isin(subjects)
    counts["subjects"] = int((~ours).sum())
    chunk = chunk[ours]
    given = chunk["ICUSTAY_ID"].notna() if "ICUSTAY_ID" in chunk else pd.Series(False, index=chunk.index)
    events, checked = validate.validate(chunk.assign(GIVEN=given), lookup)
    counts.update({k: checked[k] for k in ("no_hadm", "other_hadm", "other_stay", "recovered")})
    if "VALUENUM" in events:
        events, counts["unmasked"] = _unmask(events)
    time = tables.times(events["CHARTTIME"], table, "CHARTTIME")
    present = time.notna() & events["VALUE"].notna() & (events["VALUE"].str.strip() != "")
    counts["empty"] = int((~present).sum())
    events, time = events[present], time[present]
    before = events["GIVEN"].to_numpy() & (time.to_numpy() < intime.reindex(events["ICUSTAY_ID"].to_numpy()).to_numpy())
    counts["before"] = int(before.sum())
    events, time = events[~before], time[~before]
    item = items.items.loc[events["ITEMID"].to_numpy()]
    code = item["CODE"].to_numpy()
    value, dropped = variables.clean(code, events["VALUE"], events["VALUEUOM"].fillna(""),
                                     pd.Series(item["LABEL"].to_numpy(), index=events.index), use_ranges)
    counts.update(dropped)
    keep = value.notna().to_numpy()
    counter.add(counts)
    return pd.DataFrame({"ICUSTAY_ID": events["ICUSTAY_ID"].to_numpy()[keep],
                         "TIME": (time.to_numpy()[keep].astype("datetime64[s]").astype(np.int64)),
                         "CODE": code[keep], "VALUE": value.to_numpy()[keep]})


def _unmask(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    masked = events["VALUE"].fillna("").str.strip().isin(MASKED) & events["VALUENUM"].notna()
    if masked.any():
        events = events.assign(VALUE=events["VALUE"].where(~masked, events["VALUENUM"]))
    return events, int(masked.sum())


def _append(events: pd.DataFrame, paths: list[Path], buckets: int) -> None:
    if not len(events):
        return
    which = events["ICUSTAY_ID"].to_numpy() % buckets
    for b in np.unique(which):
        events[which == b].to_csv(paths[b], mode="a", header=False, index=False)


def read_bucket(folder: Path, table: str, bucket: int) -> pd.DataFrame:
    return pd.read_csv(bucket_path(folder, table, bucket), dtype={"ICUSTAY_ID": "int64", "TIME": "int64",
                                                                   "CODE": "int8", "VALUE": str},
                       keep_default_na=False)
