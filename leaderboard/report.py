"""Result tables from run records: rows methods, columns noise settings, mean (std) over seeds.

``run_row`` flattens a record into one tidy row (the leaderboard's ``runs.csv`` has one per run)
and ``collect`` groups the rows into cells; the terminal table below and the leaderboard
(the rest of this package) both read that one aggregation.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from tabulate import tabulate

from benchmark.environment import hardware_class
from benchmark.protocol import EXTRA_NOISE_SETTINGS, NOISE_SETTINGS, parse_noise

MIN_SEEDS = 3
CAPTION = (
    "Last-epoch test mAP (macro, clean test labels): mean (std) over seeds, std with ddof=1 "
    "(sample standard deviation). '[n=k]' marks a cell with fewer than {min_seeds} seeds; "
    "'[mixed data]', '[mixed harness]' and '[mixed code]' mark a cell whose runs differ in data fingerprint, "
    "harness version or method code (its runs are not averaged); '!' marks a cell whose runs had failed records (not averaged in)."
)
PHASES = ("data", "noise", "train", "method_hooks", "eval")


def run_row(record: dict) -> dict:
    """One flat row per run record: what the tables, the statistics and ``runs.csv`` need."""
    spec, env, timings = record["spec"], record["environment"], record["timings"]
    done = record["status"] == "done"
    return {
        "track": spec["track"],
        "task": spec["task"],
        "method": spec["method"]["name"],
        "display_name": record["method"]["display_name"],
        "noise": spec["noise"]["name"],
        "seed": spec["seed"],
        "status": record["status"],
        "map": record["metrics"]["final"]["map"] if done else None,
        "failure": record["failure"],
        "run_id": record["run_id"],
        "data_fingerprint": record["fingerprints"].get("data"),
        "harness_version": env.get("harness_version"),
        "git_sha": (env.get("git") or {}).get("sha"),
        "hardware": hardware_class(env),
        "precision": env.get("precision"),
        "packed_runs": env.get("packed_runs", 1),
        "token_layout": env.get("token_layout", "padded"),  # records before the switch ran padded
        "compile": env.get("compile", "off"),
        "parameters": record["method"].get("parameters"),
        "code_hash": record["method"].get("code_hash"),
        "peak_memory_bytes": record["peak_memory_bytes"],
        **{f"time_{phase}": timings.get(phase) for phase in (*PHASES, "total")},
    }


def collect(rows: list[dict]) -> dict:
    """{(track, task): {method display: {noise name: {"runs": [done rows], "maps": [...], "failed": int}}}}."""
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: {"runs": [], "maps": [], "failed": 0})))
    for row in rows:
        cell = table[(row["track"], row["task"])][row["display_name"]][row["noise"]]
        if row["status"] == "done":
            cell["runs"].append(row)
            cell["maps"].append(row["map"])
        else:
            cell["failed"] += 1
    return table


def cell_flags(cell: dict) -> list[str]:
    """Why a cell's mean must not be read as a comparable number ([] when it can)."""
    runs, flags = cell["runs"], []
    if runs and len(runs) < MIN_SEEDS:
        flags.append(f"n={len(runs)}")
    # Runs on different data or a different harness measure different things: never averaged together.
    if len({r["data_fingerprint"] for r in runs}) > 1:
        flags.append("mixed data")
    if len({r["harness_version"] for r in runs}) > 1:
        flags.append("mixed harness")
    # The run id has the method's version, not its code: code edited mid-grid shows here.
    if len({r["code_hash"] for r in runs}) > 1:
        flags.append("mixed code")
    return flags


def noise_order(names) -> list[str]:
    paper = [n.name for n in NOISE_SETTINGS + EXTRA_NOISE_SETTINGS]
    return [n for n in paper if n in names] + sorted(n for n in names if n not in paper)


def mean_std(maps: list[float]) -> str:
    return f"{maps[0]:.3f}" if len(maps) == 1 else f"{np.mean(maps):.3f} ({np.std(maps, ddof=1):.3f})"


def format_cell(cell: dict | None) -> str:
    if not cell:
        return "-"
    maps, flags = cell["maps"], cell_flags(cell)
    mixed = [f for f in flags if f.startswith("mixed")]
    text = "failed" if not maps else ("-" if mixed else mean_std(maps))
    text += "".join(f" [{f}]" for f in flags)
    if cell["failed"]:
        text += " !"
    return text


def render(records: list[dict], fmt: str = "simple") -> str:
    """One table per (track, task), with the caption; ``fmt`` is a tabulate format."""
    blocks = []
    for (track, task), rows in sorted(collect([run_row(r) for r in records]).items()):
        noises = noise_order({n for cells in rows.values() for n in cells})
        headers = ["method"] + [f"{n}\n{parse_noise(n).label()}" for n in noises]
        body = [[m] + [format_cell(cells.get(n)) for n in noises] for m, cells in sorted(rows.items())]
        blocks.append(f"track {track} / task {task}\n" + tabulate(body, headers, tablefmt=fmt, disable_numparse=True))
    if not blocks:
        return "no finished runs yet"
    return "\n\n".join(blocks) + "\n" + CAPTION.format(min_seeds=MIN_SEEDS)
