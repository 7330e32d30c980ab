"""Noise draws as a variance source: a cell's spread split into its training-seed and noise-draw parts.

The reference fixes the noise seed (123) for every run seed, so the std of a result cell is over
training seeds only, on one noisy label matrix. ``ehrbench bench --noise-draws K`` runs each (setting,
seed) on K noise draws; under the reference policy draw d is one matrix for every seed, so a cell's runs
form a two-way crossed layout, seeds x draws, one run per pair (``benchmark/noise.py``: draw 0 is the
protocol's, draw d >= 1 has the seed ``noise_draw_seed(123, d)``).

The split is the random-effects two-way ANOVA without replication, by the method of moments (for a
balanced layout this is also REML's answer whenever no estimate is negative):

    y_sd = mu + a_s + b_d + e_sd,  a_s ~ (0, var_seed), b_d ~ (0, var_draw), e_sd ~ (0, var_residual)

    MS_seed = D sum_s (ybar_s. - ybar)^2 / (S - 1)       E = var_residual + D var_seed
    MS_draw = S sum_d (ybar_.d - ybar)^2 / (D - 1)       E = var_residual + S var_draw
    MS_res  = sum_sd (y_sd - ybar_s. - ybar_.d + ybar)^2 / ((S - 1)(D - 1))   E = var_residual

so var_seed = (MS_seed - MS_res) / D and var_draw = (MS_draw - MS_res) / S, each truncated at 0; the
residual holds the seed x draw interaction (a seed's luck that depends on the draw) and cannot be told
apart from it with one run per pair. The variance of one run is the sum of the three; ``share_draw`` is
the part the protocol's std (over seeds, one draw) never sees, with ``share_seed`` and ``share_residual``
beside it.

A cell needs at least 2 seeds and 2 draws with every pair present; where a run is missing (not run,
or failed), the seeds and draws with missing pairs are dropped until the block is complete
(``complete_block``), and the runs left out are counted (``left_out``).
"""
from __future__ import annotations

import math

import numpy as np

from benchmark.protocol import parse_noise

from .report import cell_flags, noise_order

LEGEND = ("Noise draws: the reference draws one noisy label matrix (noise seed 123) for every run seed, so a result "
          "cell's std is over training seeds on one matrix. With --noise-draws K each (setting, seed) also runs on "
          "K - 1 other draws (draw d: noise seed from SeedSequence([123, d]), one matrix for every seed), and a "
          "cell's runs cross seeds with draws. Its variance is split by the random-effects two-way ANOVA without "
          "replication (method of moments, negative estimates set to 0): var_seed = (MS_seed - MS_res) / D, "
          "var_draw = (MS_draw - MS_res) / S, var_residual = MS_res (the seed x draw interaction and the error, "
          "not separable with one run per pair); std = the square root of each, share = its part of their sum "
          "(the variance of one run). Protocol std: the std over seeds at draw 0, as the result table shows it. "
          "The result tables hold draw 0 only; a cell with one draw has no split.")


def split(values: dict[tuple[int, int], float]) -> dict | None:
    """The variance split of {(seed, draw): value} on its complete block of seeds x draws
    (``complete_block``, at least 2 x 2); None when there is none."""
    block = complete_block(values)
    if block is None:
        return None
    seeds, draws = block
    y = np.array([[values[(s, d)] for d in draws] for s in seeds], dtype=float)
    n_s, n_d = y.shape
    grand = y.mean()
    by_seed, by_draw = y.mean(axis=1), y.mean(axis=0)
    ms_seed = n_d * ((by_seed - grand) ** 2).sum() / (n_s - 1)
    ms_draw = n_s * ((by_draw - grand) ** 2).sum() / (n_d - 1)
    resid = y - by_seed[:, None] - by_draw[None, :] + grand
    ms_res = (resid ** 2).sum() / ((n_s - 1) * (n_d - 1))
    parts = {"seed": max(0.0, (ms_seed - ms_res) / n_d), "draw": max(0.0, (ms_draw - ms_res) / n_s),
             "residual": float(ms_res)}
    total = sum(parts.values())
    out = {"seeds": [int(s) for s in seeds], "draws": [int(d) for d in draws], "runs": n_s * n_d,
           "left_out": len(values) - n_s * n_d, "mean": float(grand),
           "ms": {"seed": float(ms_seed), "draw": float(ms_draw), "residual": float(ms_res)},
           "df": {"seed": n_s - 1, "draw": n_d - 1, "residual": (n_s - 1) * (n_d - 1)},
           "var": {k: float(v) for k, v in parts.items()}, "var_total": float(total),
           "std": {k: math.sqrt(v) for k, v in parts.items()}, "std_total": math.sqrt(total),
           "share": {k: (v / total if total > 0 else None) for k, v in parts.items()}}
    at_zero = [values[(s, 0)] for s in seeds if (s, 0) in values]
    out["protocol_std"] = float(np.std(at_zero, ddof=1)) if len(at_zero) > 1 else None
    return out


def complete_block(values: dict[tuple[int, int], float]) -> tuple[list[int], list[int]] | None:
    """(seeds, draws) of a block of ``values``' keys with every pair present, at least 2 x 2, or None:
    all of them when the layout is complete, else what is left after dropping, one at a time, the seed
    or draw with the most missing pairs (on a tie the one with fewer runs; then a draw before a seed,
    keeping the protocol's seeds, then the highest)."""
    seeds, draws = sorted({s for s, _ in values}), sorted({d for _, d in values})
    while len(seeds) >= 2 and len(draws) >= 2:
        missing = [(sum((s, d) not in values for d in draws), -sum((s, d) in values for d in draws), 0, s, "seed")
                   for s in seeds]
        missing += [(sum((s, d) not in values for s in seeds), -sum((s, d) in values for s in seeds), 1, d, "draw")
                    for d in draws]
        worst = max(missing)
        if worst[0] == 0:
            return seeds, draws
        if worst[4] == "seed":
            seeds.remove(worst[3])
        else:
            draws.remove(worst[3])
    return None


def task_rows(rows: list[dict]) -> list[dict]:
    """One entry per (row label, noise) of a task's done runs that has more than one noise draw: the
    split of its mAP over seeds x draws, with the runs (seed, draw, mAP) it read."""
    by_cell: dict = {}
    for r in rows:
        if r["status"] == "done":
            by_cell.setdefault((r["label"], r["noise"]), []).append(r)
    out = []
    order = {n: i for i, n in enumerate(noise_order({n for _, n in by_cell}))}
    for (label, noise), runs in sorted(by_cell.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        if len({r["noise_draw"] for r in runs}) < 2:
            continue
        flags = [f for f in cell_flags({"runs": runs}) if f.startswith("mixed")]
        values = {(r["seed"], r["noise_draw"]): r["map"] for r in runs}
        entry = {"method": label, "noise": noise, "label": parse_noise(noise).label(), "flags": flags,
                 "values": sorted([r["seed"], r["noise_draw"], r["map"]] for r in runs),
                 "noise_seeds": [list(x) for x in sorted({(r["noise_draw"], r.get("noise_seed")) for r in runs},
                                                         key=lambda x: (x[0], x[1] if x[1] is not None else -1))],
                 "split": None if flags else split(values)}
        if entry["split"] is not None:  # two records of one (seed, draw), e.g. on two GPUs, count once
            entry["split"]["left_out"] = len(runs) - entry["split"]["runs"]
        out.append(entry)
    return out


def fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def share_text(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"
