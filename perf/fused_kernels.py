"""The fused kernels of ``backbones/fused.py`` alone, against the PyTorch ops they replace, at a step's shapes.

Usage (on a GPU): PYTHONPATH=. python perf/fused_kernels.py [--rows 49400] [--out FILE]

Times forward + backward of ``norm(x + dropout(h))`` (x fp32, h bf16, [rows, 128]) and of
``dropout(relu(u))`` (bf16, [rows, 512]) under bf16 autocast, in CUDA graphs of 20 calls each (a step replays
its kernels so), for a few block sizes of the tail's kernels; prints us per call and the bandwidth that the
bytes each must move imply.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from benchmark.backbones import fused
from benchmark.backbones.dropout import Dropout

CALLS = 20


def timed(fn, repeats: int = 5) -> float:
    """Median us per call of ``fn`` (forward + backward) replayed from a CUDA graph of CALLS calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS):
            fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / CALLS)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=49_400, help="packed rows of a step (mimic3-phe: ~49.4k)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    n, d, ff, prob = args.rows, 128, 512, 0.1
    dev = torch.device("cuda")
    norm, drop = nn.LayerNorm(d).to(dev), Dropout(prob)
    x = torch.randn(n, d, device=dev, requires_grad=True)
    h = torch.randn(n, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
    u = torch.randn(n, ff, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g32, g16 = torch.randn(n, d, device=dev), torch.randn(n, ff, device=dev, dtype=torch.bfloat16)

    def tail():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fused.add_dropout_norm(x, h, prob, norm, drop)
        torch.autograd.backward(out, g32)

    def activation():
        torch.autograd.backward(fused.relu_dropout(u, prob, drop), g16)

    rows = []
    default = (fused.ROWS_FORWARD, fused.ROWS_BACKWARD, fused.ELEMENTS, fused.PROGRAMS_PER_SM)
    for enabled in (False, True):
        fused.ENABLED = enabled
        configs = [default] + ([(8, 32, 1024, 32), (16, 32, 4096, 32), (8, 16, 512, 16),
                                                (4, 64, 8192, 32)]
                               if enabled else [])
        for config in configs:
            fused.ROWS_FORWARD, fused.ROWS_BACKWARD, fused.ELEMENTS, fused.PROGRAMS_PER_SM = config
            fused._programs.cache_clear()
            row = dict(zip(("rows_forward", "rows_backward", "elements", "programs_per_sm"), config), fused=enabled,
                       tail_us=timed(tail), activation_us=timed(activation))
            # Bytes the fused kernels must move: tail x, h in; out, xhat out; g, xhat in; dx, dh out.
            row["tail_tb_s"] = n * d * (4 + 2 + 4 + 4 + 4 + 4 + 4 + 2) / row["tail_us"] / 1e6
            row["activation_tb_s"] = n * ff * 2 * 5 / row["activation_us"] / 1e6  # u in, y out; g, u in, du out
            rows.append(row)
            print(json.dumps(row), flush=True)
    fused.ROWS_FORWARD, fused.ROWS_BACKWARD, fused.ELEMENTS, fused.PROGRAMS_PER_SM = default
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "rows": n, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
