"""CHARTEVENTS and LABEVENTS: every value of the generator's series as one raw event, and events
that the build's validation, cleaning and episode rules must drop.

Chart times. MIMIC-III records whole seconds, the generator's hours have 4 decimals (0.36 s). A
row's time is its hours rounded up to the whole second, so no event moves into an earlier hourly bin
(an event at hour n, a bin's end, stays there; the discretiser's bins are (n-1, n]); rows of one stay
closer than a second are spread a second apart, so that each stays its own chart time (the build
merges the events of one chart time); an event of the ICU period that rounding would push past its
end is held at the period's last whole second. ``Timing`` counts what rounding could not keep: rows
merged with another, rows moved to another bin, and the largest shift.

Items and values: ``items``. About 3 % of chart events leave ``ICUSTAY_ID`` empty (the build takes
their admission's stay, as it does for every LABEVENTS row).

Distractors, each breaking exactly one rule and counted by the attrition row that must drop it
(``Dropped``): copies of true events without an admission id, with another admission or ICU stay,
without a value, with an unusable value ('ERROR'), a Glasgow coma scale word the discretiser does not
know, a heart rate beyond its outlier bound, a smaller duplicate at the same chart time, a time before
the ICU admission (out of order where the row carries its stay id, ``chartevents:before_stay``; else
outside the ICU period); events of items that are none of the 17 variables'; events of the distractor
stays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..extract import variables
from ..timeseries import CHANNELS, IS_CATEGORICAL, POSSIBLE_VALUES
from . import bulk, items, schema
from .stays import NON_COHORT, Stays
from .volume import Volume

EPS = 1e-6  # the discretiser's and the episode step's slack
BLANK_STAY = 0.03  # chart events without ICUSTAY_ID
UNKNOWN_GCS = "Sleeping"
# Items of neither table's 17 variables (real MIMIC-III itemids: alarms, ventilator settings, routine labs).
OTHER_CHART = [220046, 220047, 223751, 223752, 224641, 220339, 224686, 224687, 224697, 224695, 224696, 220292,
               548, 549, 550, 5815, 5817, 5819, 8549, 8551, 8553, 8554, 1125, 80, 87, 21]
OTHER_LAB = [50868, 50882, 50893, 50902, 50912, 50960, 50970, 50971, 50983, 51006, 51221, 51222, 51248, 51249,
             51250, 51265, 51277, 51279, 51301]


@dataclass
class Timing:
    merged: int = 0  # ICU-period rows that share their chart time with the row before
    moved_bin: int = 0  # ICU-period rows whose hourly bin rounding changed
    max_shift_s: float = 0.0  # largest chart time - generator time, seconds, ICU-period rows


@dataclass
class Dropped:
    """Rows each attrition row must drop, by its step name ('chartevents:admission_id', 'episodes:icu_period')."""

    n: dict[str, int] = field(default_factory=dict)

    def add(self, step: str, count: int) -> None:
        self.n[step] = self.n.get(step, 0) + int(count)


def chart_seconds(stay: np.ndarray, hours: np.ndarray, end: np.ndarray, period: np.ndarray) -> tuple[np.ndarray, np.ndarray, Timing]:
    """Seconds since ICU admission of each generator row (rows grouped by ``stay``, in file order), and
    which rows lie in the ICU period. ``end``: the generator's period (hours, as in its listfile);
    ``period``: the build's (LOS x 24)."""
    k = np.rint(hours * 1e4).astype(np.int64)
    sec = (9 * k + 24) // 25  # ceil(k x 0.36 s), exactly
    first = np.r_[True, stay[1:] != stay[:-1]]
    group = np.cumsum(first) - 1
    i = np.arange(len(sec))
    big = np.int64(1) << 40  # past any stay's span: resets the running maximum at each stay
    spread = np.maximum.accumulate(sec - i + group * big) - group * big + i  # strictly increasing per stay
    inside = hours <= end + EPS
    last = np.floor(period * 3600).astype(np.int64)
    after = np.floor((period + EPS) * 3600).astype(np.int64) + 1
    out = np.where(inside, np.minimum(spread, last), np.maximum(spread, after))
    same = np.r_[False, (out[1:] == out[:-1]) & ~first[1:]] & inside
    moved = np.trunc(out / 3600.0 - EPS) != np.trunc(hours - EPS)
    shift = (out - hours * 3600)[inside]
    timing = Timing(int(same.sum()), int((moved & inside).sum()), float(shift.max()) if len(shift) else 0.0)
    return out, inside, timing


def row_seconds(events: pd.DataFrame, stays: Stays) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, Timing]:
    """Per row of the generator's series: its cohort stay's row of ``stays``, its chart time in seconds
    since the ICU admission and whether it lies in the ICU period (``chart_seconds``); the timing."""
    info = stays.role("cohort").set_index("SERIES").loc[events["series"].to_numpy()]
    sec, inside, timing = chart_seconds(info["ICUSTAY_ID"].to_numpy(), events["Hours"].to_numpy(),
                                        info["END_GEN"].to_numpy(), info["END"].to_numpy())
    return info, sec, inside, timing


def true_events(events: pd.DataFrame, stays: Stays, rng, database: str = "mimic3") -> tuple[pd.DataFrame, Timing, int]:
    """One raw event per non-empty value of the generator's series (MIMIC-IV: as ``items.as_mimic4``
    left them); the timing and the number of values outside the ICU period (the episode step drops them).
    MIMIC-IV's chart events always carry their stay id."""
    info, sec, inside, timing = row_seconds(events, stays)
    stay = info["ICUSTAY_ID"].to_numpy()
    sbp, dbp = (events[c].to_numpy(object) for c in ("Systolic blood pressure", "Diastolic blood pressure"))
    pair = np.where((sbp != "") & (dbp != ""), sbp + "/" + dbp, "")
    parts = []
    for ch in CHANNELS:
        value = events[ch].to_numpy(object)
        rows = np.flatnonzero(value != "")
        if not len(rows):
            continue
        item = items.choose(ch, info["SYSTEM"].to_numpy()[rows], rng, database)
        parts.append(pd.DataFrame({
            "ROW": rows, "CHANNEL": ch, "CLEAN": value[rows], "ITEMID": item["itemid"].to_numpy(),
            "TABLE": item["table"].to_numpy(), "SPELLING": item["spelling"].to_numpy(),
            "VALUEUOM": item["unit"].to_numpy(),
            "VALUE": items.spell(item["spelling"].to_numpy(), value[rows], pair[rows], rng)}))
    cells = pd.concat(parts, ignore_index=True)
    r = cells["ROW"].to_numpy()
    cells["SUBJECT_ID"] = info["SUBJECT_ID"].to_numpy()[r]
    cells["HADM_ID"] = info["HADM_ID"].to_numpy()[r].astype("float64")
    blank = BLANK_STAY if database == "mimic3" else 0.0
    cells["ICUSTAY_ID"] = np.where(rng.random(len(cells)) < blank, np.nan, stay[r].astype("float64"))
    cells["INTIME"] = info["INTIME"].to_numpy()[r]
    cells["TIME"] = info["INTIME"].to_numpy()[r] + sec[r]
    cells["INSIDE"] = inside[r]
    return cells, timing, int((~inside[r]).sum())


def _copies(cells: pd.DataFrame, mask: np.ndarray, share: float, rng) -> pd.DataFrame:
    """A random ``share`` (at least one, if any qualifies) of the rows under ``mask``, copied."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return cells.iloc[:0].copy()
    n = max(1, int(round(share * len(rows))))
    return cells.iloc[np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))].copy()


VITALS = ["Heart Rate", "Respiratory rate", "Oxygen saturation", "Systolic blood pressure", "Diastolic blood pressure",
          "Mean blood pressure"]  # a value 1 lower is still in range: they take the smaller duplicates


def distractors(cells: pd.DataFrame, share: float, duplicate_share: float, rng, dropped: Dropped) -> pd.DataFrame:
    """Copies of true events, each breaking one rule: ``share`` of the qualifying rows per rule,
    ``duplicate_share`` of the vital signs for the smaller duplicates."""
    numeric = ~cells["CHANNEL"].map(IS_CATEGORICAL).to_numpy()
    number = cells["SPELLING"].to_numpy() == "number"
    chart = cells["TABLE"].to_numpy() == "chart"
    heart = (cells["CHANNEL"] == "Heart Rate").to_numpy()
    gcs = cells["CHANNEL"].str.startswith("Glascow").to_numpy() & (cells["CHANNEL"] != "Glascow coma scale total").to_numpy()
    if UNKNOWN_GCS in {v for ch in CHANNELS if ch.startswith("Glascow") for v in POSSIBLE_VALUES[ch]}:
        raise ValueError(f"{UNKNOWN_GCS!r} is a discretiser spelling: it cannot stand for an unknown one")
    out = []

    def rule(table: str, step: str, mask, change, fraction: float = share) -> None:
        for t in (("chart", "lab") if table == "both" else (table,)):
            rows = _copies(cells, mask & ((cells["TABLE"] == t).to_numpy()), fraction, rng)
            change(rows)
            out.append(rows)
            name = {"chart": "chartevents", "lab": "labevents"}[t]
            dropped.add(step if step.startswith("episodes:") else f"{name}:{step}", len(rows))

    everything = np.ones(len(cells), dtype=bool)
    rule("both", "admission_id", everything, lambda r: r.__setitem__("HADM_ID", np.nan))
    rule("both", "admission", everything, lambda r: r.__setitem__("HADM_ID", r["HADM_ID"] + 5_000_000))
    rule("chart", "icu_stay", everything, lambda r: r.__setitem__("ICUSTAY_ID", r["ICUSTAY_ID"].fillna(0) + 7_000_000))
    rule("both", "time_and_value", everything, lambda r: r.__setitem__("VALUE", ""))
    rule("both", "cleaning", numeric & number, lambda r: r.__setitem__("VALUE", "ERROR"))
    rule("chart", "spelling", gcs, lambda r: r.__setitem__("VALUE", UNKNOWN_GCS))
    rule("chart", "ranges", heart & number, lambda r: r.__setitem__("VALUE", "5000"))

    def smaller(r):  # same stay, time and item, a smaller value: the build keeps the largest
        r["VALUE"] = pd.Series(r["VALUE"].astype(float) - 1).astype(str).to_numpy()

    vital = cells["CHANNEL"].isin(VITALS).to_numpy() & number & cells["INSIDE"].to_numpy() & chart
    rule("chart", "episodes:one_per_time", vital, smaller, duplicate_share)

    for t in ("chart", "lab"):  # a time before the ICU admission
        rows = _copies(cells, (cells["TABLE"] == t).to_numpy(), share, rng)
        rows["TIME"] = rows["INTIME"] - rng.integers(60, 24 * 3600, len(rows))
        out.append(rows)
        # Out of order where the row names the stay it precedes (LABEVENTS has no stay id column).
        claimed = int(rows["ICUSTAY_ID"].notna().sum()) if t == "chart" else 0
        dropped.add("chartevents:before_stay", claimed)
        dropped.add("episodes:icu_period", len(rows) - claimed)
    return pd.concat(out, ignore_index=True)


def before_admission(cells: pd.DataFrame, n: int, rng) -> pd.DataFrame:
    """``n`` events like ``cells`` (drawn with replacement) charted before their ICU admission, as a
    hospital's laboratory results are: validated, then outside the ICU period."""
    rows = cells.iloc[rng.integers(0, len(cells), n)].copy() if len(cells) and n > 0 else cells.iloc[:0].copy()
    rows["TIME"] = rows["INTIME"] - rng.integers(60, 7 * 24 * 3600, len(rows))
    return rows


def stay_events(stays: pd.DataFrame, per_hour: float, rng, before_admission: bool = False) -> pd.DataFrame:
    """Heart rates charted through each of ``stays`` (events of the distractor stays), or before their ICU
    admission (``before_admission``: every event outside the ICU period)."""
    length = np.nan_to_num(stays["END"].to_numpy(), nan=24.0)
    m = rng.poisson(np.maximum(length * per_hour, 1.0))
    idx = np.repeat(np.arange(len(stays)), m)
    offset = (rng.random(len(idx)) * length[idx] * 3600).astype(np.int64)
    time = stays["INTIME"].to_numpy()[idx] + (-(offset + 60) if before_admission else offset)
    system = stays["SYSTEM"].to_numpy()[idx]
    return pd.DataFrame({
        "SUBJECT_ID": stays["SUBJECT_ID"].to_numpy()[idx], "HADM_ID": stays["HADM_ID"].to_numpy()[idx].astype(float),
        "ICUSTAY_ID": stays["ICUSTAY_ID"].to_numpy()[idx].astype(float), "TIME": time,
        "ITEMID": np.where(system == "carevue", 211, 220045), "VALUE": np.char.mod("%d", rng.integers(50, 130, len(idx))),
        "VALUEUOM": "bpm", "TABLE": "chart"})


def other_items(stays: pd.DataFrame, n: int, table: str, rng, database: str = "mimic3") -> pd.DataFrame:
    """``n`` events of items that are none of the 17 variables', spread over ``stays`` by length (MIMIC-IV:
    its own itemids only)."""
    chart_items = OTHER_CHART if database == "mimic3" else [i for i in OTHER_CHART if i >= 220_000]
    length = np.nan_to_num(stays["END"].to_numpy(), nan=24.0)
    idx = rng.choice(len(stays), size=n, p=length / length.sum())
    offset = (rng.random(n) * length[idx] * 3600).astype(np.int64)
    value = np.round(rng.gamma(2.0, 20.0, n), 1)
    return pd.DataFrame({
        "SUBJECT_ID": stays["SUBJECT_ID"].to_numpy()[idx], "HADM_ID": stays["HADM_ID"].to_numpy()[idx].astype(float),
        "ICUSTAY_ID": stays["ICUSTAY_ID"].to_numpy()[idx].astype(float) if table == "chart" else np.nan,
        "TIME": stays["INTIME"].to_numpy()[idx] + offset,
        "ITEMID": rng.choice(chart_items if table == "chart" else OTHER_LAB, size=n),
        "VALUE": pd.Series(value).astype(str).to_numpy(), "VALUEUOM": "", "TABLE": table})


def check_other_items() -> None:
    """The filler itemids must be none of the 17 variables' (else they would enter the series)."""
    for name, ids in (("chartevents", OTHER_CHART), ("labevents", OTHER_LAB)):
        mapped = set(variables.item_map(name).items.index) & set(ids)
        if mapped:
            raise ValueError(f"filler itemid {sorted(mapped)[0]} of {name} is one of the 17 variables'")


def frame(events: pd.DataFrame, table: str, rng) -> pd.DataFrame:
    """Events -> rows of MIMIC-III's CHARTEVENTS or LABEVENTS, in the table's columns."""
    n = len(events)
    value = events["VALUE"].astype(str).to_numpy(object)
    numeric = pd.to_numeric(pd.Series(value), errors="coerce").to_numpy()
    hadm = events["HADM_ID"].to_numpy(np.float64)
    out = {"SUBJECT_ID": events["SUBJECT_ID"].to_numpy(),
           "HADM_ID": schema.nullable(np.nan_to_num(hadm).astype(np.int64), np.isnan(hadm)),
           "ITEMID": events["ITEMID"].to_numpy(), "CHARTTIME": schema.timestamps(events["TIME"].to_numpy()),
           "VALUE": value, "VALUENUM": numeric, "VALUEUOM": events["VALUEUOM"].to_numpy()}
    if table == "CHARTEVENTS":
        stay = events["ICUSTAY_ID"].to_numpy(np.float64)
        out.update(ICUSTAY_ID=schema.nullable(np.nan_to_num(stay).astype(np.int64), np.isnan(stay)),
                   STORETIME=schema.timestamps(events["TIME"].to_numpy() + rng.integers(60, 5400, n)),
                   CGID=rng.integers(14_000, 21_000, n), WARNING=0, ERROR=0)
    else:
        out.update(FLAG=np.where(rng.random(n) < 0.3, "abnormal", ""))
    return pd.DataFrame(out)


MASKED_SHARE = 0.3  # MIMIC-IV glucose results (50931) whose text deidentification replaced by '___'


def frame_mimic4(events: pd.DataFrame, table: str, rng) -> tuple[pd.DataFrame, int]:
    """Events -> rows of MIMIC-IV's chartevents or labevents, and how many values are masked: a share of
    the numeric glucose results of item 50931 have the text '___' and the number in ``valuenum`` only,
    as MIMIC-IV's deidentification left them (the build reads such a value from ``valuenum``)."""
    n = len(events)
    value = events["VALUE"].astype(str).to_numpy(object)
    numeric = pd.to_numeric(pd.Series(value), errors="coerce").to_numpy()
    hadm = events["HADM_ID"].to_numpy(np.float64)
    masked = np.zeros(n, dtype=bool)
    out = {"subject_id": events["SUBJECT_ID"].to_numpy(),
           "hadm_id": schema.nullable(np.nan_to_num(hadm).astype(np.int64), np.isnan(hadm)),
           "itemid": events["ITEMID"].to_numpy(), "charttime": schema.timestamps(events["TIME"].to_numpy()),
           "storetime": schema.timestamps(events["TIME"].to_numpy() + rng.integers(60, 5400, n)),
           "valuenum": numeric, "valueuom": events["VALUEUOM"].to_numpy()}
    if table == "chartevents":
        stay = events["ICUSTAY_ID"].to_numpy(np.float64)
        out.update(stay_id=schema.nullable(np.nan_to_num(stay).astype(np.int64), np.isnan(stay)),
                   caregiver_id=rng.integers(10_000, 99_999, n), warning=0)
    else:
        masked = (events["ITEMID"].to_numpy() == 50931) & ~np.isnan(numeric) & (rng.random(n) < MASKED_SHARE)
        value = np.where(masked, "___", value)
        out.update(specimen_id=rng.integers(1, 99_999_999, n), flag=np.where(rng.random(n) < 0.3, "abnormal", ""),
                   priority="ROUTINE")
    out["value"] = value
    return pd.DataFrame(out), int(masked.sum())


EVENT_COLUMNS = ["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "TIME", "ITEMID", "VALUE", "VALUEUOM", "TABLE"]


def mapped_events(events: pd.DataFrame, stays: Stays, volume: Volume, rng, dropped: Dropped,
                  database: str = "mimic3") -> tuple[pd.DataFrame, Timing]:
    """Every event of the 17 variables' items: the task's values (``events``: the generator's series, as
    the database charts them), their broken copies, the distractor stays' heart rates, and (to reach
    ``volume.mapped``) labs before the ICU admission."""
    cells, timing, late = true_events(events, stays, rng, database)
    dropped.add("episodes:icu_period", late)
    copies = distractors(cells, volume.copy_share, volume.duplicate_share, rng, dropped)
    so_far = {t: int((cells["TABLE"] == t).sum() + (copies["TABLE"] == t).sum()) for t in ("chart", "lab")}
    theirs = stays.role(*NON_COHORT)
    hours = float(np.nan_to_num(theirs["END"].to_numpy(), nan=24.0).sum()) or 1.0
    per_hour = max(volume.distractor_events_per_hour, (volume.mapped.get("CHARTEVENTS", 0) - so_far["chart"]) / hours)
    their_events = stay_events(theirs, per_hour, rng)
    dropped.add("chartevents:cohort_subjects", len(their_events))
    no_los = stay_events(stays.role("no_los"), volume.distractor_events_per_hour, rng)
    dropped.add("episodes:length_of_stay", len(no_los))
    early = stay_events(stays.role("outside"), volume.distractor_events_per_hour, rng, before_admission=True)
    dropped.add("chartevents:before_stay", len(early))  # chart events naming the stay they precede
    labs = cells[cells["TABLE"] == "lab"]
    hospital = before_admission(labs, volume.mapped.get("LABEVENTS", 0) - so_far["lab"], rng)
    dropped.add("episodes:icu_period", len(hospital))
    parts = [cells, copies, their_events, no_los, early, hospital]
    return pd.concat([p[EVENT_COLUMNS] for p in parts], ignore_index=True), timing


def write_tables(mapped: pd.DataFrame, stays: Stays, volume: Volume, rng, dropped: Dropped, out, log,
                 database: str = "mimic3") -> tuple[dict[str, int], int]:
    """CHARTEVENTS and LABEVENTS (MIMIC-IV: chartevents, labevents): the mapped events, then rows of other
    items up to the table's target; rows written per table, and (MIMIC-IV) how many values are masked."""
    check_other_items()
    everyone = stays.table[~stays.table["ROLE"].isin(("no_events", "hospital"))]
    rows, masked = {}, 0
    for name, t, least in (("CHARTEVENTS", "chart", volume.other_chart), ("LABEVENTS", "lab", volume.other_lab)):
        table = name if database == "mimic3" else name.lower()
        writer = schema.TableWriter(out, table, database)

        def append(events: pd.DataFrame) -> None:
            nonlocal masked
            if database == "mimic3":
                writer.append(frame(events, name, rng))
            else:
                rows_iv, hidden = frame_mimic4(events, table, rng)
                writer.append(rows_iv)
                masked += hidden

        try:
            append(mapped[mapped["TABLE"] == t])
            other = max(least, volume.targets.get(name, 0) - writer.rows)
            for n in bulk.chunks(other):
                append(other_items(everyone, n, t, rng, database))
                log(f"      {table}: {writer.rows:,} rows written")
        finally:
            writer.close()
        dropped.add(f"{name.lower()}:itemids", other)
        rows[table] = writer.rows
    return rows, masked


def output_events(stays: Stays, volume: Volume, rng, out, database: str = "mimic3", dropped: Dropped | None = None) -> int:
    """Urine output through each ICU stay: OUTPUTEVENTS has none of the 17 variables' items (the MIMIC-III
    build does not read it; the MIMIC-IV build reads it and drops every row at ``outputevents:itemids``)."""
    t = stays.table[stays.table["ROLE"] != "hospital"]
    length = np.nan_to_num(t["END"].to_numpy(), nan=24.0)
    per_hour = max(volume.output_per_hour, volume.targets.get("OUTPUTEVENTS", 0) / length.sum())
    m = rng.poisson(length * per_hour)
    i = np.repeat(np.arange(len(t)), m)
    time = t["INTIME"].to_numpy()[i] + (rng.random(len(i)) * length[i] * 3600).astype(np.int64)
    if dropped is not None:
        dropped.add("outputevents:itemids", len(i))
    if database == "mimic3":
        frame = pd.DataFrame({"SUBJECT_ID": t["SUBJECT_ID"].to_numpy()[i], "HADM_ID": t["HADM_ID"].to_numpy()[i],
                              "ICUSTAY_ID": t["ICUSTAY_ID"].to_numpy()[i], "CHARTTIME": schema.timestamps(time),
                              "ITEMID": 40055, "VALUE": rng.integers(0, 400, len(i)), "VALUEUOM": "ml",
                              "STORETIME": schema.timestamps(time + 900), "CGID": rng.integers(14_000, 21_000, len(i))})
        return schema.write(out, "OUTPUTEVENTS", frame)
    frame = pd.DataFrame({"subject_id": t["SUBJECT_ID"].to_numpy()[i], "hadm_id": t["HADM_ID"].to_numpy()[i],
                          "stay_id": t["ICUSTAY_ID"].to_numpy()[i], "caregiver_id": rng.integers(10_000, 99_999, len(i)),
                          "charttime": schema.timestamps(time), "storetime": schema.timestamps(time + 900),
                          "itemid": 226559, "value": rng.integers(0, 400, len(i)), "valueuom": "ml"})
    return schema.write(out, "outputevents", frame, "mimic4")
