"""Single runs on a sampled variant of a task (fewer stays, same generator and protocol), one after
another, within a time budget: for GPU checks that must fit a short lease.
Usage: python perf/sample_runs.py --track full --task mimic4-phe --n 10000 --encoder DIR \
           --run bce:clean:modalities=ehr --run focal:sym-40 ... [--budget-s 480] [--results DIR]"""
import argparse
import dataclasses
import json
import time

from benchmark.options import Execution
from benchmark.protocol import task_dict
from benchmark.runner import plan, run_one


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--track", default="full")
    p.add_argument("--task", default="mimic4-phe")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--encoder", required=True)
    p.add_argument("--run", action="append", required=True, help="METHOD:NOISE[:KEY=VALUE,...]")
    p.add_argument("--seed", type=int, default=30)
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--results", default="results")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    start, rows = time.perf_counter(), []
    for item in args.run:
        method, noise, *rest = item.split(":")
        overrides = dict(kv.split("=", 1) for kv in rest[0].split(",")) if rest else {}
        if time.perf_counter() - start > args.budget_s:
            print(f"skipped (time budget): {item}", flush=True)
            continue
        spec = plan(method, args.track, [args.task], [noise], [args.seed], overrides=overrides, encoder=args.encoder).specs[0]
        task = dataclasses.replace(_task(spec), n_total=args.n,
                                   name=f"{args.task}-n{args.n}")
        spec = {**spec, "task": task.name, "task_spec": task_dict(task)}
        record = run_one(spec, args.results, Execution(device=args.device))
        row = {"run": item, "status": record["status"], "map": record["metrics"]["final"].get("map"),
               "total_s": round(record["timings"]["total"], 1), "train_s": round(record["timings"].get("train", 0), 1),
               "parameters": record["method"].get("parameters")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(rows, indent=1))


def _task(spec):
    from benchmark.protocol import TaskSpec

    return TaskSpec(**spec["task_spec"])


if __name__ == "__main__":
    main()
