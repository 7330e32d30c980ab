"""Where a quick-track training step spends its CPU time: one real run's epochs, torch profiler.

Usage: PYTHONPATH=. python perf/cpu_step.py [--method bce] [--epochs 3] [--threads 1] [--rows 25]

Trains ``--method`` on the quick track's ``syn-phe`` task with its noise-free labels for ``--epochs``
epochs (the run's own code path: ``benchmark.trainer.train``, CPU, fp32) and profiles the last epoch:
the operators by self CPU time, per step, and the share of the epoch each takes. One thread by default,
as each of the CPU grid's workers runs.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmark import trainer
from benchmark.method import TaskInfo
from benchmark.options import Execution
from benchmark.protocol import QUICK, Budget
from benchmark.registry import get_method
from benchmark.runner import load_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="bce")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = QUICK.task("syn-phe")
    data = load_task(spec)
    info = TaskInfo(spec.name, spec.kind, spec.num_labels, len(data.train), data.train.ehr.shape[-1],
                    data.train.note.shape[-1], tuple(data.label_names), QUICK.backbone)
    entry = get_method(args.method)
    steps = -(-len(data.train) // QUICK.budget.batch_size)
    prof = profile(activities=[ProfilerActivity.CPU])
    started = {}

    def on_epoch(row: dict) -> None:  # profile the last epoch (its evaluation too)
        if row["epoch"] == args.epochs - 1:
            started["t"] = time.perf_counter()
            prof.__enter__()
        elif row["epoch"] == args.epochs:
            prof.__exit__(None, None, None)
            started["epoch_s"] = time.perf_counter() - started["t"]

    run = trainer.RunData(data.train, data.train.labels.float(), data.test)
    trainer.train(entry.load_class()(info, entry.hparams), run, Budget(epochs=args.epochs), 30,
                  Execution(device="cpu"), on_epoch=on_epoch)
    averages = prof.key_averages()
    epoch_us = started["epoch_s"] * 1e6
    print(f"{args.method}, quick syn-phe, {args.threads} thread(s): one epoch {started['epoch_s']:.2f} s "
          f"({steps} steps and the evaluation), {epoch_us / steps / 1e3:.1f} ms per step")
    print(f"{'self ms/step':>12} {'share':>6} {'calls/step':>10}  operator")
    for a in sorted(averages, key=lambda a: -a.self_cpu_time_total)[:args.rows]:
        print(f"{a.self_cpu_time_total / steps / 1e3:12.2f} {a.self_cpu_time_total / epoch_us:6.1%} "
              f"{a.count / steps:10.1f}  {a.key[:90]}")


if __name__ == "__main__":
    main()
