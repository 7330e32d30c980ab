"""Does a track rank methods as a reference track does? Spearman's rho per noise setting, from run records.

The reference is the full track (one GPU seed per method and setting); the candidate is, e.g., the quick
track. Each side is one or more results folders (later folders do not replace a run an earlier one
holds); per side, the mean last-epoch mAP of each (method, setting) over its done runs of the default
spec's seeds found. Methods missing on either side of a setting are left out of that setting's rho and
named. Failed runs count as missing: a failed run has no number to rank.

Usage: python perf/ranking.py --reference DIR[,DIR] --reference-track full --reference-task mimic4-phe \\
           --candidate DIR --candidate-track quick --candidate-task syn-phe \\
           [--noise sym-40,asym-0-40,asym-40-0,bal-40] [--seeds 30] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np
from scipy.stats import spearmanr

from benchmark.records import RecordStore

DEFAULT_NOISE = "sym-40,asym-0-40,asym-40-0,bal-40"


def means(folders: list[str], track: str, task: str, noises: list[str], seeds: set[int] | None) -> dict:
    """(method, noise) -> mean mAP over the done runs found."""
    runs: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for folder in folders:
        for path, record, error in RecordStore(folder).scan(track):
            if error:
                print(f"warning: {error}", file=sys.stderr)
                continue
            spec = record["spec"]
            if record["status"] != "done" or spec["task"] != task or spec["noise"]["name"] not in noises:
                continue
            if seeds and spec["seed"] not in seeds:
                continue
            runs[(spec["method"]["name"], spec["noise"]["name"])].setdefault(spec["seed"], record["metrics"]["final"]["map"])
    return {key: float(np.mean(list(v.values()))) for key, v in runs.items()}


def agreement(reference: dict, candidate: dict, noises: list[str]) -> list[dict]:
    rows = []
    for noise in noises:
        shared = sorted(m for m, n in reference if n == noise and (m, noise) in candidate)
        missing = sorted({m for m, n in {**reference, **candidate} if n == noise} - set(shared))
        ref = [reference[(m, noise)] for m in shared]
        cand = [candidate[(m, noise)] for m in shared]
        rho = float(spearmanr(ref, cand).statistic) if len(shared) >= 3 else float("nan")
        rows.append({"noise": noise, "methods": shared, "missing": missing, "rho": rho,
                     "reference": dict(zip(shared, ref)), "candidate": dict(zip(shared, cand))})
    return rows


def markdown(rows: list[dict]) -> str:
    methods = sorted({m for r in rows for m in r["methods"]})
    head = "| method | " + " | ".join(f"{r['noise']} ref | {r['noise']} cand" for r in rows) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(rows))]
    for m in methods:
        cells = []
        for r in rows:
            cells += [f"{r['reference'][m]:.3f}" if m in r["reference"] else "-",
                      f"{r['candidate'][m]:.3f}" if m in r["candidate"] else "-"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    rhos = [r["rho"] for r in rows if np.isfinite(r["rho"])]
    lines.append("")
    for r in rows:
        extra = f"; left out: {', '.join(r['missing'])}" if r["missing"] else ""
        lines.append(f"- {r['noise']}: Spearman {r['rho']:.2f} over {len(r['methods'])} methods{extra}")
    lines.append(f"- mean over settings: {np.mean(rhos):.2f}" if rhos else "- no setting has 3 shared methods")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("reference", "candidate"):
        p.add_argument(f"--{side}", required=True, help="results folder(s), comma-separated")
        p.add_argument(f"--{side}-track", required=True)
        p.add_argument(f"--{side}-task", required=True)
    p.add_argument("--noise", default=DEFAULT_NOISE)
    p.add_argument("--seeds", default="", help="comma-separated; default every seed found")
    p.add_argument("--out")
    a = p.parse_args(argv)
    noises = a.noise.split(",")
    seeds = {int(s) for s in a.seeds.split(",") if s} or None
    ref = means(a.reference.split(","), a.reference_track, a.reference_task, noises, seeds)
    cand = means(a.candidate.split(","), a.candidate_track, a.candidate_task, noises, seeds)
    text = markdown(agreement(ref, cand, noises))
    print(text, end="")
    if a.out:
        open(a.out, "w").write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
