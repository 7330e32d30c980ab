"""What a method's grid cost, read from its run records: one row per record set, track, task, method,
hardware and execution mode.

    PYTHONPATH=. python perf/grid_costs.py leaderboard/published docs/records/h200-0.7.0-compiled-grid

Every number comes from the records (``timings.total`` and ``created_utc``), none from an estimate:

- runs: the finished runs found, against the runs of the track's grid for that method and task
  (``runner.plan``); a grid with runs missing says so rather than being scaled up.
- wall: from the first run's start (its ``created_utc`` less its ``timings.total``) to the last run's
  end. It is the grid's wall time only where its runs ran in one invocation, as ``make bench`` runs
  them; a set gathered over several invocations (or interleaved with other work) widens it.
- run time: each run's ``timings.total`` less ``timings.data`` (the data preparation a run did when it
  found no cache, which a grid pays once per machine), summed, and their median and slowest (the first
  run of a compiled grid pays the compilation).
- device-hours: run time summed / runs sharing one device (``environment.packed_runs``: runs packed on
  one GPU, or CPU workers on one machine), in hours.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

HEADER = ("records", "track", "task", "method", "hardware", "execution", "runs", "wall", "run time, summed",
          "median run", "slowest run", "device-hours")


def _clock(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


def rows_of(folder: Path) -> list[dict]:
    """One row per finished run record under ``folder``, with its end time."""
    from benchmark.records import RecordStore
    from leaderboard.report import run_row

    out = []
    for path, record, error in RecordStore(folder).scan():
        if not error and record["status"] == "done":
            end = datetime.fromisoformat(record["created_utc"].replace("Z", "+00:00")).timestamp()
            where = Path(path).relative_to(folder)
            out.append({**run_row(record), "end": end, "record_set": "/".join(where.parts[:-4]) or "."})
    return out


def grid_size(method: str, track: str, task: str) -> int | None:
    from benchmark.runner import plan

    try:
        return len(plan(method, track, tasks=[task]).specs)
    except Exception:  # a method or track this checkout no longer has: the count is unknown, not wrong
        return None


def cost_rows(folders: list[Path]) -> list[dict]:
    from leaderboard.aggregate import execution_setting  # the compute tables' words for it

    groups = defaultdict(list)
    for folder in folders:
        for r in rows_of(folder):
            key = (os.path.normpath(folder / r["record_set"]), r["track"], r["task"], r["label"], r["hardware"],
                   execution_setting(r))
            groups[key].append(r)
    out = []
    for (where, track, task, label, hardware, execution), runs in sorted(groups.items()):
        totals = [r["time_total"] - (r["time_data"] or 0.0) for r in runs]
        start = min(r["end"] - r["time_total"] for r in runs)
        planned = grid_size(runs[0]["method"], track, task)
        out.append({
            "records": where, "track": track, "task": task, "method": label, "hardware": hardware,
            "execution": execution, "runs": len(runs), "grid_runs": planned,
            "wall_s": max(r["end"] for r in runs) - start, "sum_s": sum(totals),
            "median_s": statistics.median(totals), "max_s": max(totals),
            "device_hours": sum(t / r["packed_runs"] for t, r in zip(totals, runs)) / 3600,
        })
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        runs = f"{r['runs']} of {r['grid_runs']}" if r["grid_runs"] not in (None, r["runs"]) else str(r["runs"])
        cells = (f"`{r['records']}`", r["track"], f"`{r['task']}`", r["method"], r["hardware"], r["execution"], runs,
                 _clock(r["wall_s"]), _clock(r["sum_s"]), f"{r['median_s']:.1f} s", f"{r['max_s']:.1f} s",
                 f"{r['device_hours']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="results folders (or record sets) to read")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        p.error(f"not a folder: {', '.join(missing)}")
    rows = cost_rows(args.folders)
    if not rows:
        print(f"no finished run records under {', '.join(map(str, args.folders))}", file=sys.stderr)
        return 1
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
