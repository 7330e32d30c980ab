"""Run rows -> the board: per (track, task) result tables with significance, per hardware class
compute tables, a cross-setting rank summary and method metadata. Plain dicts, ready for JSON,
the HTML template and the text tables; every number is computed here, none in a template.

Cells are grouped by ``leaderboard.report.collect`` (the same aggregation as ``ehrbench table``).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from benchmark.errors import UsageError
from benchmark.marks import COLLAPSE_AUC, RELEASED, TIMING_ENCODERS, encoder_pretraining
from benchmark.protocol import parse_noise

from . import detection, reproduce, robustness, secondary, sources, stats, variance
from .report import (MIN_SEEDS, ROWS_LEGEND, cell_flags, cell_marks, collect, noise_order,
                     old_layout)
from .tables import RUN_PHASES

FAMILY_NAMES = {"sym": "symmetric", "asym": "asymmetric", "bal": "balanced", "under": "under-coding",
                "clean": "clean"}


@dataclass(frozen=True)
class Options:
    test: str = "paired"  # or "welch"
    correction: str = "none"  # or "holm", "bh": over every test of one task's table
    alpha: float = stats.ALPHA
    baseline: str = "bce"  # the method the compute table divides by (FlexCare trained with BCE)
    timing_encoders: bool = False  # result tables also hold runs of timing-only note encoders (marks.TIMING_ENCODERS)

    def __post_init__(self):
        if self.test not in stats.TESTS:
            raise UsageError(f"test must be one of {', '.join(stats.TESTS)}, got '{self.test}'")
        if self.correction not in stats.CORRECTIONS:
            raise UsageError(f"correction must be one of {', '.join(stats.CORRECTIONS)}, got '{self.correction}'")
        if not 0 < self.alpha < 1:
            raise UsageError(f"alpha must be in (0, 1), got {self.alpha}")


SOURCES_CAPTION = (f" Whose runs: [{sources.PUBLISHED}] rows and cells hold runs of the published set that ships "
                   f"with the project (leaderboard/published/), [{sources.YOURS}] ones those of your results "
                   f"folder. A run id in both counts once, as the published run: '[{sources.BOTH_AGREE}]' when "
                   f"the two last-epoch mAPs agree within the CPU determinism tolerance "
                   f"{sources.CPU_MAP_TOLERANCE:g} (docs/reliability.md), '[{sources.BOTH_DIFFER}]' (a flag) "
                   f"when they do not; the cell's tooltip has both numbers.")
DRAWS_CAPTION = (" Cells hold the protocol's noise draw (draw 0) only; runs on other noise draws (--noise-draws) are "
                 "in the variance split under each task, never in these means or tests.")


def caption(options: Options) -> str:
    test = ("a one-sided paired t-test over the seeds both methods share" if options.test == "paired"
            else "a one-sided Welch t-test")
    correction = {"none": "no multiple-comparison correction",
                  "holm": "Holm-adjusted over the table's tests",
                  "bh": "Benjamini-Hochberg-adjusted over the table's tests"}[options.correction]
    return (f"Last-epoch test mAP (macro, clean test labels): mean (std) over seeds, std with ddof={stats.DDOF}. "
            f"Bold: best mean of the column. Stars: p of the best against the second best by {test} "
            f"({correction}; * p<0.05, ** p<0.01, *** p<0.001). Shaded: the tie group, methods not significantly "
            f"worse than the best at alpha={options.alpha:g} by the same test; with 3 seeds the tests have little "
            f"power, so no star means 'not resolved', not 'equal'. Flagged cells (fewer than {MIN_SEEDS} seeds; "
            f"mixed data fingerprints, harness versions, method code or FlexCare fusion layouts; data other than the "
            f"column's) are neither ranked nor tested; mixed cells are not averaged. "
            f"[collapsed k/n]: k of the cell's n runs collapsed, their last-epoch macro AUC on the clean test labels "
            f"below {COLLAPSE_AUC:g}; they stay in the mean, ranking and tests, as the protocol keeps the last epoch. "
            f"{mde_legend(options)} {ROWS_LEGEND}.")


def mde_legend(options: Options) -> str:
    return (f"MDE (the row under each table): the minimum detectable effect of the column's tests, the smallest true "
            f"mean difference between the best and another method that a one-sided paired t-test at alpha="
            f"{options.alpha:g} (uncorrected) detects with power {stats.POWER:g} at the n seeds present, given the "
            f"observed std of their per-seed differences (pooled over the column's pairs with the best; exact, "
            f"from the non-central t). A gap below the MDE is beyond what these seeds resolve: no star there says "
            f"nothing about equality. Seed spread and test-set sampling error are apart: the std is over seeds, "
            f"the bootstrap interval of each run (second tab) over the test set's patients.")


def result_cell(noise: str, cell: dict | None) -> dict:
    """A cell of a result table. ``flags`` take it out of ranking and tests; ``marks`` (collapsed runs)
    and ``old_layout`` (FlexCare's two-modality layout, ``LAYOUT_MARK``) only tell the reader."""
    if not cell:
        return {"noise": noise, "n": 0, "mean": None, "std": None, "values": [], "flags": [], "marks": [],
                "collapsed": [], "fusion_layouts": [], "old_layout": False, "failed": 0, "eligible": False,
                "run_ids": [], **provenance([]), "secondary": secondary.cell_metrics([], True), "sources": [],
                "twins": [], "source_marks": []}
    flags = cell_flags(cell)
    mixed = any(f.startswith("mixed") for f in flags)
    described = stats.describe([] if mixed else cell["maps"])
    return {"noise": noise, **described, "n": len(cell["runs"]),
            "values": sorted([r["seed"], r["map"]] for r in cell["runs"]),
            "run_ids": sorted(r["run_id"] for r in cell["runs"]),
            **provenance(cell["runs"]), "secondary": secondary.cell_metrics(cell["runs"], mixed),
            "data": cell["runs"][0]["data_fingerprint"] if cell["runs"] and not mixed else None,
            "flags": flags, "marks": cell_marks(cell), "collapsed": collapsed_runs(cell["runs"]),
            "fusion_layouts": sorted({r["fusion_layout"] for r in cell["runs"]} - {None}),
            "old_layout": old_layout(cell), "failed": cell["failed"], "eligible": bool(cell["runs"]) and not flags,
            # Whose runs (sources.PUBLISHED, sources.YOURS), and a user's runs of published run ids (sources.pair).
            "sources": sorted(cell.get("sources", ())), "twins": cell.get("twins", []), "source_marks": []}


def provenance(runs: list[dict]) -> dict:
    """How to make the cell again: the bench command of its seeds (its runs share every flag but the
    seed: one row is one spec less its seed), what of the spec no flag sets in this checkout, and the
    harness versions and commits its records were written by (dirty: with uncommitted changes)."""
    first = min(runs, key=lambda r: (r["seed"], r["run_id"])) if runs else None
    return {"command": reproduce.with_seeds(first["command"], [r["seed"] for r in runs]) if first else None,
            "command_gaps": first["command_gaps"] if first else "",
            "harness_versions": sorted({r["harness_version"] or "?" for r in runs}),
            "commits": sorted({r["git_sha"] or "?" for r in runs}),
            "dirty": any(r.get("git_dirty") for r in runs)}


def collapsed_runs(runs: list[dict]) -> list[dict]:
    """The cell's collapsed runs, by seed: where each fell, its peak and its last-epoch macro AUC."""
    return [{"seed": r["seed"], "run_id": r["run_id"], "epoch": r["collapsed_epoch"], "macro_auc": r["macro_auc"],
             "peak_macro_auc": r["collapsed_peak_macro_auc"], "peak_epoch": r["collapsed_peak_epoch"],
             "never_learned": r["never_learned"]}
            for r in sorted(runs, key=lambda r: (r["seed"], r["run_id"])) if r["collapsed"]]


def _flag_other_data(cells: list[dict]) -> None:
    """Methods compared in one column must have seen the same data: a cell whose fingerprint differs
    from the column's most common one is flagged 'other data' and left out of ranking and tests."""
    counts = Counter(c["data"] for c in cells if c["eligible"])
    if len(counts) < 2:
        return
    common = min(counts, key=lambda fp: (-counts[fp], fp))
    for c in cells:
        if c["eligible"] and c["data"] != common:
            c["flags"].append("other data")
            c["eligible"] = False


def _test_column(cells: list[dict], options: Options) -> list[tuple[dict, dict, float]]:
    """Mark the column's best; (best, other, raw p) for every other eligible cell, second best first."""
    ranked = sorted((c for c in cells if c["eligible"]), key=lambda c: -c["mean"])
    if not ranked:
        return []
    best = ranked[0]
    best.update(best=True, tie=True)
    values = {id(c): dict(map(tuple, c["values"])) for c in ranked}
    return [(best, other, stats.one_sided_p(values[id(best)], values[id(other)], options.test))
            for other in ranked[1:]]


def _apply_tests(tests: list[tuple[dict, dict, float]], options: Options) -> None:
    adjusted = stats.adjust([p for _, _, p in tests], options.correction)
    seen_best = set()
    for (best, other, p), q in zip(tests, adjusted):
        not_worse = math.isnan(q) or q >= options.alpha
        other.update(p=_num(p), p_adjusted=_num(q), vs=best["method"], tie=not_worse)
        if id(best) not in seen_best:  # the first test of a column is the one against the second best
            seen_best.add(id(best))
            best.update(p=_num(p), p_adjusted=_num(q), vs=other["method"], stars=stats.stars(q))


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def task_table(task: str, methods: dict, options: Options, show_sources: bool = False) -> dict:
    """``show_sources``: the table holds published runs, so its rows and cells say whose runs they hold."""
    noises = noise_order({n for cells in methods.values() for n in cells})
    rows = []
    for method, cells in methods.items():
        row_cells = [result_cell(n, cells.get(n)) for n in noises]
        for c in row_cells:
            c.update(method=method, best=False, tie=False, stars="", p=None, p_adjusted=None, vs=None, mde=None)
        names = {r["method"] for c in cells.values() for r in c["runs"]} or {None}
        row_sources = sorted({s for c in row_cells for s in c["sources"]})
        if show_sources:
            for c in row_cells:
                c["source_marks"] = sources.cell_marks(c, row_sources)
        rows.append({"method": method, "name": min(names, key=str), "cells": row_cells, "sources": row_sources,
                     "source": sources.label(row_sources)})
    columns = [[r["cells"][j] for r in rows] for j in range(len(noises))]
    for column in columns:
        _flag_other_data(column)
    tests = [t for column in columns for t in _test_column(column, options)]
    _apply_tests(tests, options)
    # Pre-sorted as a reader scans: best average of the cell means first.
    rows.sort(key=lambda r: (-_row_mean(r), r["method"]))
    table = {"task": task, "noises": [{"name": n, "label": parse_noise(n).label(), "mde": column_mde(column, options),
                                       **_realised([cells.get(n) for cells in methods.values()])}
                                      for n, column in zip(noises, columns)],
             "families": _families(noises), "rows": rows, "tests": len(tests), "show_sources": show_sources}
    table["robustness"] = robustness.summary(table, options.baseline)
    return table


def _differences(best: dict, other: dict) -> list[float]:
    """best - other per seed, over the seeds both cells have (the paired test's pairs)."""
    a, b = dict(map(tuple, best["values"])), dict(map(tuple, other["values"]))
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def column_mde(cells: list[dict], options: Options) -> dict | None:
    """What the column's paired tests could detect: the minimum detectable effect (``stats.paired_mde``,
    power ``stats.POWER`` at ``options.alpha``, uncorrected) from the std of the per-seed differences
    between the best and each other eligible cell, pooled over those pairs, at the fewest seeds a pair
    shares. Each tested cell also gets the MDE of its own pair (``mde``). None without a pair of 2+ seeds."""
    best = next((c for c in cells if c.get("best")), None)
    if best is None:
        return None
    pairs = []
    for other in cells:
        if other is not best and other["eligible"]:
            diffs = _differences(best, other)
            other["mde"] = stats.paired_mde(stats.describe(diffs)["std"], len(diffs), options.alpha)
            if len(diffs) > 1:
                pairs.append(diffs)
    sd, _ = stats.pooled_sd(pairs)
    if sd is None:
        return None
    seeds = min(len(d) for d in pairs)
    return {"mde": stats.paired_mde(sd, seeds, options.alpha), "sd_diff": sd, "seeds": seeds, "pairs": len(pairs),
            "alpha": options.alpha, "power": stats.POWER}


def _realised(column: list[dict | None]) -> dict:
    """The flip rates the column's runs realised on their training labels: [min, max] of rho+ and of
    rho- (the nominal ones are the header; balanced noise sets rho- per task)."""
    runs = [r for c in column if c for r in c["runs"]]
    out = {}
    for key in ("realised_rho_plus", "realised_rho_minus"):
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = [min(values), max(values)] if values else None
    return out


def _families(noises: list[str]) -> list[dict]:
    """Runs of consecutive settings of one noise family: the grouped header of the table."""
    families = []
    for n in noises:
        family = parse_noise(n).family
        if families and families[-1]["family"] == family:
            families[-1]["span"] += 1
        else:
            families.append({"family": family, "name": FAMILY_NAMES.get(family, family), "span": 1})
    return families


def _row_mean(row: dict) -> float:
    means = [c["mean"] for c in row["cells"] if c["mean"] is not None]
    return float(np.mean(means)) if means else -1.0


def summary(tables: list[dict], options: Options) -> dict:
    """Average rank over the (task, noise) cells every compared method has, Friedman test, Nemenyi CD."""
    scores = defaultdict(dict)
    for table in tables:
        for row in table["rows"]:
            for c in row["cells"]:
                if c["eligible"]:
                    scores[row["method"]][(table["task"], c["noise"])] = c["mean"]
    if not scores:
        return {"methods": [], "cells": 0}
    coverage = max(len(s) for s in scores.values())
    methods = sorted(m for m, s in scores.items() if len(s) == coverage)
    cells = sorted(set.intersection(*(set(scores[m]) for m in methods)))
    out = {"methods": methods, "cells": len(cells), "cell_names": [f"{t}/{n}" for t, n in cells],
           "left_out": sorted(set(scores) - set(methods)), "alpha": options.alpha}
    if len(methods) < 2 or not cells:
        return out
    matrix = np.array([[scores[m][c] for m in methods] for c in cells])
    ranks = stats.average_ranks(matrix)
    out["ranks"] = {m: float(r) for m, r in zip(methods, ranks)}
    out["methods"] = sorted(methods, key=lambda m: (out["ranks"][m], m))
    out["cd"] = stats.nemenyi_cd(len(methods), len(cells), options.alpha)
    if len(methods) >= 3 and len(cells) >= 2:
        statistic, p = stats.friedman(matrix)
        out["friedman"] = {"statistic": _num(statistic), "p": _num(p)}
    return out




def compute_tables(rows: list[dict], options: Options) -> list[dict]:
    """One block per like-for-like condition: hardware class, task, precision, runs sharing the device,
    token layout and execution mode (``_condition``). Per method (row label): runs, median wall time per
    run without data preparation, device-hours, peak memory, phase split, data preparation as its own
    phase, mean mAP over the cells every method of the block has, and the ratio of median times to the
    baseline's in the same block (never across blocks)."""
    by_condition = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "done":
            by_condition[_condition(r)][r["label"]].append(r)  # a FlexCare fusion layout is a row of its own
    blocks = []
    for condition, methods in sorted(by_condition.items()):
        lines = [compute_line(name, runs) for name, runs in methods.items()]
        shared = set.intersection(*(set(ln.pop("cell_maps")) for ln in lines)) if lines else set()
        for ln, runs in zip(lines, methods.values()):
            maps = _cell_maps(runs)
            ln["mean_map"] = float(np.mean([maps[c] for c in shared])) if shared else None
            ln["cells"] = len(shared)
        # With runs of two fusion layouts, the baseline is its released layout's (its label says which).
        base = min((ln for ln in lines if ln["method_name"] == options.baseline),
                   key=lambda ln: (ln["fusion_layouts"] != [RELEASED], ln["method"]), default=None)
        for ln in lines:
            ln["ratio"] = ln["median_s"] / base["median_s"] if base and base["median_s"] else None
        lines.sort(key=lambda ln: (ln["median_s"], ln["method"]))
        hardware, task = condition[:2]
        setting = execution_setting(next(iter(methods.values()))[0])
        blocks.append({"hardware": hardware, "task": task, "setting": setting, "gpu": not hardware.startswith("CPU:"),
                       "title": f"{hardware}, {task}, {setting}", "shared_cells": len(shared),
                       "baseline": base["method"] if base else None, "rows": lines})
    return blocks


def _condition(row: dict) -> tuple:
    """What must be equal for two compute times to be compared."""
    return (row["hardware"], row["task"], row["precision"] or "", row["packed_runs"], row["token_layout"],
            row["compile"])


def _cell_maps(runs: list[dict]) -> dict:
    """{(task, noise): mean mAP over its seeds} of one method's runs; a cell mixing data, harness
    versions or code is left out, as in the result tables."""
    grouped = defaultdict(list)
    for r in runs:
        if not r.get("noise_draw"):  # the result tables' cells: the protocol's noise draw
            grouped[(r["task"], r["noise"])].append(r)
    return {key: float(np.mean([r["map"] for r in v])) for key, v in grouped.items()
            if not any(f.startswith("mixed") for f in cell_flags({"runs": v}))}


def compute_line(method: str, runs: list[dict]) -> dict:
    walls = [r["time_total"] - (r["time_data"] or 0.0) for r in runs]
    phase_sums = {p: sum(r[f"time_{p}"] or 0.0 for r in runs) for p in RUN_PHASES}
    whole = sum(phase_sums.values()) or 1.0
    return {
        "method": method, "method_name": runs[0]["method"], "runs": len(runs),
        "fusion_layouts": sorted({r["fusion_layout"] for r in runs} - {None}),
        "median_s": float(np.median(walls)), "hours": sum(walls) / 3600,
        "data_s": sum(r["time_data"] or 0.0 for r in runs),
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
        "phases": {p: s / whole for p, s in phase_sums.items()},
        "cell_maps": _cell_maps(runs), "own_cells": len(_cell_maps(runs)),
        "encoders": sorted({r["encoder"] for r in runs}),
        "setting": "; ".join(sorted({execution_setting(r) for r in runs})),
    }


def execution_setting(row: dict) -> str:
    """How a run executed, as far as it moves its compute time: precision, runs sharing the device,
    and FlexCare's token layout when not padded (packed: 1.47x faster steps on the full track)."""
    tokens = {"packed": ", tokens packed", "varlen": ", tokens packed, varlen attention"}.get(row.get("token_layout"), "")
    compiled = ", compiled" if row.get("compile") == "on" else ""
    return f"{row['precision']}, {row['packed_runs']} packed{tokens}{compiled}"


# What the harness guarantees for every method, whatever its manifest says: the trainer hands a method
# the noisy training labels only (the clean ones are scored against its corrections, never shown), and
# the record keeps the last epoch (no checkpoint is chosen on the test set, nor on anything else).
HARNESS_PROTOCOL = {"clean_labels": "never", "selection_on_test": "never"}
PROTOCOL_LEGEND = ("Uses clean labels: never, and selection on test: never, for every method (the harness hands a "
                   "method the noisy training labels only and keeps the last epoch). Tuned per noise setting: the "
                   "manifest's tuned_per_noise_setting (its hyper-parameters chosen separately for each noise "
                   "setting, e.g. on that setting's test results); the harness itself runs one set for all. "
                   "Parameters: trainable, and the model's frozen ones; the note encoder is frozen and run once "
                   "to cache the notes' embeddings, its parameters counted apart. MIMIC notes: whether the "
                   "encoder was pretrained on MIMIC notes, which the test set's notes come from (a ClinicalBERT-"
                   "family encoder did: its runs may owe something to having seen them).")


def method_encoders(runs: list[dict]) -> list[dict]:
    """The note encoders of a method's runs: parameter count and whether pretrained on MIMIC notes."""
    out = []
    for name in sorted({r["encoder"] for r in runs}):
        own = [r for r in runs if r["encoder"] == name]
        path = next((r["encoder_path"] for r in own if r.get("encoder_path")), None)
        saw_mimic, why = encoder_pretraining(name, path)
        counts = sorted({r["encoder_parameters"] for r in own if r.get("encoder_parameters") is not None})
        out.append({"encoder": name or "(none)", "path": path, "parameters": counts, "mimic_notes": saw_mimic,
                    "pretraining": why})
    return out


def method_meta(rows: list[dict], manifests: dict) -> list[dict]:
    """Display name, paper, licence, parameter counts, note encoders, protocol flags, code and harness
    versions of each method."""
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["display_name"]].append(r)
    out = []
    for display, runs in sorted(by_method.items()):
        name = runs[0]["method"]
        manifest = manifests.get(name) or {}
        out.append({
            "method": display, "name": name,
            "citation": " ".join(str(manifest.get("citation", "")).split()) or None,
            "paper_url": manifest.get("paper_url"), "license": manifest.get("license"),
            "version": manifest.get("version"),
            "parameters": sorted({r["parameters"] for r in runs if r["parameters"] is not None}),
            "parameters_frozen": sorted({r["parameters_frozen"] for r in runs if r.get("parameters_frozen") is not None}),
            "encoders": method_encoders(runs),
            "protocol": {**HARNESS_PROTOCOL, "tuned_per_noise_setting": manifest.get("tuned_per_noise_setting")},
            "code_hashes": sorted({(r["code_hash"] or "")[:12] for r in runs}),
            "harness_versions": sorted({r["harness_version"] or "?" for r in runs}),
            "fusion_layouts": sorted({r["fusion_layout"] for r in runs} - {None}),
        })
    return out


def build_board(rows: list[dict], options: Options, manifests: dict | None = None, results: str | None = None,
                published: dict | None = None) -> dict:
    """``published``: per track, the published set looked for beside the user's records (``folder``,
    ``present``, ``records``; ``leaderboard.read_published``); a track without an entry had none read."""
    tracks = []
    published = published or {}
    shown = [r for r in rows if options.timing_encoders or not r["timing_encoder"]]
    grouped = collect(shown)
    for track in sorted({r["track"] for r in rows}):
        show_sources = any(sources.source_of(r) == sources.PUBLISHED for r in rows if r["track"] == track)
        tables = [task_table(task, dict(grouped[(t, task)]), options, show_sources)
                  for t, task in sorted(grouped) if t == track]
        for table in tables:  # beside each result table: detection, and the variance split of noise draws
            table["detection"] = detection.task_tables(dict(grouped[(track, table["task"])]))
            table["variance"] = variance.task_rows([r for r in shown if (r["track"], r["task"]) == (track, table["task"])])
        track_rows = [r for r in rows if r["track"] == track]
        tracks.append({"track": track, "tasks": tables, "summary": summary(tables, options),
                       "published": published.get(track), "show_sources": show_sources,
                       "compute": compute_tables(track_rows, options),
                       "encoders": encoders(track_rows, options),
                       "methods": method_meta(track_rows, manifests or {})})
    draws = any(r.get("noise_draw") for r in rows)
    both = any(t["show_sources"] for t in tracks)
    return {"options": asdict(options),
            "caption": caption(options) + (SOURCES_CAPTION if both else "") + (DRAWS_CAPTION if draws else ""),
            "map_tolerance": sources.CPU_MAP_TOLERANCE,
            "min_seeds": MIN_SEEDS, "detection_legend": detection.LEGEND, "variance_legend": variance.LEGEND,
            "collapse_auc": COLLAPSE_AUC, "results": results,
            "harness_versions": sorted({r["harness_version"] or "?" for r in rows}),
            "runs": len(rows), "tracks": tracks}


def encoders(rows: list[dict], options: Options) -> list[dict]:
    """The note encoder of each record set (the folder above ``<track>/`` in the results folder) of a
    track: its runs, whether it is timing-only (``marks.TIMING_ENCODERS``) and so out of the result
    tables unless ``options.timing_encoders``."""
    counts = Counter((r.get("record_set", "."), r["encoder"]) for r in rows)
    paths = defaultdict(set)
    for r in rows:
        if r.get("encoder_path"):
            paths[r["encoder"]].add(r["encoder_path"])
    return [{"record_set": where, "encoder": e or "(none)", "paths": sorted(paths[e]), "runs": n,
             "timing_only": e in TIMING_ENCODERS,
             "about": TIMING_ENCODERS.get(e), "in_results": options.timing_encoders or e not in TIMING_ENCODERS}
            for (where, e), n in sorted(counts.items())]
