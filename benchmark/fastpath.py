"""How the trainer's steps execute on a device: the same function as a plain eager loop, faster.

Nothing here changes what a run computes (the protocol is ``trainer.py``); each switch of
``options.Execution`` changes only how a step runs:

- ``precision``: bf16 autocast where PyTorch deems it safe; logits are cast to fp32 before any loss or
  metric, and the optimiser keeps fp32 weights.
- ``cuda_graphs``: on CUDA, full-batch steps of methods that declare ``capturable`` are replayed from
  CUDA graphs (``graphs.py``), after ``WARMUP_STEPS`` eager ones.
- ``length_chunks``: models that declare ``accepts_parts`` get each batch as this many length-sorted
  parts, each padded to its own longest stay (``Split.chunked``); same samples, a fraction of the padding.
- ``token_layout``: for models that have a ``token_layout`` (FlexCare): "packed" runs the position-wise
  layers over the real positions only (``backbones/packed.py``), "varlen" also attention
  (``backbones/varlen.py``; flash kernels on CUDA in bf16, the padded form elsewhere); same function,
  other dropout draws.
- ``compile``: ``torch.compile`` the model with symbolic shapes, so that one compilation serves every
  batch width (a full-track run has ~18 graph keys); its random draws come from the compiled kernels,
  so runs differ from eager ones by run-to-run noise. Only training compiles: evaluation runs the eager
  kernels (compiling the eval-mode forward cost a full-track run 42 s on an H100, ten times the
  evaluation it would speed up). On CUDA, Adam's update compiles too (``COMPILE_OPTIMIZER``). Where
  compilation fails (a compiler bug), the run trains eagerly and ``FastPath.fallback`` says why.

Tensors stay on the device: a batch is an index into resident tensors, and nothing is read back to the
host inside an epoch (the batches' padded widths are read once at its start).
"""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

import torch

from .backbones.flexcare import PACKED_LAYOUTS
from .data import Split
from .graphs import CapturedSteps, bucketed
from .method import Method
from .options import Execution
from .packing import pause, released

EVAL_BATCH = 256  # fixed, so evaluation never depends on anything but the model
WARMUP_STEPS = 3  # eager steps before the first capture: optimiser state and library handles exist
#: With ``compile="on"`` on CUDA, also compile Adam's update (foreach Adam, traced into a few kernels
#: over every weight) instead of running fused Adam. Fused Adam gives each 65,536-weight chunk one
#: thread block: about 90 blocks for FlexCare's 1.4 M weights, which leaves most of an H100 idle.
#: (CPU keeps eager Adam: its learning rate is a float there, and a compiled update would recompile
#: every epoch.)
COMPILE_OPTIMIZER = True
#: Model classes whose compilation failed in this process, with the error: later runs train them eagerly.
_COMPILE_FAILED: dict[type, str] = {}

Step = Callable[[torch.Tensor, list, int], torch.Tensor]  # (rows, widths, epoch) -> detached loss


class FastPath:
    """One run's execution of the trainer's steps: forward passes, optimiser updates, graph replays,
    the compile fallback, evaluation and stream clocks. ``execution`` must be resolved."""

    def __init__(self, model: torch.nn.Module, method: Method, train_split: Split, test_split: Split,
                 batch_size: int, execution: Execution):
        self.device = device = train_split.labels.device
        self.model, self.method, self.train_split, self.test_split = model, method, train_split, test_split
        self.batch_size = batch_size
        self.dtype = autocast_dtype(execution.precision, device)
        set_token_layout(model, execution.token_layout)
        self.packs = packs(model)
        compiling = execution.compile == "on"
        self.fallback = _COMPILE_FAILED.get(type(model)) if compiling else None
        # ``net`` trains; evaluation runs ``model``'s eager kernels.
        self.net = torch.compile(model, dynamic=True) if compiling and self.fallback is None else model
        # One part by default: eagerly parts multiply the kernel launches, and under graphs each part's
        # own bucketed widths multiply the keys (measured: 70 captures, the cap reached, slower than 1).
        self.chunks = parts(model, execution.length_chunks or 1)
        self.capturing = device.type == "cuda" and execution.cuda_graphs != "off" and method.capturable
        self.graphs: CapturedSteps | None = None
        self.test_graphs = eval_graphs(model, test_split, self.dtype) if self.capturing else None
        self.steps_done, self._graph_epoch = 0, 0
        self.optimizer: torch.optim.Adam | None = None

    def adam(self, lr: float) -> torch.optim.Adam:
        """Adam over the model's weights. On CUDA the learning rate is a device tensor that the
        scheduler fills in place, so a captured optimiser step reads the current epoch's rate."""
        on_cuda = self.device.type == "cuda"
        lr = torch.tensor(lr, device=self.device) if on_cuda else lr
        compiled = on_cuda and self.net is not self.model and COMPILE_OPTIMIZER
        self.optimizer, self.update = _optimizer(self.model, lr, on_cuda=on_cuda, compiled=compiled)
        return self.optimizer

    def forward(self, rows: torch.Tensor, widths: list[tuple]):
        """The training pass's ``ModelOutput`` for training rows ``rows``."""
        with autocast(self.device, self.dtype):
            return self.net(inputs(self.train_split, rows, widths, self.packs))

    def batches(self, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, list[tuple]]]:
        """Each batch's rows with its padded widths (bucketed under graphs: a few graphs per run;
        padding is masked out)."""
        out = self.train_split.chunked(list(batches), self.chunks)
        if self.capturing:
            out = [(rows, graph_widths(widths, self.train_split, self.packs)) for rows, widths in out]
        return out

    def run(self, step: Step, rows: torch.Tensor, widths: list[tuple], epoch: int, decay: float) -> torch.Tensor:
        """``step`` on one batch: replayed from a CUDA graph where one fits, else eagerly. Gradients
        are zeroed first (eagerly, or inside the capture)."""
        if self.capturing and self.graphs is None:
            self.graphs = CapturedSteps(lambda r, w: step(r, w, self._graph_epoch), self.batch_size, self.device)
        key = (widths, decay, self.method.capture_key(epoch))
        self.steps_done += 1
        if self.graphs is not None and self.steps_done > WARMUP_STEPS and self.graphs.can_replay(rows, key):
            self._graph_epoch = epoch  # read only while capturing: the key fixes what the graph depends on
            return self.graphs(rows, widths, key, before_capture=lambda: self.optimizer.zero_grad(set_to_none=True))
        self.optimizer.zero_grad(set_to_none=True)
        try:
            return step(rows, widths, epoch)
        except torch._dynamo.exc.TorchDynamoException as e:
            if self.net is self.model:
                raise
            self._train_eagerly(e)
            self.optimizer.zero_grad(set_to_none=True)
            return step(rows, widths, epoch)

    def _train_eagerly(self, error: Exception) -> None:
        # A compiler bug for this model or these shapes (seen on GPU: Inductor asserting on the smoke
        # track's shapes, MedFuse's LSTM under autocast): the run trains eagerly, its record says so,
        # and this process stops trying for the model.
        self.fallback = _COMPILE_FAILED[type(self.model)] = f"{type(error).__name__}: {str(error).strip()[:300]}"
        print(f"warning: compiling {type(self.model).__name__} failed ({self.fallback}); training eagerly",
              file=sys.stderr, flush=True)
        self.net, self.update = self.model, self.optimizer.step
        if isinstance(self.optimizer, _CompiledAdam):
            self.optimizer.eager = True

    def predict(self, epoch: int) -> torch.Tensor:
        """Test logits after ``epoch``; from the second epoch on, full batches replay captured graphs."""
        graphs = self.test_graphs if epoch > 1 else None
        return predict(self.model, self.test_split, dtype=self.dtype, chunks=self.chunks, graphs=graphs)

    @property
    def captures(self) -> int | None:
        """CUDA graphs captured so far (training and evaluation), None when not capturing."""
        if self.graphs is None:
            return None
        return self.graphs.captures + self.test_graphs.captures

    def clock(self) -> float:
        """Seconds, after this run's stream has finished its work (runs packed as threads time
        themselves apart)."""
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            with released():
                stream.synchronize()
        return time.perf_counter()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for "bf16" (and "auto" on CUDA), None (fp32) otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward pass's autocast context: bf16 when ``dtype`` is set, a no-op otherwise."""
    # No weight-cast cache: each weight is cast once per forward anyway, and a cache must not outlive
    # a CUDA-graph capture.
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False)


def set_token_layout(model: torch.nn.Module, layout: str) -> None:
    for module in model.modules():
        if hasattr(module, "token_layout"):
            module.token_layout = layout


def packs(model: torch.nn.Module) -> bool:
    return any(getattr(module, "token_layout", None) in PACKED_LAYOUTS for module in model.modules())


def parts(model: torch.nn.Module, chunks: int) -> int:
    return chunks if getattr(model, "accepts_parts", False) else 1


def graph_widths(widths: list[tuple], split: Split, packs: bool) -> tuple:
    """A batch's widths as a graph key (``bucketed``). The count of real positions is part of the key
    only for a model that packs them; every note is then padded to the split's longest (a few more
    padded positions, for attention only) so that the key does not also vary with the note width."""
    if packs:
        widths = [(w[0], split.max_note, *w[2:]) for w in widths]
    else:
        widths = [w[:2] for w in widths]
    return bucketed(widths, split.max_ehr, split.max_note)


def inputs(split: Split, rows: torch.Tensor, widths: list[tuple[int, int]], packed: bool = False):
    """The model's input for ``rows``: one padded batch, or a list of parts as ``Split.chunked`` cut them.
    For a model that packs (``packed``) the notes come as their real tokens only (``Batch.note_rows``)."""
    if len(widths) == 1:
        return split.batch(rows, widths[0], note_rows=packed)
    return [split.batch(part, w, note_rows=packed) for part, w in zip(rows.tensor_split(len(widths)), widths)]


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, *, dtype: torch.dtype | None = None, chunks: int = 1,
            graphs: CapturedSteps | None = None) -> torch.Tensor:
    """Logits of every row of ``split`` in row order, in fixed batches of ``EVAL_BATCH`` rows.
    With ``graphs`` (built by ``eval_graphs``), full batches replay a captured forward pass."""
    model.eval()
    device = split.labels.device
    batches = list(torch.arange(len(split), device=device).split(EVAL_BATCH))
    out = torch.empty(len(split), split.labels.shape[1], device=device)
    packed = packs(model)
    for rows, widths in split.chunked(batches, parts(model, chunks)):
        if graphs is not None:
            widths = graph_widths(widths, split, packed)
            if graphs.can_replay(rows, widths):
                out[rows] = graphs(rows, widths, widths)
                continue
        with autocast(device, dtype):
            out[rows] = model(inputs(split, rows, widths, packed)).logits.float()
        pause()
    return out


def eval_graphs(model: torch.nn.Module, split: Split, dtype: torch.dtype | None) -> CapturedSteps:
    packed = packs(model)

    def forward(rows, widths):
        with autocast(split.labels.device, dtype):
            return model(inputs(split, rows, widths, packed)).logits.float()

    return CapturedSteps(forward, EVAL_BATCH, split.labels.device)


def _optimizer(model: torch.nn.Module, lr, *, on_cuda: bool, compiled: bool):
    """Adam over ``model``'s weights and the function that applies one update: fused Adam's kernel
    on CUDA, or (``compiled``) PyTorch's functional Adam compiled once per process (``_CompiledAdam``;
    foreach, so its kernels span all weights on CUDA). Same update rule either way; ``capturable`` on
    CUDA, so a CUDA graph can replay it."""
    kind = _CompiledAdam if compiled else torch.optim.Adam
    opt = kind(model.parameters(), lr=lr, fused=on_cuda and not compiled, foreach=(compiled and on_cuda) or None,
               capturable=on_cuda)
    # Looked up at each call: the LR scheduler built after this wraps ``opt.step`` to learn that the
    # optimiser stepped before it; a bound method taken now would bypass the wrapper (and PyTorch
    # would warn, wrongly, that the schedule steps first).
    return opt, lambda: opt.step()


class _CompiledAdam(torch.optim.Adam):
    """Adam whose update runs PyTorch's own functional Adam compiled once per process.

    Compiling ``opt.step`` itself made Dynamo guard on the optimiser object: every run of a grid
    recompiled it, and from the ninth run on Dynamo's recompile limit left the update eager (2.5 s a
    run slower at ``mimic4-phe``'s size, H200). Here the state is gathered eagerly, as ``Adam.step``
    does, and the compiled function receives it as arguments: a new run with the same shapes reuses it.
    ``eager`` (set when compiling fails) steps as ``torch.optim.Adam`` does."""

    eager = False

    @torch.no_grad()
    def step(self, closure=None):
        if self.eager:
            return super().step(closure)
        assert closure is None, "the trainer never passes a closure"
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
            has_complex = self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
            beta1, beta2 = group["betas"]
            _compiled_functional_adam()(
                params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad=group["amsgrad"],
                has_complex=has_complex, beta1=beta1, beta2=beta2, lr=group["lr"],
                weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                foreach=group["foreach"], capturable=group["capturable"], differentiable=group["differentiable"],
                fused=group["fused"], decoupled_weight_decay=group["decoupled_weight_decay"])


@functools.cache
def _compiled_functional_adam():
    from torch.optim.adam import adam  # PyTorch's functional Adam, the one ``Adam.step`` calls

    return torch.compile(adam, fullgraph=False)
