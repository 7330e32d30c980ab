"""How a method holds up as the labels get noisier, per task: one number per noise family and one per
setting, read off a result table's eligible cells (flagged cells count as missing).

- Area under mAP against the noise rate, for the symmetric and the asymmetric family. A setting's
  rate is its mean nominal flip rate, (rho+ + rho-) / 2 in %: sym (20,20) is 20, asym (0,40) and
  (40,0) are both 20 (their mean mAP is the point at 20), a clean column is 0 in every family. The
  area is the trapezoid over the rates divided by their span: the mean mAP over the family's range of
  rates, in mAP units. A row gets an area only if it has every setting of the family that its table
  shows, so that the areas of one table are over the same points.
- mAP relative to the baseline (FlexCare trained with BCE, ``Options.baseline``, its default row):
  the ratio of cell means per setting, where both cells are eligible.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from benchmark.protocol import parse_noise

FAMILIES = ("sym", "asym")
LEGEND = ("Area: the mean mAP over a family's range of noise rates, the trapezoid under mAP against the rate "
          "divided by the span; a setting's rate is its mean nominal flip rate (rho+ + rho-)/2 (asymmetric (0,40) "
          "and (40,0) are both 20 %, their mean is the point there; a clean column is 0 %). Only for a row with "
          "every setting of the family this table shows, unflagged. The other columns: the row's mean mAP divided "
          "by the baseline's in the same setting (1 = as good; '-' where either cell is missing or flagged).")


def noise_rate(name: str) -> float:
    setting = parse_noise(name)
    return (setting.rho_plus + setting.rho_minus) / 2


def family_settings(noises: list[str], family: str) -> list[str]:
    """The table's settings on the family's curve: its own and a clean column."""
    return [n for n in noises if parse_noise(n).family in (family, "clean")]


def area(points: list[tuple[float, float]]) -> float | None:
    """Normalised area under (rate, mAP) points; points at one rate are averaged; None under 2 rates."""
    by_rate = defaultdict(list)
    for rate, value in points:
        by_rate[rate].append(value)
    rates = sorted(by_rate)
    if len(rates) < 2:
        return None
    means = [float(np.mean(by_rate[r])) for r in rates]
    trapezoids = sum((b - a) * (ya + yb) / 2 for a, b, ya, yb in zip(rates, rates[1:], means, means[1:]))
    return trapezoids / (rates[-1] - rates[0])


def _means(row: dict) -> dict[str, float]:
    return {c["noise"]: c["mean"] for c in row["cells"] if c["eligible"]}


def baseline_row(rows: list[dict], baseline: str) -> dict | None:
    """The baseline method's default row (its label is its display name, nothing in brackets)."""
    own = [r for r in rows if r["name"] == baseline]
    return min(own, key=lambda r: ("[" in r["method"], r["method"]), default=None)


def summary(table: dict, baseline: str) -> dict:
    """Per row of a result table: its area per family and its mAP relative to the baseline per setting."""
    noises = [n["name"] for n in table["noises"]]
    base = baseline_row(table["rows"], baseline)
    base_means = _means(base) if base else {}
    rows = []
    for row in table["rows"]:
        means = _means(row)
        areas = {}
        for family in FAMILIES:
            settings = family_settings(noises, family)
            complete = settings and all(n in means for n in settings)
            areas[family] = area([(noise_rate(n), means[n]) for n in settings]) if complete else None
        relative = {n: means[n] / base_means[n] if n in means and base_means.get(n) else None for n in noises}
        rows.append({"method": row["method"], "area": areas, "relative": relative})
    return {"baseline": base["method"] if base else None, "rows": rows,
            "settings": {f: family_settings(noises, f) for f in FAMILIES},
            "rates": {n: noise_rate(n) for f in FAMILIES for n in family_settings(noises, f)}}
