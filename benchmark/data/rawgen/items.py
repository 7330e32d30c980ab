"""The 17 variables as MIMIC-III items: per variable, the itemids that chart it and how a clean value is
spelt in each, so that the build's unit cleaning (``extract/variables.py``) gives the value back.

Each row of ``ITEMS`` is an itemid of ``itemid_to_variable_map.csv`` (status ready), its table, its
charting system and its spelling of the value:

- ``number``: the value as the generator wrote it;
- ``pair``: blood pressure as 'systolic/diastolic' (the build takes its half of the pair);
- ``fraction``: oxygen saturation as a fraction (the build multiplies by 100);
- ``percent``: inspired oxygen as a percentage (the build divides by 100);
- ``fahrenheit``, ``pounds``, ``ounces``, ``inches``: the unit the item's label or unit names;
- ``refill``: capillary refill as the charted words ('Brisk', 'Delayed', ...);
- ``text``: Glasgow coma scale words as charted (the build keeps the discretiser's spellings).

A converted value is written at full precision (the shortest text that reads back as the same
double), so the build's conversion back gives the generator's value within a few units in the last
place; heights in inches round back to the whole centimetres the generator writes.

MIMIC-IV charts its ICU with MetaVision's itemids only (22xxxx; its labs are MIMIC-III's): a series
of a MIMIC-IV-shaped task is written as MIMIC-IV would chart it (``as_mimic4``), which the build can
give back and no more. Capillary refill rate and the Glasgow coma scale total have only CareVue
itemids in the map, so no MIMIC-IV event can carry them (``ABSENT_IN_MIMIC4``: the build's series
never hold them, as the reference's do not); a Glasgow coma scale component in CareVue's words ('4
Spontaneously') is charted in MetaVision's ('Spontaneously'), the generator's same level. Both are
the discretiser's spellings, of distinct one-hot columns, so the view changes the discretised series
too: the comparison applies it to the generator's series before comparing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import generator

# (variable, itemid, table, system ('' = either), spelling, VALUEUOM)
ITEMS = [
    ("Heart Rate", 211, "chart", "carevue", "number", "BPM"),
    ("Heart Rate", 220045, "chart", "metavision", "number", "bpm"),
    ("Systolic blood pressure", 51, "chart", "carevue", "number", "mmHg"),
    ("Systolic blood pressure", 455, "chart", "carevue", "pair", "mmHg"),
    ("Systolic blood pressure", 220050, "chart", "metavision", "number", "mmHg"),
    ("Systolic blood pressure", 220179, "chart", "metavision", "number", "mmHg"),
    ("Diastolic blood pressure", 8368, "chart", "carevue", "number", "mmHg"),
    ("Diastolic blood pressure", 8441, "chart", "carevue", "pair", "mmHg"),
    ("Diastolic blood pressure", 220051, "chart", "metavision", "number", "mmHg"),
    ("Diastolic blood pressure", 220180, "chart", "metavision", "number", "mmHg"),
    ("Mean blood pressure", 52, "chart", "carevue", "number", "mmHg"),
    ("Mean blood pressure", 456, "chart", "carevue", "number", "mmHg"),
    ("Mean blood pressure", 220052, "chart", "metavision", "number", "mmHg"),
    ("Mean blood pressure", 220181, "chart", "metavision", "number", "mmHg"),
    ("Respiratory rate", 618, "chart", "carevue", "number", "BPM"),
    ("Respiratory rate", 615, "chart", "carevue", "number", "BPM"),
    ("Respiratory rate", 220210, "chart", "metavision", "number", "insp/min"),
    ("Respiratory rate", 224690, "chart", "metavision", "number", "insp/min"),
    ("Oxygen saturation", 646, "chart", "carevue", "number", "%"),
    ("Oxygen saturation", 834, "chart", "carevue", "fraction", ""),
    ("Oxygen saturation", 220277, "chart", "metavision", "number", "%"),
    ("Oxygen saturation", 50817, "lab", "", "number", "%"),
    ("Temperature", 676, "chart", "carevue", "number", "Deg. C"),
    ("Temperature", 678, "chart", "carevue", "fahrenheit", "Deg. F"),
    ("Temperature", 223762, "chart", "metavision", "number", "?C"),
    ("Temperature", 223761, "chart", "metavision", "fahrenheit", "?F"),
    ("Glucose", 807, "chart", "carevue", "number", ""),
    ("Glucose", 811, "chart", "carevue", "number", ""),
    ("Glucose", 220621, "chart", "metavision", "number", "mg/dL"),
    ("Glucose", 225664, "chart", "metavision", "number", "mg/dL"),
    ("Glucose", 50931, "lab", "", "number", "mg/dL"),
    ("Glucose", 50809, "lab", "", "number", "mg/dL"),
    ("pH", 780, "chart", "carevue", "number", ""),
    ("pH", 223830, "chart", "metavision", "number", ""),
    ("pH", 50820, "lab", "", "number", "units"),
    ("Fraction inspired oxygen", 3420, "chart", "carevue", "percent", "%"),
    ("Fraction inspired oxygen", 3422, "chart", "carevue", "number", ""),
    ("Fraction inspired oxygen", 223835, "chart", "metavision", "percent", ""),
    ("Weight", 3580, "chart", "carevue", "number", "kg"),
    ("Weight", 3581, "chart", "carevue", "pounds", ""),
    ("Weight", 3582, "chart", "carevue", "ounces", ""),
    ("Weight", 226512, "chart", "metavision", "number", "kg"),
    ("Weight", 226531, "chart", "metavision", "pounds", ""),
    ("Height", 226730, "chart", "metavision", "number", "cm"),
    ("Height", 226707, "chart", "metavision", "inches", "Inch"),
    ("Height", 1394, "chart", "carevue", "inches", ""),
    ("Capillary refill rate", 3348, "chart", "", "refill", ""),
    ("Capillary refill rate", 115, "chart", "", "refill", ""),
    ("Capillary refill rate", 8377, "chart", "", "refill", ""),
    ("Glascow coma scale eye opening", 184, "chart", "carevue", "text", ""),
    ("Glascow coma scale eye opening", 220739, "chart", "metavision", "text", ""),
    ("Glascow coma scale motor response", 454, "chart", "carevue", "text", ""),
    ("Glascow coma scale motor response", 223901, "chart", "metavision", "text", ""),
    ("Glascow coma scale verbal response", 723, "chart", "carevue", "text", ""),
    ("Glascow coma scale verbal response", 223900, "chart", "metavision", "text", ""),
    ("Glascow coma scale total", 198, "chart", "", "text", ""),
]  # fmt: skip
TABLE = pd.DataFrame(ITEMS, columns=["variable", "itemid", "table", "system", "spelling", "unit"])
MIMIC4 = (TABLE["itemid"] >= 220_000) | (TABLE["table"] == "lab")  # items MIMIC-IV has
ABSENT_IN_MIMIC4 = sorted(set(TABLE["variable"]) - set(TABLE.loc[MIMIC4, "variable"]))
# Per Glasgow coma scale component, a level in CareVue's words -> MetaVision's (the generator's lists are
# level-aligned; '1 No Response' is 'None', 'No response' or 'No Response' by component).
METAVISION_WORDS = {
    ch: dict(zip(spell["carevue"], spell["metavision"])) for ch, spell in (
        ("Glascow coma scale eye opening", generator.GCS_EYE), ("Glascow coma scale motor response", generator.GCS_MOTOR),
        ("Glascow coma scale verbal response", generator.GCS_VERBAL))}
METAVISION_WORDS["Glascow coma scale verbal response"][generator.GCS_INTUBATED["carevue"]] = generator.GCS_INTUBATED["metavision"]
# Share of a variable's values charted as a laboratory result (LABEVENTS) where it has a lab item.
LAB_SHARE = {"Glucose": 0.5, "pH": 0.6, "Oxygen saturation": 0.03}
REFILL = {"0.0": ["Normal <3 secs", "Brisk"], "1.0": ["Abnormal >3 secs", "Delayed"]}
LB_PER_KG = 1 / 0.453592  # the build's factor, inverted
CM_PER_INCH = 2.54


def as_mimic4(events: pd.DataFrame) -> pd.DataFrame:
    """The generator's series (long: Hours and the 17 channels, as text) as MIMIC-IV charts them: the
    channels it has no item for empty, Glasgow coma scale words in MetaVision's spelling."""
    out = events.copy()
    for ch in ABSENT_IN_MIMIC4:
        out[ch] = ""
    for ch, words in METAVISION_WORDS.items():
        out[ch] = out[ch].replace(words)
    return out


def choose(variable: str, system: np.ndarray, rng: np.random.Generator, database: str = "mimic3") -> pd.DataFrame:
    """An item of ``variable`` for each value (rows of ``TABLE``): a lab item for ``LAB_SHARE`` of the
    values, else a chart item of the stay's system (either system's where the variable has no own);
    ``database`` 'mimic4': only the items MIMIC-IV has (a variable without one is an error)."""
    items = TABLE[(TABLE["variable"] == variable) & (MIMIC4 if database == "mimic4" else True)]
    if items.empty:
        raise ValueError(f"{variable}: no {database} item charts it (items.ABSENT_IN_MIMIC4)")
    lab, chart = items[items["table"] == "lab"], items[items["table"] == "chart"]
    pick = np.empty(len(system), dtype=np.int64)
    to_lab = rng.random(len(system)) < (LAB_SHARE.get(variable, 0.0) if len(lab) else 0.0)
    for sys_name in np.unique(system):
        own = chart[chart["system"].isin([sys_name, ""])]
        own = own if len(own) else chart
        rows = np.flatnonzero((system == sys_name) & ~to_lab)
        pick[rows] = own.index.to_numpy()[rng.integers(0, len(own), len(rows))]
    rows = np.flatnonzero(to_lab)
    pick[rows] = lab.index.to_numpy()[rng.integers(0, len(lab), len(rows))] if len(rows) else pick[rows]
    return TABLE.loc[pick].reset_index(drop=True)


def _text(x: np.ndarray) -> np.ndarray:
    return pd.Series(x, dtype="float64").astype(str).to_numpy(object)  # shortest round-trip text


def spell(spelling: np.ndarray, value: np.ndarray, pair: np.ndarray, rng) -> np.ndarray:
    """The raw VALUE text of each clean ``value`` in its item's ``spelling``; ``pair``: for blood
    pressures, 'systolic/diastolic' of the same chart time ('' where one is missing: the value alone)."""
    out = value.astype(object).copy()
    for kind in np.unique(spelling):
        rows = spelling == kind
        v = value[rows]
        if kind in ("number", "text"):
            continue
        if kind == "refill":
            words = np.array([REFILL[x][i] for x, i in zip(v, rng.integers(0, 2, len(v)))], dtype=object)
            out[rows] = words
            continue
        if kind == "pair":
            out[rows] = np.where(pair[rows] != "", pair[rows], v)
            continue
        x = v.astype(np.float64)
        converted = {"fraction": lambda: _text(x / 100.0),
                     "percent": lambda: np.char.mod("%d", np.rint(x * 100).astype(np.int64)).astype(object),
                     "fahrenheit": lambda: _text(x * 9.0 / 5.0 + 32.0),
                     "pounds": lambda: _text(x * LB_PER_KG),
                     "ounces": lambda: _text(x * LB_PER_KG * 16.0),
                     "inches": lambda: _text(x / CM_PER_INCH)}[kind]()
        out[rows] = converted
    return out
