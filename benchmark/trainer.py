"""The protocol loop: what every method gets, on one screen.

Seeding, Adam (lr 1e-3) with cosine annealing stepped once per epoch, batch 128 over a training set
reshuffled every epoch, the loss assembled the same way for every method, the method's epoch hooks,
evaluation on the clean test labels after every epoch, a fixed number of epochs, no early stopping:
the record keeps the last epoch. How a step executes on the device (autocast, CUDA graphs,
``torch.compile`` and its fallback, length chunks, token layouts, stream clocks) is ``fastpath.py``:
it changes speed, never the protocol.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .bootstrap import map_interval
from .data import Split
from .errors import RunFailed
from .fastpath import FastPath
from .lifetime import STOP
from .method import EpochView, Method
from .metrics import evaluate
from .forensics import Forensics, math_attention
from .nonfinite import NonFiniteWatch
from .options import Execution
from .packing import pause, released
from .protocol import Budget
from .secondary import secondary


@dataclass(frozen=True)
class RunData:
    """What a run trains and is tested on. ``train`` still holds the clean training labels: the
    trainer never reads them (the method trains on ``noisy_labels``); the runner scores corrections
    against them."""

    train: Split
    noisy_labels: torch.Tensor  # [N, C] float, on the device of the splits
    test: Split
    task_weight: float = 1.0  # FlexCare's per-task loss weight (the task card's)
    empty_label: str = "zero"  # the AP of a label with no positive test sample


@dataclass
class TrainResult:
    curve: list[dict]  # one entry per epoch: train loss, lr, test metrics, method diagnostics
    final: dict  # the last epoch's test metrics: the run's headline
    timings: dict = field(default_factory=dict)  # seconds per phase
    compile_fallback: str | None = None  # why a model asked to compile trained eagerly instead
    summary: dict = field(default_factory=dict)  # last epoch only: "bootstrap" (its mAP's interval), "secondary"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(method: Method, data: RunData, budget: Budget, seed: int, execution: Execution = Execution(), *,
          on_epoch: Callable[[dict], None] | None = None,
          score_corrections: Callable[[dict], dict] | None = None,
          score_suspicion: Callable[[torch.Tensor], dict] | None = None) -> TrainResult:
    """Train ``method`` on ``data.noisy_labels`` (the clean ones never enter) and test every epoch.

    ``score_corrections`` and ``score_suspicion`` (built by the runner over the clean training labels,
    never handed to the method) score ``method.corrections()`` and ``method.suspicion()`` after each
    epoch into the curve row's "corrections" and "detection"."""
    device = data.noisy_labels.device
    seed_everything(seed)
    model = method.build_model().to(device)
    fast = FastPath(model, method, data.train, data.test, budget.batch_size,
                    execution.replace(device=str(device)).resolved())
    opt = fast.adam(budget.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.cosine_t_max, eta_min=budget.cosine_eta_min)
    shuffle = torch.Generator().manual_seed(seed)
    n, targets = len(data.noisy_labels), data.noisy_labels.float()
    curve, timings = [], {"train": 0.0, "method_hooks": 0.0, "eval": 0.0}
    train_logits = torch.empty_like(targets) if method.wants_train_logits else None
    watch = NonFiniteWatch(model, device)
    forensics = Forensics(execution.forensics, model, opt, shuffle, watch) if execution.forensics else None

    def forward_loss(index: torch.Tensor, widths: list[tuple], epoch: int, fast: FastPath = fast):
        """One batch's loss (with its graph) and logits."""
        out = fast.forward(index, widths)
        logits = out.logits.float()
        extra = {"output": out} if method.wants_output else {}
        return data.task_weight * (method.loss(logits, targets[index], index, epoch, **extra) + out.aux.float()), logits

    def step(index: torch.Tensor, widths: list[tuple], epoch: int, fast: FastPath = fast) -> torch.Tensor:
        """Forward, loss, backward and update of one batch; the loss, detached."""
        loss, logits = forward_loss(index, widths, epoch, fast)
        loss.backward()
        watch.check(loss)
        fast.update()
        if train_logits is not None:
            train_logits[index] = logits.detach()
        return loss.detach()

    def replay(forensics: Forensics, epoch: int) -> str:
        """The failing epoch again, eagerly (``forensics.py``); the same batches, rows and widths."""
        eager = {p: FastPath(model, method, data.train, data.test, budget.batch_size,
                             execution.replace(device=str(device), cuda_graphs="off", compile="off",
                                               **({"precision": p} if p else {})).resolved())
                 for p in ("", "fp32")}
        forensics.optimizer = eager[""].adam(budget.lr)  # the snapshot sets its state and the epoch's lr
        model.train()

        def train_step(rows, widths):
            eager[""].optimizer.zero_grad(set_to_none=True)
            return step(rows, widths, epoch, eager[""])

        def loss_in(fast_path, attention=None):
            def fn(rows, widths):
                with attention() if attention else nullcontext():
                    return forward_loss(rows, widths, epoch, fast_path)[0]
            return fn

        batches = lambda: fast.batches(torch.randperm(n, generator=shuffle).to(device).split(budget.batch_size))  # noqa: E731
        variants = {"as run": loss_in(eager[""]), "math attention": loss_in(eager[""], math_attention),
                    "fp32": loss_in(eager["fp32"]), "fp32, math attention": loss_in(eager["fp32"], math_attention)}
        return forensics.replay(epoch, batches, train_step, variants)

    for epoch in range(1, budget.epochs + 1):
        if STOP.is_set():
            raise KeyboardInterrupt
        t0 = fast.clock()
        lr = float(opt.param_groups[0]["lr"])
        decay = method.weight_decay(epoch)
        for group in opt.param_groups:
            group["weight_decay"] = decay
        model.train()
        if forensics is not None:
            forensics.snapshot()
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for index, widths in fast.batches(order.split(budget.batch_size)):
            if forensics is not None:
                forensics.keep()
            loss_sum += fast.run(step, index, widths, epoch, decay) * len(index)
            pause()
        sched.step()
        t1 = fast.clock()
        train_loss = float(loss_sum) / n  # the epoch's one host sync
        if not np.isfinite(train_loss):
            steps = -(-n // budget.batch_size)
            message = f"non-finite training loss ({train_loss}) in epoch {epoch}; {watch.describe(steps)}"
            if forensics is not None:
                message += "; " + replay(forensics, epoch)
            raise RunFailed(message)

        diagnostics = method.end_epoch(EpochView(epoch, budget.epochs, targets, train_logits)) or {}
        t2 = fast.clock()

        logits = fast.predict(epoch)
        with released():  # host-side scoring: packed runs go on meanwhile
            metrics = evaluate(data.test.labels, logits, data.empty_label)
        t3 = fast.clock()
        timings["train"] += t1 - t0
        if epoch == 1:  # warm-up steps, graph captures and compilation: what a steady step does not pay
            timings["train_first_epoch"] = t1 - t0
        timings["method_hooks"] += t2 - t1
        timings["eval"] += t3 - t2
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, **metrics, "method": diagnostics}
        corrections = method.corrections() if score_corrections is not None else None
        if corrections is not None:
            row["corrections"] = score_corrections(corrections)
        if score_suspicion is not None:
            t4 = fast.clock()
            suspicion = method.suspicion()
            if suspicion is not None:
                row["detection"] = score_suspicion(suspicion)
            timings["eval"] += fast.clock() - t4  # the hook and the harness's scoring of it, as the test metrics
        curve.append(row)
        if on_epoch:
            on_epoch(row)
    t0 = fast.clock()
    with released():  # once, on the last epoch's test scores: records keep no per-stay output to redo it later
        summary = {"bootstrap": map_interval(data.test.labels, logits, data.test.patient_id, data.empty_label),
                   "secondary": secondary(data.test, logits, data.empty_label)}
    timings["eval"] += fast.clock() - t0
    if fast.captures is not None:
        timings["graphs_captured"] = fast.captures
    return TrainResult(curve=curve, final=dict(curve[-1]), timings=timings, compile_fallback=fast.fallback,
                       summary=summary)
