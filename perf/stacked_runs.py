"""Would fusing the runs of a grid pay where running them side by side does not?

Threads sharing one GPU (``--runs-per-gpu``) gain 1.24x for two full-track runs: each run's step is
~1,800 small kernels that already keep the device busy. Here K FlexCare models, one per run of a grid
(as with ``--seeds 30`` and K noise settings: same batches, other labels), are stacked into one set
of parameters and stepped together through ``torch.func.vmap``, so every kernel does K runs' work.
Prints the GPU kernel time per step for K = 1, 2, 4, ... and the throughput against K separate
steps. A measurement, not a harness feature: the runs' losses, optimiser states and dropout draws
stay separate (``randomness="different"``), but nothing here writes records.

Usage (on a GPU): PYTHONPATH=. python perf/stacked_runs.py [--runs 1,2,4,8] [--token-layout packed]
(varlen's flash kernels have no vmap rule; padded and packed attention go through SDPA's.)
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from benchmark.backbones.flexcare import FlexCare
from profile_step import full_track_batch, kernel_time


def stacked_step(k: int, batch, labels: int, layout: str, dev: torch.device):
    """One training step of ``k`` stacked models on ``batch`` with their own random targets."""
    torch.manual_seed(0)
    # bf16 weights, no autocast: under vmap a linear layer with stacked weights is not autocast (it
    # would run in fp32), so the runs' kernels get bf16 operands this way instead.
    models = [FlexCare(labels, note_dim=batch.note.shape[-1]).to(dev, torch.bfloat16).train() for _ in range(k)]
    for m in models:
        m.token_layout = layout
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    for module in base.modules():  # fp32 intermediates (the gating's, by design) meet bf16 weights
        if any(True for _ in module.parameters(recurse=False)):
            module.register_forward_pre_hook(_to_bf16)
    targets = (torch.rand(k, len(batch.ehr_len), labels, device=dev) < 0.2).float()
    opt = torch.optim.Adam(list(params.values()), fused=True)

    batch = dataclasses.replace(batch, **{f.name: getattr(batch, f.name).bfloat16() for f in dataclasses.fields(batch)
                                          if torch.is_tensor(getattr(batch, f.name)) and getattr(batch, f.name).is_floating_point()})

    def forward(p, b, y):
        out = functional_call(base, (p, b), (batch,))
        return F.binary_cross_entropy_with_logits(out.logits.float(), y) + out.aux.float()

    def step():
        losses = vmap(forward, randomness="different")(params, buffers, targets)
        losses.sum().backward()  # the runs' parameters are disjoint: each gets its own gradient
        opt.step()
        opt.zero_grad(set_to_none=False)

    return step


def _sdpa_with_stacked_mask(sdpa):
    """SDPA's vmap rule fails on a mask shared by the stacked runs (it expands [B, ...] to [K*B, ...]);
    adding a zero that depends on the run makes the mask per run, at the cost of K copies of it."""
    def attend(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            attn_mask = attn_mask + (q.detach().flatten()[0] * 0).to(attn_mask.dtype)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)
    return attend


def _to_bf16(module, args):
    return tuple(a.bfloat16() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="1,2,4,8")
    p.add_argument("--token-layout", default="packed", choices=("padded", "packed"))
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    dev = torch.device("cuda")
    F.scaled_dot_product_attention = _sdpa_with_stacked_mask(F.scaled_dot_product_attention)
    batch = full_track_batch(args.batch, 512, 60, 768, "full", dev)  # as profile_step.py
    single = None
    for k in [int(x) for x in args.runs.split(",")]:
        try:
            step = stacked_step(k, batch, 25, args.token_layout, dev)
            t = time.perf_counter()
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            warm = time.perf_counter() - t
            ms, kernels, _ = kernel_time(step)
        except Exception as e:  # noqa: BLE001 - a measurement script: report and go on
            print(f"K={k}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        single = single if single is not None or k != 1 else ms
        ratio = f", {k * single / ms:.2f}x the throughput of K separate steps" if single else ""
        print(f"K={k}: {ms:.2f} ms of kernel time per stacked step ({ms / k:.2f} ms per run), {kernels:.0f} kernels"
              f"{ratio}; warm-up {warm:.1f} s ({torch.cuda.get_device_name()}, {args.token_layout})", flush=True)


if __name__ == "__main__":
    main()
