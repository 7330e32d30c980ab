"""Candidate quick-track designs, run as the ranking study needs them (docs/ranking.md, "Designs tried").

Each design is the quick track with other sizes only (stays, hourly bins, note tokens, backbone width):
the generator's rules, the protocol (30 epochs, Adam, cosine T_max 10, batch 128, last epoch), the
noise and the seeds stay those of every track. A design is registered as a track named
``quick-<design>`` in this process (and its forked workers) only: it never reaches the leaderboard,
and its records say which design they ran (the spec's track, task spec and backbone).

Usage: PYTHONPATH=. python perf/quick_designs.py --designs B,C [--methods all] [--seeds 30,40,100]
           [--noise sym-40,asym-0-40,asym-40-0,bal-40] [--workers N] --results DIR
Then: python perf/ranking.py ... --candidate DIR --candidate-track quick-B --candidate-task syn-phe

CPU only, one thread per worker (as the CPU grid runs); prints a line per run and, per design, the
core-seconds it cost, so that designs compare by cost as well as by agreement.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import time

import torch

from benchmark import protocol
from benchmark.protocol import QUICK, BackboneSize

# name -> (task sizes, backbone); "now" is the quick track as it is.
DESIGNS: dict[str, tuple[dict, BackboneSize]] = {
    "now": ({}, QUICK.backbone),
    "A": ({"n_total": 7168}, QUICK.backbone),  # 4x the stays (4x the optimiser steps)
    "B": ({"n_total": 3584, "max_hours": 12, "note_tokens": 8}, QUICK.backbone),  # 2x stays, half the tokens
    "C": ({"n_total": 5376, "max_hours": 12, "note_tokens": 8},  # 3x stays, half the tokens, half the width
          BackboneSize(hidden=16, layers=2, heads=2, ff=32, experts=4, top_k=2)),
}
METHODS = "bce,focal,asl,gce,mllsc,multit,miracl,medfuse,m3care"


def register(name: str) -> protocol.Track:
    sizes, backbone = DESIGNS[name]
    task = dataclasses.replace(QUICK.tasks[0], **sizes)
    track = dataclasses.replace(QUICK, name=f"quick-{name}", description=f"quick-track design {name}: {sizes}",
                                tasks=(task,), backbone=backbone, on_leaderboard=False)
    protocol.TRACKS[track.name] = track
    return track


def _init() -> None:
    torch.set_num_threads(1)


def _run(args: tuple) -> tuple[str, str, float, float | None]:
    from benchmark.options import Execution
    from benchmark.runner import run_one
    spec, results = args
    t = time.perf_counter()
    record = run_one(spec, results, Execution(device="cpu"))
    final = record["metrics"]["final"].get("map") if record["status"] == "done" else None
    return spec["track"], f"{spec['method']['name']} {spec['noise']['name']} seed {spec['seed']}: {record['status']}", \
        time.perf_counter() - t, final


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--designs", default="B,C")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--noise", default="sym-40,asym-0-40,asym-40-0,bal-40")
    p.add_argument("--seeds", default="30,40,100")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--results", required=True)
    args = p.parse_args()
    from benchmark.records import RecordStore
    from benchmark.runner import load_task, plan
    todo, store = [], RecordStore(args.results)
    for name in args.designs.split(","):
        track = register(name)
        load_task(track.tasks[0])  # prepared once, before the workers fork
        for method in args.methods.split(","):
            specs = plan(method, track.name, noises=args.noise.split(","), seeds=[int(s) for s in args.seeds.split(",")]).specs
            todo += [(s, args.results) for s in specs if not store.path(s).exists()]
    print(f"{len(todo)} runs to do on {args.workers} workers", flush=True)
    cost: dict[str, float] = {}
    with multiprocessing.get_context("fork").Pool(args.workers, initializer=_init) as pool:
        for i, (track, line, seconds, final) in enumerate(pool.imap_unordered(_run, todo), 1):
            cost[track] = cost.get(track, 0.0) + seconds
            print(f"[{i}/{len(todo)}] {track} {line} ({seconds:.1f} s, mAP {final})", flush=True)
    for track, seconds in cost.items():
        print(f"{track}: {seconds:.0f} core-seconds for its runs", flush=True)


if __name__ == "__main__":
    main()
