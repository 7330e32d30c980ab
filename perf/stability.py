"""How much a cell moves with its seed and with how it was executed: one table from run records.

Each ``LABEL=FOLDER`` is a results folder of one execution mode (e.g. ``eager=... compiled=...``),
holding the same specs. Per method and mode: the last-epoch mAP of every seed (a collapsed run marked
with the epoch where it fell), mean (std) over seeds, and per method the largest gap between modes on
one seed and between the modes' means. A mode's records must state it (``environment.compile``); a
folder whose records disagree on it is refused, so a table never mixes what it claims to separate.

Usage: python perf/stability.py eager=RESULTS_A compiled=RESULTS_B [--track full] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys

from benchmark.marks import record_collapse as collapse_of
from benchmark.records import RecordStore
from leaderboard.report import mean_std
from leaderboard.stats import describe


def load(folder: str, track: str) -> dict[tuple[str, str, str, int], dict]:
    """(task, noise, method, seed) -> record, done records only."""
    out = {}
    for path, record, error in RecordStore(folder).scan(track):
        if error:
            sys.exit(f"{path}: {error}")
        if record["status"] == "done":
            spec = record["spec"]
            out[(spec["task"], spec["noise"]["name"], spec["method"]["name"], spec["seed"])] = record
    return out


def cell(record: dict | None) -> str:
    if record is None:
        return "-"
    text = f"{record['metrics']['final']['map']:.3f}"
    fell = collapse_of(record)
    return f"{text} (collapsed e{fell['epoch']})" if fell else text


def table(modes: dict[str, dict], seeds: list[int]) -> str:
    keys = sorted({k[:3] for runs in modes.values() for k in runs})
    head = ["task", "noise", "method", "mode", *[f"seed {s}" for s in seeds], "mean (std)", "collapsed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gaps = []
    for task, noise, method in keys:
        means = {}
        for label, runs in modes.items():
            recs = [runs.get((task, noise, method, s)) for s in seeds]
            maps = [r["metrics"]["final"]["map"] for r in recs if r]
            means[label] = maps
            fell = sum(1 for r in recs if r and collapse_of(r))
            lines.append(f"| {task} | {noise} | {method} | {label} | " + " | ".join(cell(r) for r in recs)
                         + f" | {mean_std(maps) if maps else '-'} | {fell}/{len(maps)} |")
        labels = list(modes)
        if len(labels) == 2 and all(len(means[m]) == len(seeds) for m in labels):
            a, b = (means[m] for m in labels)
            da, db = describe(a), describe(b)
            gaps.append((method, max(abs(x - y) for x, y in zip(a, b)), abs(da["mean"] - db["mean"]),
                         max(da["std"], db["std"])))
    if gaps:
        lines += ["", f"| method | largest gap {' vs '.join(modes)} on one seed | gap of the means | "
                  "largest seed std |", "|---|---|---|---|"]
        lines += [f"| {m} | {g:.3f} | {d:.3f} | {s:.3f} |" for m, g, d, s in gaps]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modes", nargs="+", metavar="LABEL=FOLDER")
    ap.add_argument("--track", default="full")
    ap.add_argument("--seeds", default="30,40,100")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    modes = {}
    for item in args.modes:
        label, sep, folder = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected LABEL=FOLDER")
        modes[label] = load(folder, args.track)
        compiled = {r["environment"].get("compile") for r in modes[label].values()}
        if len(compiled) > 1:
            ap.error(f"{folder}: records of several compile modes {sorted(map(str, compiled))}; one mode per folder")
    text = table(modes, [int(s) for s in args.seeds.split(",")])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
