"""The harness's own training step, timed at several batch sizes, without preparing a task.

Usage (on a GPU): PYTHONPATH=. python perf/train_step.py [--batches 128,256,512] [--compile off|on]
    [--method bce] [--steps 100] [--epochs 4] [--notes short|mimic4|mimic3] [--profile] [--out FILE]

Runs ``benchmark.trainer.train`` (CUDA graphs, varlen layout, bf16, everything a real run does) on a
random split whose lengths follow the full track's law: series bins log-normal with median 45, capped
at 512 (about one stay in a hundred above 300 hours, as in most full-track batches); notes of 31 +- 10
tokens capped at 80, 5 % without a note (generator 3's), or with ``--notes mimic4|mimic3`` the real
pipelines' lengths of that task (``profile_step.NOTE_LAWS``); BERT-base-sized token embeddings. Reports the steady ms per
step (epochs after the first) and samples per second for each batch size; with ``--profile``, the
kernels of the last epoch (graph replays included; its evaluation of 512 rows too) per step.

Why batch sizes: K runs packed on one GPU do K times a run's work per step of time. A single run with
a K times larger batch does the same arithmetic and memory traffic in larger kernels, with no second
set of launches to interleave, so its throughput bounds what packing K runs can reach: if a batch of
512 runs only 1.4x the samples per second of a batch of 128, four packed runs cannot reach 2.5x.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from benchmark import trainer
from benchmark.backbones import affine, fused
from benchmark.data import Split
from benchmark.method import TaskInfo
from benchmark.options import Execution
from benchmark.protocol import Budget, get_track
from benchmark.registry import get_method
from profile_step import NOTE_LAWS, full_track_lengths  # perf/, this script's folder


def random_split(n: int, device: torch.device, generator: torch.Generator, note_dim: int = 768,
                 labels: int = 25, notes: str = "short") -> Split:
    """``n`` stays with the full track's lengths and random contents (timing only); ``notes``: a law
    of ``profile_step.NOTE_LAWS`` (short notes: capped at 80 tokens, 5 % without one)."""
    ehr_len, note_len = full_track_lengths(n, 512, 80 if notes == "short" else 512, generator, notes)
    if notes == "short":
        note_len[torch.rand(n, generator=generator) < 0.05] = 0
    ehr_offsets = torch.cat([torch.zeros(1, dtype=torch.long), ehr_len.cumsum(0)])
    note_offsets = torch.cat([torch.zeros(1, dtype=torch.long), note_len.cumsum(0)])
    ehr = torch.randn(int(ehr_offsets[-1]) + 1, 76, generator=generator)
    note = torch.randn(int(note_offsets[-1]) + 1, note_dim, generator=generator).half()
    ehr[-1], note[-1] = 0, 0  # the padding row every split ends with
    y = (torch.rand(n, labels, generator=generator) < 0.18).to(torch.uint8)
    return Split(ehr, ehr_offsets, note, note_offsets, torch.arange(n), y).to(device)


def time_steps(method_name: str, batch: int, steps: int, epochs: int, compile_model: str,
               device: torch.device, profile: bool = False, notes: str = "short", rows: int = 40) -> dict:
    generator = torch.Generator().manual_seed(0)
    train = random_split(batch * steps, device, generator, notes=notes)
    test = random_split(512, device, generator, notes=notes)
    entry = get_method(method_name)
    info = TaskInfo("random", "phenotyping", 25, len(train), 76, 768, tuple(f"label{i}" for i in range(25)),
                    get_track("full").backbone)
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if profile else None

    def on_epoch(row: dict) -> None:  # profile the last epoch only: warm-up and captures are over
        if profiler is not None and row["epoch"] == epochs - 1:
            profiler.__enter__()
        elif profiler is not None and row["epoch"] == epochs:
            torch.cuda.synchronize()
            profiler.__exit__(None, None, None)

    t = time.perf_counter()
    result = trainer.train(entry.load_class()(info, entry.hparams), trainer.RunData(train, train.labels.float(), test),
                           Budget(epochs=epochs, batch_size=batch), 30, Execution(compile=compile_model),
                           on_epoch=on_epoch)
    if profiler is not None:
        print_kernels(profiler, steps, f"batch {batch}, compile {compile_model}, notes {notes}", rows)
    tm = result.timings
    steady_s = (tm["train"] - tm["train_first_epoch"]) / ((epochs - 1) * steps)
    return {"batch": batch, "notes": notes, "rows_per_step": int((train.ehr_len + train.note_len).sum()) / steps,
            "steady_ms_per_step": 1e3 * steady_s, "samples_per_s": batch / steady_s,
            "first_epoch_s": tm["train_first_epoch"], "wall_s": time.perf_counter() - t,
            "graphs": tm.get("graphs_captured"), "compile_fallback": result.compile_fallback}


def print_kernels(profiler, steps: int, title: str, rows: int = 40) -> None:
    averages = profiler.key_averages()
    total = sum(a.self_device_time_total for a in averages)
    print(f"{title}: {total / steps / 1e3:.3f} ms of kernel time per step, "
          f"{sum(a.count for a in averages) / steps:.0f} kernels per step")
    for a in sorted(averages, key=lambda a: -a.self_device_time_total)[:rows]:
        print(f"{a.self_device_time_total / steps:8.1f} us/step {a.count / steps:6.1f}/step  {a.key[:150]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="128,256,512")
    p.add_argument("--method", default="bce")
    p.add_argument("--compile", default="off", choices=("off", "on"))
    p.add_argument("--steps", type=int, default=100, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--profile", action="store_true", help="also list the last epoch's kernels per step")
    p.add_argument("--rows", type=int, default=40, help="kernels listed with --profile")
    p.add_argument("--device", default="cuda")
    p.add_argument("--affine", default="on", choices=("on", "off"),
                   help="off: autograd's own Linear / LayerNorm parameter reductions (backbones/affine.py)")
    p.add_argument("--fused", default="on", choices=("on", "off"),
                   help="off: each sub-layer's norm(x + dropout(h)) as PyTorch ops (backbones/fused.py)")
    p.add_argument("--notes", default="short", choices=sorted(NOTE_LAWS),
                   help="note-token law: generator 3's short notes, or a full-track task's real lengths")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2: the steady step leaves out the first epoch")
    device = torch.device(args.device)
    affine.ENABLED = args.affine == "on"
    fused.ENABLED = args.fused == "on"
    if args.profile and device.type != "cuda":
        p.error("--profile lists CUDA kernels: it needs --device cuda")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        rows.append(time_steps(args.method, batch, args.steps, args.epochs, args.compile, device, args.profile,
                               args.notes, args.rows))
        rows[-1]["vs_first"] = rows[-1]["samples_per_s"] / rows[0]["samples_per_s"]
        print(f"batch {batch}: {rows[-1]['steady_ms_per_step']:.2f} ms per step, "
              f"{rows[-1]['samples_per_s']:,.0f} samples/s ({rows[-1]['vs_first']:.2f}x batch {rows[0]['batch']})",
              flush=True)
    report = {"notes": args.notes, "affine": args.affine, "fused": args.fused,
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "method": args.method,
              "compile": args.compile, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
