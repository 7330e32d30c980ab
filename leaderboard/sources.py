"""Where the board's records come from: the user's results folder and the published set.

The published set is the record tree under ``leaderboard/published/`` (``<track>/<task>/<method>/<run
id>.json``, the layout of a results folder), written by ``ehrbench publish-baselines``
(``benchmark/baselines.py``) and committed with the project. The leaderboard reads it beside the user's
records for the tracks it shows; each run row says which it came from (``source``: ``PUBLISHED`` or
``YOURS``). A row of a table holds runs of one spec less its seed whatever their source, so a method the
user ran at a published spec shares its row with the published runs; the row and its cells say whose
runs they hold. A user's run of a published run id replaces nothing: the published run stays in the
cell's mean, the user's is kept beside it (``pair``) and the cell is marked ``BOTH_AGREE`` when their
mAPs agree within ``CPU_MAP_TOLERANCE``, else flagged ``BOTH_DIFFER`` (and left out of ranking and tests).
"""
from __future__ import annotations

import os
from pathlib import Path

PUBLISHED = "published"
YOURS = "yours"
# The folder of the published set in this checkout; $EHRBENCH_PUBLISHED points the CLI elsewhere.
PUBLISHED_ROOT = Path(__file__).resolve().parent / "published"
PUBLISHED_ENV = "EHRBENCH_PUBLISHED"
# How a published record is named in a release's archive and on the page (a user's by its path in results/).
ARCHIVE_PREFIX = "published"
RECORD_SET = "(published)"

# How far a user's run may differ from the published run of the same run id (last-epoch test mAP) before
# the cell is flagged. docs/reliability.md, "Determinism": on CPU the same spec gives identical records
# (every per-epoch metric bit for bit) for the same torch thread count; across thread counts the training
# loss differed in its 7th significant digit (1.3344836 vs 1.3344835) while the test metrics stayed
# identical, and records made with another --jobs are to be compared "to that tolerance". A mAP is in
# [0, 1], so a difference in its 7th significant digit is below 1e-6.
CPU_MAP_TOLERANCE = 1e-6

BOTH_AGREE = "published = yours"
BOTH_DIFFER = "published != yours"


def default_root() -> Path:
    """The published set the CLI reads and writes: ``$EHRBENCH_PUBLISHED``, else ``leaderboard/published/``."""
    env = os.environ.get(PUBLISHED_ENV)
    return Path(env) if env else PUBLISHED_ROOT


def catalogue(root: Path) -> list[dict]:
    """Every track a published set can be made for (on the leaderboard, synthetic tasks only: the paper
    track runs on the user's own MIMIC files) and what ``root`` holds of it, shown or not:
    ``[{"track", "folder", "files"}]`` (``files``: its record files, 0 for a set not made yet)."""
    from benchmark.protocol import TRACKS

    out = []
    for name, track in TRACKS.items():
        if track.on_leaderboard and all(task.source == "synthetic" for task in track.tasks):
            folder = Path(root) / name
            files = sum(1 for _ in folder.rglob("*.json")) if folder.is_dir() else 0
            out.append({"track": name, "folder": shown(folder), "files": files})
    return out


def shown(path: Path) -> str:
    """``path`` as the page and the terminal name it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def source_of(row: dict) -> str:
    """A run row's source; rows built without one (a table of ``ehrbench table``, a test's) are the user's."""
    return row.get("source", YOURS)


def pair(cell: dict, tolerance: float = CPU_MAP_TOLERANCE) -> dict:
    """Take a user's done runs of a published done run id out of ``cell["runs"]`` (the published run
    stays: one run id counts once) into ``cell["twins"]``: seed, run id, both mAPs, their difference
    and whether it is within ``tolerance``. Returns ``cell``."""
    reference = {r["run_id"]: r for r in cell["runs"] if source_of(r) == PUBLISHED}
    kept, twins = [], []
    for run in cell["runs"]:
        ref = reference.get(run["run_id"]) if source_of(run) != PUBLISHED else None
        if ref is None:
            kept.append(run)
            continue
        difference = abs(run["map"] - ref["map"])
        twins.append({"seed": run["seed"], "run_id": run["run_id"], "published": ref["map"], "yours": run["map"],
                      "difference": difference, "agree": difference <= tolerance})
    cell["runs"], cell["maps"] = kept, [r["map"] for r in kept]
    cell["twins"] = sorted(twins, key=lambda t: (t["seed"], t["run_id"]))
    return cell


def twin_flags(cell: dict) -> list[str]:
    """``[BOTH_DIFFER]`` when a user's run and the published run of one run id differ beyond the tolerance."""
    return [BOTH_DIFFER] if any(not t["agree"] for t in cell.get("twins", ())) else []


def label(sources) -> str:
    """'published', 'yours' or 'published + yours' for a set of sources ('' for none)."""
    return " + ".join(s for s in (PUBLISHED, YOURS) if s in set(sources))


def cell_marks(cell: dict, row_sources) -> list[str]:
    """What a cell says of its sources in a table that holds published runs: its own sources where they
    are not its row's (a row of both sources), and ``BOTH_AGREE`` when it holds a user's run of a
    published run id that agrees with it (a disagreement is a flag, ``twin_flags``)."""
    marks = []
    own = set(cell.get("sources", ()))
    if own and own != set(row_sources):
        marks.append(label(own))
    if cell.get("twins") and not twin_flags(cell):
        marks.append(BOTH_AGREE)
    return marks


def twin_text(twin: dict, tolerance: float = CPU_MAP_TOLERANCE) -> str:
    """One line of a cell's tooltip: a run id held by both sources, and how far apart their mAPs are."""
    verdict = "within" if twin["agree"] else "beyond"
    return (f"seed {twin['seed']} (run {twin['run_id']}): published mAP {twin['published']:.6f}, yours "
            f"{twin['yours']:.6f}, |difference| {twin['difference']:.2g} {verdict} the CPU determinism tolerance "
            f"{tolerance:g}")
