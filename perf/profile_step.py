"""Where one FlexCare training step spends its GPU time: eager steps at paper size, torch profiler.

Usage (on a GPU): PYTHONPATH=. python perf/profile_step.py [--ehr 512] [--note 60] [--batch 128]
    [--token-layout padded|packed|varlen] [--lengths full|widest] [--compile off|layers|model]
Prints ms per eager step, the kernel time per step and the kernels by total CUDA time over three
profiled steps. Inputs are random; their lengths follow the full track's law (series bins log-normal
with median 45 capped at ``--ehr``, notes about 31 +- 10 tokens capped at ``--note``) with one stay at
each cap, as in most full-track batches, or (``--lengths widest``) every stay at full width.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmark.backbones.flexcare import Batch, FlexCare


#: Note-token laws of the full track's tasks, fitted to ``ehrbench data describe TASK --track full``
#: (docs/data.md, "Measured"): log-normal tokens (median, sigma of the log), capped at 512, and the share
#: of stays without a note. "short" is generator 3's history section alone (about 31 +- 10 tokens).
NOTE_LAWS = {
    "short": None,
    "mimic4": (78.0, 0.75, 0.08),  # p10 / p50 / p90 34 / 78 / 217 measured; 8 % without a note
    "mimic3": (900.0, 0.5, 0.35),  # 88 % at the 512 cap, p10 471 measured; 35 % without a note
}


def full_track_lengths(n: int, ehr: int, note: int, generator: torch.Generator,
                       notes: str = "short") -> tuple[torch.Tensor, torch.Tensor]:
    """Series bins and note tokens of ``n`` stays, as the full track draws them: log-normal series
    with median 45 (capped at ``ehr``); notes of about 31 +- 10 tokens (``notes="short"``) or by the
    task's law in ``NOTE_LAWS``, capped at ``note``."""
    ehr_len = (torch.randn(n, generator=generator) * 0.8).exp().mul(45).ceil().clamp(6, ehr).long()
    law = NOTE_LAWS[notes]
    if law is None:
        note_len = (torch.randn(n, generator=generator) * 10 + 31).round().clamp(5, note).long()
    else:
        median, sigma, missing = law
        note_len = (torch.randn(n, generator=generator) * sigma).exp().mul(median).round().clamp(5, note).long()
        note_len[torch.rand(n, generator=generator) < missing] = 0
    return ehr_len, note_len


def full_track_batch(b: int, ehr: int, note: int, note_dim: int, lengths: str, dev: torch.device) -> Batch:
    """Random inputs whose lengths follow the full track's law (one stay at each cap), or all at full
    width (``lengths="widest"``)."""
    if lengths == "widest":
        ehr_len, note_len = torch.full((b,), ehr), torch.full((b,), note)
    else:
        ehr_len, note_len = full_track_lengths(b, ehr, note, torch.Generator().manual_seed(0))
        ehr_len[0], note_len[0] = ehr, note
    return Batch(torch.randn(b, ehr, 76, device=dev), ehr_len.to(dev), torch.randn(b, note, note_dim, device=dev),
                 note_len.to(dev), torch.arange(b, device=dev), tokens=int((ehr_len + note_len).sum()))


def kernel_time(step, reps: int = 3):
    """GPU kernel time (ms) and kernel count of one ``step``, averaged over ``reps`` profiled steps."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    rows = prof.key_averages()
    kernel_us = sum(getattr(r, "self_device_time_total", 0) or getattr(r, "self_cuda_time_total", 0) for r in rows)
    return kernel_us / reps / 1e3, sum(r.count for r in rows) / reps, prof


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ehr", type=int, default=512, help="series bins per stay")
    p.add_argument("--note", type=int, default=60, help="note tokens per stay")
    p.add_argument("--note-dim", type=int, default=768)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--token-layout", default="packed", choices=("padded", "packed", "varlen"))
    p.add_argument("--lengths", default="full", choices=("full", "widest"))
    p.add_argument("--compile", default="off", choices=("off", "layers", "model"),
                   help="torch.compile the encoder layers or the whole model first (how much fusion would save)")
    args = p.parse_args()
    dev = torch.device("cuda")
    b = args.batch
    batch = full_track_batch(b, args.ehr, args.note, args.note_dim, args.lengths, dev)
    torch.manual_seed(0)
    model = FlexCare(25, note_dim=args.note_dim).to(dev).train()
    model.token_layout = args.token_layout
    if args.compile == "layers":
        for layer in model.layers:
            layer.compile()
    elif args.compile == "model":
        model.compile()
    opt = torch.optim.Adam(model.parameters(), fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        (out.logits.float().sum() + out.aux).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    t = time.perf_counter()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    print(f"warm-up (compilation included): {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    print(f"{1e3 * (time.perf_counter() - t) / args.steps:.1f} ms per eager step ({torch.cuda.get_device_name()}, "
          f"{args.token_layout}, compile {args.compile}, {batch.tokens + 4 * b} real positions of {b * (4 + args.ehr + args.note)} padded)")
    ms, kernels, prof = kernel_time(step)
    print(f"{ms:.2f} ms of kernel time per step (what a CUDA graph replays), {kernels:.0f} kernels and copies per step")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=70))


if __name__ == "__main__":
    main()
