"""Where one FlexCare training step spends its GPU time: eager steps at paper size, torch profiler.

Usage (on a GPU): PYTHONPATH=. python perf/profile_step.py [--ehr 512] [--note 60] [--batch 128]
Prints ms per eager step and the kernels by total CUDA time over three profiled steps. Inputs are
random, every stay at full width (the widest batches of the full track).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmark.backbones.flexcare import Batch, FlexCare


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ehr", type=int, default=512, help="series bins per stay")
    p.add_argument("--note", type=int, default=60, help="note tokens per stay")
    p.add_argument("--note-dim", type=int, default=768)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    dev = torch.device("cuda")
    b = args.batch
    batch = Batch(torch.randn(b, args.ehr, 76, device=dev), torch.randint(1, args.ehr + 1, (b,), device=dev),
                  torch.randn(b, args.note, args.note_dim, device=dev),
                  torch.randint(1, args.note + 1, (b,), device=dev), torch.arange(b, device=dev))
    torch.manual_seed(0)
    model = FlexCare(25, note_dim=args.note_dim).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        (out.logits.float().sum() + out.aux).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    print(f"{1e3 * (time.perf_counter() - t) / args.steps:.1f} ms per eager step ({torch.cuda.get_device_name()})")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=70))


if __name__ == "__main__":
    main()
