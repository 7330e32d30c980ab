"""The harness-owned training loop: one budget for every method, evaluated every epoch.

Adam (lr 1e-3), cosine annealing stepped once per epoch, batch 128 over a reshuffled training set,
a fixed number of epochs, no early stopping. Tensors stay on the device: a batch is an index into
resident tensors, and the loop reads nothing back to the host inside an epoch (the batches' padded
widths are read once at its start; the loss once at its end).

Execution switch ``precision``: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32". Under
autocast the model runs in bf16 where PyTorch deems it safe; logits are cast to fp32 before any loss or
metric, and the optimiser keeps fp32 weights.
Execution switch ``cuda_graphs``: "auto" (on CUDA, full-batch steps of methods that declare
``capturable`` are replayed from CUDA graphs, see ``graphs.py``) or "off" (every step eager).
Execution switch ``length_chunks``: models that declare ``accepts_parts`` get each batch as this many
length-sorted parts, each padded to its own longest stay (``Split.chunked``); same samples, same
function, a fraction of the padding. Default 1 (see ``train``).
Execution switch ``token_layout``: "auto" (varlen on CUDA, padded on CPU), "padded", "packed" or
"varlen", for models that have a ``token_layout`` (FlexCare): "packed" runs the position-wise layers
over the real positions only (``backbones/packed.py``), "varlen" also attention (``backbones/varlen.py``;
flash kernels on CUDA in bf16, the padded form elsewhere); same function, different dropout draws. CPU keeps
"padded" by default so that CPU results stay comparable with those recorded before the switch.
Execution switch ``compile_model``: "off" (default here; the CLI's "auto" is resolved per grid by
``runner.resolve_compile``) or "on": ``torch.compile`` the model with symbolic
shapes, so that one compilation serves every batch width (a full-track run has ~18 graph keys); its
random draws (dropout, gating noise) come from the compiled kernels, so runs differ from eager ones
by run-to-run noise. A shape that would compile anew while a CUDA graph is captured runs eagerly
instead (``graphs.py``). Only training compiles: evaluation runs the eager kernels. On CUDA, Adam's
update compiles too (``COMPILE_OPTIMIZER``). Where compilation fails (a compiler bug), the run trains
eagerly and ``TrainResult.compile_fallback`` says why.
"""
from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import Split
from .errors import RunFailed
from .backbones.flexcare import PACKED_LAYOUTS
from .graphs import CapturedSteps, bucketed
from .method import EpochView, Method
from .metrics import evaluate
from .packing import pause, released
from .protocol import Budget

EVAL_BATCH = 256  # fixed, so evaluation never depends on anything but the model

#: Set by the runner on Ctrl-C: runs packed as threads stop at their next epoch (KeyboardInterrupt,
#: so no record is written for them and a rerun does them again).
STOP = threading.Event()


@dataclass
class TrainResult:
    curve: list[dict]  # one entry per epoch: train loss, lr, test metrics, method diagnostics
    final: dict  # the last epoch's test metrics: the run's headline
    timings: dict = field(default_factory=dict)  # seconds per phase
    compile_fallback: str | None = None  # why a model asked to compile trained eagerly instead


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PRECISIONS = ("auto", "bf16", "fp32")
CUDA_GRAPHS = ("auto", "off")
TOKEN_LAYOUTS = ("auto", "padded", "packed", "varlen")
COMPILE = ("off", "on")
#: Model classes whose compilation failed in this process, with the error: later runs train them eagerly.
_COMPILE_FAILED: dict[type, str] = {}
WARMUP_STEPS = 3  # eager steps before the first capture: optimiser state and library handles exist
#: With ``compile_model="on"`` on CUDA, also compile Adam's update (foreach Adam, traced into a few
#: kernels over every weight) instead of running fused Adam. Fused Adam gives each 65,536-weight chunk
#: one thread block: about 90 blocks for FlexCare's 1.4 M weights, which leaves most of an H100 idle.
#: (CPU keeps eager Adam: its learning rate is a float there, and a compiled update would recompile
#: every epoch.)
COMPILE_OPTIMIZER = True


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def resolve_token_layout(token_layout: str, device: torch.device) -> str:
    if token_layout not in TOKEN_LAYOUTS:
        raise ValueError(f"token_layout must be one of {TOKEN_LAYOUTS}, got {token_layout!r}")
    if token_layout == "auto":
        return "varlen" if device.type == "cuda" else "padded"
    return token_layout


def _set_token_layout(model: torch.nn.Module, layout: str) -> None:
    for module in model.modules():
        if hasattr(module, "token_layout"):
            module.token_layout = layout


def _packs(model: torch.nn.Module) -> bool:
    return any(getattr(module, "token_layout", None) in PACKED_LAYOUTS for module in model.modules())


def graph_widths(widths: list[tuple], split: Split, packs: bool) -> tuple:
    """A batch's widths as a graph key (``bucketed``). The count of real positions is part of the key
    only for a model that packs them; every note is then padded to the split's longest (a few more
    padded positions, for attention only) so that the key does not also vary with the note width."""
    if packs:
        widths = [(w[0], split.max_note, *w[2:]) for w in widths]
    else:
        widths = [w[:2] for w in widths]
    return bucketed(widths, split.max_ehr, split.max_note)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward pass's autocast context: bf16 when ``dtype`` is set, a no-op otherwise."""
    # No weight-cast cache: each weight is cast once per forward anyway, and a cache must not outlive
    # a CUDA-graph capture.
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False)


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, dtype: torch.dtype | None = None, chunks: int = 1,
            graphs: CapturedSteps | None = None) -> torch.Tensor:
    """Logits of every row of ``split`` in row order, in fixed batches of ``EVAL_BATCH`` rows.
    With ``graphs`` (built by ``eval_graphs``), full batches replay a captured forward pass."""
    model.eval()
    device = split.labels.device
    batches = list(torch.arange(len(split), device=device).split(EVAL_BATCH))
    out = torch.empty(len(split), split.labels.shape[1], device=device)
    packs = _packs(model)
    for rows, widths in split.chunked(batches, _parts(model, chunks)):
        if graphs is not None:
            widths = graph_widths(widths, split, packs)
            if graphs.can_replay(rows, widths):
                out[rows] = graphs(rows, widths, widths)
                continue
        with _autocast(device, dtype):
            out[rows] = model(inputs(split, rows, widths)).logits.float()
        pause()
    return out


def eval_graphs(model: torch.nn.Module, split: Split, dtype: torch.dtype | None) -> CapturedSteps:
    def forward(rows, widths):
        with _autocast(split.labels.device, dtype):
            return model(inputs(split, rows, widths)).logits.float()

    return CapturedSteps(forward, EVAL_BATCH, split.labels.device)


def inputs(split: Split, rows: torch.Tensor, widths: list[tuple[int, int]]):
    """The model's input for ``rows``: one padded batch, or a list of parts as ``Split.chunked`` cut them."""
    if len(widths) == 1:
        return split.batch(rows, widths[0])
    return [split.batch(part, w) for part, w in zip(rows.tensor_split(len(widths)), widths)]


def _parts(model: torch.nn.Module, chunks: int) -> int:
    return chunks if getattr(model, "accepts_parts", False) else 1


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
    cuda_graphs: str = "auto",
    length_chunks: int | None = None,
    token_layout: str = "auto",
    compile_model: str = "off",
    score_corrections: Callable[[dict], dict] | None = None,
) -> TrainResult:
    """Train ``method`` on ``noisy_labels`` (the clean ones never enter) and test every epoch.

    ``score_corrections`` (built by the runner over the clean training labels, never handed to the
    method) scores ``method.corrections()`` after each epoch into the curve row's "corrections"."""
    device = noisy_labels.device
    dtype = autocast_dtype(precision, device)
    if cuda_graphs not in CUDA_GRAPHS:
        raise ValueError(f"cuda_graphs must be one of {CUDA_GRAPHS}, got {cuda_graphs!r}")
    if compile_model not in COMPILE:
        raise ValueError(f"compile_model must be one of {COMPILE}, got {compile_model!r}")
    seed_everything(seed)
    model = method.build_model().to(device)
    _set_token_layout(model, resolve_token_layout(token_layout, device))
    packs = _packs(model)
    # ``net`` trains; evaluation runs ``model``'s eager kernels: compiling the eval-mode forward as well
    # cost a full-track run 42 s on an H100, ten times the evaluation it would speed up.
    fallback = _COMPILE_FAILED.get(type(model)) if compile_model == "on" else None
    net = torch.compile(model, dynamic=True) if compile_model == "on" and fallback is None else model
    on_cuda = device.type == "cuda"
    # On CUDA the learning rate is a device tensor that the scheduler fills in place, so a captured
    # optimiser step reads the current epoch's rate.
    lr = torch.tensor(budget.lr, device=device) if on_cuda else budget.lr
    opt, update = _optimizer(model, lr, on_cuda, compiled=on_cuda and net is not model and COMPILE_OPTIMIZER)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.cosine_t_max, eta_min=budget.cosine_eta_min)
    shuffle = torch.Generator().manual_seed(seed)
    n, targets = len(noisy_labels), noisy_labels.float()
    curve, timings = [], {"train": 0.0, "method_hooks": 0.0, "eval": 0.0}
    train_logits = torch.empty_like(targets) if method.wants_train_logits else None

    def step(index: torch.Tensor, widths: list[tuple[int, int]], epoch: int) -> torch.Tensor:
        """Forward, loss, backward and update of one batch; the loss, detached. Gradients are
        overwritten, not accumulated: callers zero them (eagerly) or captured that (graphs)."""
        with _autocast(device, dtype):
            out = net(inputs(train_split, index, widths))
        logits = out.logits.float()
        extra = {"output": out} if method.wants_output else {}
        loss = task_weight * (method.loss(logits, targets[index], index, epoch, **extra) + out.aux.float())
        loss.backward()
        update()
        if train_logits is not None:
            train_logits[index] = logits.detach()
        return loss.detach()

    graphs = test_graphs = None
    if on_cuda and cuda_graphs == "auto" and method.capturable:
        graphs = CapturedSteps(lambda index, widths: step(index, widths, graph_epoch), budget.batch_size, device)
        test_graphs = eval_graphs(model, test_split, dtype)
    # One part by default: eagerly parts multiply the kernel launches, and under graphs each part's
    # own bucketed widths multiply the keys (measured: 70 captures, the cap reached, slower than 1).
    chunks = _parts(model, length_chunks or 1)
    steps_done, graph_epoch = 0, 0

    for epoch in range(1, budget.epochs + 1):
        if STOP.is_set():
            raise KeyboardInterrupt
        t0 = _clock(device)
        lr = float(opt.param_groups[0]["lr"])
        decay = method.weight_decay(epoch)
        for group in opt.param_groups:
            group["weight_decay"] = decay
        model.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for index, widths in train_split.chunked(list(order.split(budget.batch_size)), chunks):
            if graphs is not None:  # bucketed widths: a few graphs per run; padding is masked out
                widths = graph_widths(widths, train_split, packs)
            key = (widths, decay, method.capture_key(epoch))
            if graphs is not None and steps_done >= WARMUP_STEPS and graphs.can_replay(index, key):
                graph_epoch = epoch  # read only while capturing: the key fixes what the graph depends on
                loss = graphs(index, widths, key, before_capture=lambda: opt.zero_grad(set_to_none=True))
            else:
                opt.zero_grad(set_to_none=True)
                try:
                    loss = step(index, widths, epoch)
                except torch._dynamo.exc.TorchDynamoException as e:
                    if net is model:
                        raise
                    # A compiler bug for this model or these shapes (seen on GPU: Inductor asserting on
                    # the smoke track's shapes, MedFuse's LSTM under autocast): the run trains
                    # eagerly, its record says so, and this process stops trying for the model.
                    fallback = _COMPILE_FAILED[type(model)] = f"{type(e).__name__}: {str(e).strip()[:300]}"
                    print(f"warning: compiling {type(model).__name__} failed ({fallback}); training eagerly",
                          file=sys.stderr, flush=True)
                    net, update = model, opt.step
                    opt.zero_grad(set_to_none=True)
                    loss = step(index, widths, epoch)
            loss_sum += loss * len(index)
            steps_done += 1
            pause()
        sched.step()
        t1 = _clock(device)
        train_loss = float(loss_sum) / n  # the epoch's one host sync
        if not np.isfinite(train_loss):
            raise RunFailed(f"non-finite training loss ({train_loss}) in epoch {epoch}")

        diagnostics = method.end_epoch(EpochView(epoch, budget.epochs, targets, train_logits)) or {}
        t2 = _clock(device)

        logits = predict(model, test_split, dtype, chunks, test_graphs if epoch > 1 else None)
        with released():  # host-side scoring: packed runs go on meanwhile
            metrics = evaluate(test_split.labels, logits, empty_label)
        t3 = _clock(device)
        timings["train"] += t1 - t0
        if epoch == 1:  # warm-up steps, graph captures and compilation: what a steady step does not pay
            timings["train_first_epoch"] = t1 - t0
        timings["method_hooks"] += t2 - t1
        timings["eval"] += t3 - t2
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, **metrics, "method": diagnostics}
        corrections = method.corrections() if score_corrections is not None else None
        if corrections is not None:
            row["corrections"] = score_corrections(corrections)
        curve.append(row)
        if on_epoch:
            on_epoch(row)
    if graphs is not None:
        timings["graphs_captured"] = graphs.captures + test_graphs.captures
    return TrainResult(curve=curve, final=dict(curve[-1]), timings=timings, compile_fallback=fallback)


def _optimizer(model: torch.nn.Module, lr, on_cuda: bool, compiled: bool):
    """Adam over ``model``'s weights and the function that applies one update: fused Adam's kernel
    on CUDA, or (``compiled``) foreach Adam compiled into kernels spanning all weights. Same update
    rule either way; ``capturable`` on CUDA, so a CUDA graph can replay it."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=on_cuda and not compiled, foreach=compiled or None,
                           capturable=on_cuda)
    if not compiled:
        return opt, opt.step

    @torch.compile(fullgraph=False)
    def update():
        opt.step()

    return opt, update


def _clock(device: torch.device) -> float:
    if device.type == "cuda":  # this run's stream only: runs packed as threads time themselves apart
        stream = torch.cuda.current_stream(device)
        with released():
            stream.synchronize()
    return time.perf_counter()
