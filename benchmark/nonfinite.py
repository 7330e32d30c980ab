"""Where a run first went non-finite: the step, and whether the loss or only the gradient was.

The trainer reads the loss on the host once per epoch, so a failed run used to say only the epoch. By
then every weight is NaN, whatever broke first. ``NonFiniteWatch.check`` runs between backward and
the optimiser step. It uses device tensors only, so no host read per step and no break in a CUDA-graph
capture. It keeps the first step whose loss was non-finite, and the first step whose gradient was,
with the weight tensors whose gradient was not finite there. The two cases point to different causes:

- a finite loss with a non-finite gradient: a backward kernel or a formula's derivative broke on
  finite values (e.g. a 0/0 a ``torch.where`` discards in the forward, an attention backward that
  overflows);
- a non-finite loss at the first bad step: the forward overflowed on finite weights.
"""
from __future__ import annotations

from collections import Counter

import torch

NAMED = 5  # weight tensors named in the message; the count covers the rest
FINITE_NAMED = 24  # the finite ones are all named when there are at most this many


class NonFiniteWatch:
    def __init__(self, model: torch.nn.Module, device: torch.device):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.steps = torch.zeros((), dtype=torch.long, device=device)
        self.first_loss = torch.full((), -1, dtype=torch.long, device=device)
        self.first_grad = torch.full((), -1, dtype=torch.long, device=device)
        self.loss_at_grad = torch.zeros((), device=device)
        self.bad = torch.zeros(len(self.params), dtype=torch.bool, device=device)
        self._zero = torch.zeros((), device=device)

    def check(self, loss: torch.Tensor) -> None:
        """After ``loss.backward()``, before the update. Device work only."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norms = iter(torch._foreach_norm(grads)) if grads else iter(())
        per_param = [next(norms).float() if p.grad is not None else self._zero for p in self.params]
        bad = ~torch.isfinite(torch.stack(per_param)) if per_param else self.bad
        self.steps.add_(1)
        loss_bad = ~torch.isfinite(loss.detach().float())
        self.first_loss.copy_(torch.where((self.first_loss < 0) & loss_bad, self.steps, self.first_loss))
        new = (self.first_grad < 0) & bad.any()
        self.first_grad.copy_(torch.where(new, self.steps, self.first_grad))
        self.loss_at_grad.copy_(torch.where(new, loss.detach().float(), self.loss_at_grad))
        self.bad.copy_(torch.where(new, bad, self.bad))

    def describe(self, steps_per_epoch: int) -> str:
        """What went non-finite first, for the failure message (one host read; after the run failed)."""
        first_loss, first_grad = int(self.first_loss), int(self.first_grad)
        where = lambda s: f"step {s:,} (epoch {(s - 1) // steps_per_epoch + 1}, batch {(s - 1) % steps_per_epoch + 1})"  # noqa: E731
        if first_grad < 0 and first_loss < 0:
            return "every step's loss and gradient were finite (the epoch's sum overflowed)"
        if first_grad < 0 or (0 < first_loss <= first_grad):
            return f"first at {where(first_loss)}, in the forward: the loss was non-finite, the gradients before it finite"
        names = [n for n, b in zip(self.names, self.bad.tolist()) if b]
        shown = ", ".join(names[:NAMED]) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")
        # The tensors whose gradient stayed finite lie between the break and the loss: they locate it.
        finite = [n for n, b in zip(self.names, self.bad.tolist()) if not b]
        after = f"; finite: {', '.join(finite)}" if 0 < len(finite) <= FINITE_NAMED else _finite_modules(self.names, finite)
        return (f"first at {where(first_grad)}, in the backward: the loss was finite ({float(self.loss_at_grad):.4g}), "
                f"the gradient of {len(names)} of {len(self.names)} weight tensors was not ({shown}){after}")


def _module(name: str) -> str:
    """The module a weight tensor belongs to, to the depth that tells modules apart: the first
    component, and the list index after it (``blocks.1.qkv.weight`` -> ``blocks.1``)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def _finite_modules(names: list[str], finite: list[str]) -> str:
    """Too many finite tensors to name: the modules whose gradient stayed finite, wholly or in part
    (with the count), so that a long model's message still locates the break."""
    total, kept = Counter(map(_module, names)), Counter(map(_module, finite))
    if not kept:
        return ""
    shown = [m if kept[m] == total[m] else f"{m} ({kept[m]} of {total[m]})" for m in kept]
    return f"; finite in: {', '.join(shown)}"
