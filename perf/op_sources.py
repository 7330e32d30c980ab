"""Which lines of the model issue the step's small kernels: one eager epoch (no CUDA graphs), profiled per op.

Usage (on a GPU): PYTHONPATH=. python perf/op_sources.py [--notes mimic4|mimic3|short] [--steps 20]
    [--ops aten::copy_,aten::sum,aten::add_,aten::fill_] [--rows 25] [--device cuda]

Runs the trainer as ``perf/train_step.py`` does, with CUDA graphs off so that the profiler sees every
op of the second epoch, and prints, for each op named in ``--ops``, its CUDA time per step grouped by
input shapes (the shapes say which tensor it is: most of these ops run in the backward pass, which has
no Python frames). Graph replays run the same kernels; this says where they come from.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmark import trainer
from benchmark.method import TaskInfo
from benchmark.options import Execution
from benchmark.protocol import Budget, get_track
from benchmark.registry import get_method
from train_step import random_split  # perf/, this script's folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--notes", default="mimic4")
    p.add_argument("--method", default="bce")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ops", default="aten::copy_,aten::sum,aten::add_,aten::add,aten::fill_,aten::zero_,aten::cat")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    train = random_split(128 * args.steps, device, generator, notes=args.notes)
    test = random_split(512, device, generator, notes=args.notes)
    entry = get_method(args.method)
    info = TaskInfo("random", "phenotyping", 25, len(train), 76, 768, tuple(f"label{i}" for i in range(25)),
                    get_track("full").backbone)
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True)

    def on_epoch(row: dict) -> None:
        if row["epoch"] == 1:
            prof.__enter__()
        elif row["epoch"] == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            prof.__exit__(None, None, None)

    trainer.train(entry.load_class()(info, entry.hparams), trainer.RunData(train, train.labels.float(), test),
                  Budget(epochs=2, batch_size=128), 30, Execution(cuda_graphs="off"), on_epoch=on_epoch)
    events = prof.key_averages(group_by_input_shape=True)
    print(f"{args.notes}: CUDA time of each op per eager step (its kernels; the epoch's evaluation included)")
    for op in args.ops.split(","):
        rows = sorted((e for e in events if e.key == op), key=lambda e: -e.device_time_total)
        spent = sum(e.device_time_total for e in rows) / args.steps
        print(f"\n== {op}: {spent:.1f} us/step, {sum(e.count for e in rows) / args.steps:.1f} calls/step")
        for e in rows[: args.rows]:
            print(f"{e.device_time_total / args.steps:8.1f} us {e.count / args.steps:5.1f}x  {str(e.input_shapes)[:120]}")


if __name__ == "__main__":
    main()
