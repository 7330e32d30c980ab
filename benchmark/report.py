"""Result tables from run records: rows methods, columns noise settings, mean (std) over seeds."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from tabulate import tabulate

from .protocol import EXTRA_NOISE_SETTINGS, NOISE_SETTINGS, parse_noise

MIN_SEEDS = 3
CAPTION = (
    "Last-epoch test mAP (macro, clean test labels): mean (std) over seeds, std with ddof=1 "
    "(sample standard deviation). '[n=k]' marks a cell with fewer than {min_seeds} seeds; "
    "'!' marks a cell whose runs had failed records (not averaged in)."
)


def collect(records: list[dict]) -> dict:
    """{(track, task): {method display: {noise name: {"maps": [...], "failed": int}}}}."""
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: {"maps": [], "failed": 0})))
    for r in records:
        spec = r["spec"]
        cell = table[(spec["track"], spec["task"])][r["method"]["display_name"]][spec["noise"]["name"]]
        if r["status"] == "done":
            cell["maps"].append(r["metrics"]["final"]["map"])
        else:
            cell["failed"] += 1
    return table


def _noise_order(names) -> list[str]:
    paper = [n.name for n in NOISE_SETTINGS + EXTRA_NOISE_SETTINGS]
    return [n for n in paper if n in names] + sorted(n for n in names if n not in paper)


def format_cell(cell: dict | None) -> str:
    if not cell:
        return "-"
    maps = cell["maps"]
    text = "failed" if not maps else (
        f"{maps[0]:.3f}" if len(maps) == 1 else f"{np.mean(maps):.3f} ({np.std(maps, ddof=1):.3f})"
    )
    if maps and len(maps) < MIN_SEEDS:
        text += f" [n={len(maps)}]"
    if cell["failed"]:
        text += " !"
    return text


def render(records: list[dict], fmt: str = "simple") -> str:
    """One table per (track, task), with the caption; ``fmt`` is a tabulate format."""
    blocks = []
    for (track, task), rows in sorted(collect(records).items()):
        noises = _noise_order({n for cells in rows.values() for n in cells})
        headers = ["method"] + [f"{n}\n{parse_noise(n).label()}" for n in noises]
        body = [[m] + [format_cell(cells.get(n)) for n in noises] for m, cells in sorted(rows.items())]
        blocks.append(f"track {track} / task {task}\n" + tabulate(body, headers, tablefmt=fmt, disable_numparse=True))
    if not blocks:
        return "no finished runs yet"
    return "\n\n".join(blocks) + "\n" + CAPTION.format(min_seeds=MIN_SEEDS)
