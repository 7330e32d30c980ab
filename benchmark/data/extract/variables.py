"""The 17 clinical variables: MIMIC-III itemids -> variables, unit cleaning, range cleaning.

``itemid_to_variable_map.csv`` (mimic3-benchmarks) names, per itemid, the variable (``LEVEL2``); the
rows with ``STATUS`` 'ready' and a positive ``COUNT`` are the 17 variables of the benchmark (the
discretiser's channels). Cleaning, per variable, as Harutyunyan et al. describe it:

- blood pressures: '120/80' gives the systolic (first) or diastolic (second) number, else the number;
- capillary refill: 'Normal <3 secs' / 'Brisk' -> 0, 'Abnormal >3 secs' / 'Delayed' -> 1, else dropped;
- FiO2: a percentage (> 1, unit not torr) -> a fraction; SpO2: a fraction (<= 1) -> a percentage;
- temperature: Fahrenheit (unit or item label with 'F', or a value >= 79) -> Celsius;
- weight: ounces -> pounds, pounds -> kg; height: inches -> cm (rounded);
- the other numeric variables: the number, or dropped if the value is not one ('ERROR', '<1', ...);
- Glasgow coma scale items: the charted text, which must be one of the discretiser's spellings.

Then ``variable_ranges.csv`` (switch ``ranges``, on by default): a value outside [OUTLIER LOW, OUTLIER
HIGH] is dropped, one outside [VALID LOW, VALID HIGH] but inside the outlier range is moved to the
nearest valid bound. The published normaliser statistics look computed without this step (SpO2 std
5135: spec B18), so ``ranges=False`` keeps every cleaned value.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from ..timeseries import CHANNELS, IS_CATEGORICAL, POSSIBLE_VALUES

_RESOURCES = resources.files("benchmark.data").joinpath("resources")
CODE = {name: i for i, name in enumerate(CHANNELS)}  # variable -> its code in the event files


@dataclass(frozen=True)
class ItemMap:
    """The 'ready' itemids of one source table: itemid -> variable code and the item's label."""

    items: pd.DataFrame  # index ITEMID; columns CODE (int8), LABEL (str)

    def __contains__(self, itemid: int) -> bool:
        return itemid in self.items.index


def item_map(linksto: str) -> ItemMap:
    """The itemids of ``linksto`` ('chartevents' or 'labevents') mapped to the 17 variables."""
    with _RESOURCES.joinpath("itemid_to_variable_map.csv").open() as fh:
        raw = pd.read_csv(fh, dtype=str, keep_default_na=False)
    count = pd.to_numeric(raw["COUNT"], errors="coerce").fillna(0)
    ready = raw[(raw["STATUS"] == "ready") & (raw["LEVEL2"] != "") & (count > 0) & (raw["LINKSTO"] == linksto)]
    unknown = set(ready["LEVEL2"]) - set(CODE)
    if unknown:  # the map and the discretiser config are shipped together; this guards an edited copy
        raise ValueError(f"itemid_to_variable_map.csv: variables {sorted(unknown)} are not discretiser channels")
    if ready["ITEMID"].duplicated().any():  # an event's variable must be one lookup, never two rows
        raise ValueError(f"itemid_to_variable_map.csv: itemid {ready['ITEMID'][ready['ITEMID'].duplicated()].iloc[0]} "
                         f"is mapped twice for {linksto}")
    items = pd.DataFrame({"CODE": ready["LEVEL2"].map(CODE).astype(np.int8).to_numpy(),
                          "LABEL": ready["MIMIC LABEL"].to_numpy()}, index=ready["ITEMID"].astype(np.int64))
    return ItemMap(items)


def ranges() -> pd.DataFrame:
    """Per continuous channel (index: code), OUTLIER LOW, VALID LOW, VALID HIGH, OUTLIER HIGH."""
    with _RESOURCES.joinpath("variable_ranges.csv").open() as fh:
        raw = pd.read_csv(fh)
    raw = raw[raw["LEVEL1"].isna()]  # the per-variable rows (not Bilirubin's sub-kinds)
    by_name = {str(n).lower(): row for n, row in raw.set_index("LEVEL2").iterrows()}
    rows = {CODE[ch]: by_name[ch.lower()] for ch in CHANNELS if not IS_CATEGORICAL[ch]}  # 'Heart Rate' ~ 'Heart rate'
    cols = ["OUTLIER LOW", "VALID LOW", "VALID HIGH", "OUTLIER HIGH"]
    return pd.DataFrame({c: [float(rows[k][c]) for k in rows] for c in cols}, index=list(rows))


def _number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")  # "104" and "104.5" alike: floats


def _pressure(part: int):
    def clean(values, units, labels):
        pair = values.str.extract(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)")[part]
        return pd.to_numeric(pair, errors="coerce").fillna(_number(values))
    return clean


def _refill(values, units, labels):
    code = pd.Series(np.nan, index=values.index)
    code[values.isin(["Normal <3 secs", "Brisk"])] = 0.0
    code[values.isin(["Abnormal >3 secs", "Delayed"])] = 1.0
    return code


def _fio2(values, units, labels):
    v = _number(values)
    percent = (v > 1.0) & ~units.str.lower().str.contains("torr", regex=False)
    return v.where(~percent, v / 100.0)


def _spo2(values, units, labels):
    v = _number(values)
    return v.where(~(v <= 1.0), v * 100.0)


def _temperature(values, units, labels):
    v = _number(values)
    fahrenheit = units.str.contains("F", regex=False) | labels.str.contains("F", regex=False) | (v >= 79)
    return v.where(~fahrenheit, (v - 32.0) * 5.0 / 9.0)


def _weight(values, units, labels):
    v = _number(values)
    text = units.str.lower() + " " + labels.str.lower()
    ounces = text.str.contains("oz", regex=False)
    pounds = ounces | text.str.contains("lb", regex=False)
    v = v.where(~ounces, v / 16.0)
    return v.where(~pounds, v * 0.453592)


def _height(values, units, labels):
    v = _number(values)
    inches = (units.str.lower() + " " + labels.str.lower()).str.contains("inch", regex=False)
    return v.where(~inches, np.round(v * 2.54))


def _numeric(values, units, labels):
    return _number(values)


CLEANERS = {
    "Capillary refill rate": _refill,
    "Diastolic blood pressure": _pressure(1),
    "Systolic blood pressure": _pressure(0),
    "Fraction inspired oxygen": _fio2,
    "Oxygen saturation": _spo2,
    "Temperature": _temperature,
    "Weight": _weight,
    "Height": _height,
}


def clean(code: np.ndarray, values: pd.Series, units: pd.Series, labels: pd.Series,
          use_ranges: bool) -> tuple[pd.Series, dict[str, int]]:
    """Cleaned values as strings (NaN = dropped) and the count of values dropped per reason.

    ``code`` is each event's variable, ``values`` its charted text, ``units``/``labels`` its unit and
    its item's label ('' if none)."""
    out = pd.Series(np.nan, index=values.index, dtype=object)
    dropped = {"unusable": 0, "outlier": 0, "spelling": 0}
    clipped = 0
    bounds = ranges() if use_ranges else None
    for ch in CHANNELS:
        rows = code == CODE[ch]
        if not rows.any():
            continue
        v, u, lab = values[rows], units[rows], labels[rows]
        if IS_CATEGORICAL[ch] and ch != "Capillary refill rate":
            text = v.str.strip()
            known = text.isin(POSSIBLE_VALUES[ch])
            dropped["spelling"] += int((~known).sum())
            out[rows] = text.where(known)
            continue
        x = CLEANERS.get(ch, _numeric)(v, u, lab).astype("float64")  # one text form per value, whatever the chunk
        dropped["unusable"] += int(x.isna().sum())
        if bounds is not None and CODE[ch] in bounds.index:
            lo_out, lo, hi, hi_out = bounds.loc[CODE[ch]]
            outlier = (x < lo_out) | (x > hi_out)
            dropped["outlier"] += int(outlier.sum())
            x = x.where(~outlier)
            clipped += int(((x < lo) | (x > hi)).sum())
            x = x.clip(lo, hi)
        out[rows] = x.astype(str).where(x.notna())  # shortest round-trip text, as the reference writes floats
    dropped["clipped"] = clipped
    return out, dropped
