"""The harness-owned training loop: one budget for every method, evaluated every epoch.

Adam (lr 1e-3), cosine annealing stepped once per epoch, batch 128 over a reshuffled training set,
a fixed number of epochs, no early stopping. Tensors stay on the device: a batch is an index into
resident tensors, and the loop reads nothing back to the host inside an epoch (the batches' padded
widths are read once at its start; the loss once at its end).

Execution switch ``precision``: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32". Under
autocast the model runs in bf16 where PyTorch deems it safe; logits are cast to fp32 before any loss or
metric, and the optimiser keeps fp32 weights.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import Split
from .errors import RunFailed
from .method import EpochView, Method
from .metrics import evaluate
from .protocol import Budget

EVAL_BATCH = 256  # fixed, so evaluation never depends on anything but the model


@dataclass
class TrainResult:
    curve: list[dict]  # one entry per epoch: train loss, lr, test metrics, method diagnostics
    final: dict  # the last epoch's test metrics: the run's headline
    timings: dict = field(default_factory=dict)  # seconds per phase


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PRECISIONS = ("auto", "bf16", "fp32")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward pass's autocast context: bf16 when ``dtype`` is set, a no-op otherwise."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, dtype: torch.dtype | None = None) -> torch.Tensor:
    model.eval()
    batches = list(torch.arange(len(split), device=split.labels.device).split(EVAL_BATCH))
    out = []
    for idx, widths in zip(batches, split.batch_widths(batches)):
        with _autocast(split.labels.device, dtype):
            out.append(model(split.batch(idx, widths)).logits.float())
    return torch.cat(out)


def train(
    method: Method,
    train_split: Split,
    noisy_labels: torch.Tensor,
    test_split: Split,
    budget: Budget,
    seed: int,
    task_weight: float = 1.0,
    empty_label: str = "zero",
    on_epoch: Callable[[dict], None] | None = None,
    precision: str = "auto",
) -> TrainResult:
    """Train ``method`` on ``noisy_labels`` (the clean ones never enter) and test every epoch."""
    device = noisy_labels.device
    dtype = autocast_dtype(precision, device)
    seed_everything(seed)
    model = method.build_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=budget.lr, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.cosine_t_max, eta_min=budget.cosine_eta_min)
    shuffle = torch.Generator().manual_seed(seed)
    n, targets = len(noisy_labels), noisy_labels.float()
    curve, timings = [], {"train": 0.0, "method_hooks": 0.0, "eval": 0.0}

    for epoch in range(1, budget.epochs + 1):
        t0 = _clock(device)
        lr = opt.param_groups[0]["lr"]
        for group in opt.param_groups:
            group["weight_decay"] = method.weight_decay(epoch)
        model.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        train_logits = torch.empty_like(targets) if method.wants_train_logits else None
        batches = list(order.split(budget.batch_size))
        for index, widths in zip(batches, train_split.batch_widths(batches)):
            with _autocast(device, dtype):
                out = model(train_split.batch(index, widths))
            loss = task_weight * (method.loss(out.logits.float(), targets[index], index, epoch) + out.aux.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(index)
            if train_logits is not None:
                train_logits[index] = out.logits.detach().float()
        sched.step()
        train_loss = float(loss_sum) / n  # the epoch's one host sync
        if not np.isfinite(train_loss):
            raise RunFailed(f"non-finite training loss ({train_loss}) in epoch {epoch}")
        t1 = _clock(device)

        diagnostics = method.end_epoch(EpochView(epoch, budget.epochs, targets, train_logits)) or {}
        t2 = _clock(device)

        metrics = evaluate(test_split.labels, predict(model, test_split, dtype), empty_label)
        t3 = _clock(device)
        timings["train"] += t1 - t0
        timings["method_hooks"] += t2 - t1
        timings["eval"] += t3 - t2
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, **metrics, "method": diagnostics}
        curve.append(row)
        if on_epoch:
            on_epoch(row)
    return TrainResult(curve=curve, final=dict(curve[-1]), timings=timings)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
