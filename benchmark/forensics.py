"""Why a run went non-finite: its failing epoch replayed eagerly, and the first bad step taken apart.

Opt-in (``--forensics DIR``); it changes nothing in a run that stays finite but one device copy of the
weights and the optimiser state per epoch. ``NonFiniteWatch`` says at which step and in which half
(forward or backward) a run broke; it cannot say which operation, because by then the step ran from a
CUDA graph or a compiled kernel. Here, when the epoch's loss is non-finite:

1. the weights, the optimiser state and the shuffle generator go back to the epoch's start;
2. the epoch's batches (the same rows and padded widths) are replayed eagerly, checking the loss and
   every weight after each step, to the first step that makes one non-finite (the replay draws other
   dropout masks than the graph replays did, so it may break at another step, or not at all: the
   report says which);
3. from the weights before that step, the step's forward and backward run again: under autograd's
   anomaly mode (which names the first operation whose backward returned NaN, and where its forward
   was called), with each module's largest output recorded, and in variants that isolate the cause
   (fp32 instead of autocast, the math attention kernel instead of the fused ones);
4. ``DIR/report.json`` keeps all of that, ``DIR/weights.pt`` the weights before the step and
   ``DIR/batch.pt`` its rows and widths, so the step can be rerun offline on the same task.
"""
from __future__ import annotations

import copy
import json
import traceback
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

LossFn = Callable[[torch.Tensor, list], torch.Tensor]  # (rows, widths) -> the step's loss, with graph


DRAWS = 16  # dropout draws of the first bad step, when the eager replay did not break


class Forensics:
    def __init__(self, folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 shuffle: torch.Generator, watch):
        self.folder, self.model, self.optimizer, self.shuffle = Path(folder), model, optimizer, shuffle
        self.watch = watch
        self._saved: dict | None = None
        # The weights before the step about to run, until the watch has seen a bad step: then they are
        # the weights the run's own first bad step started from (device copies, no host read).
        self._params = [p for p in model.parameters()]
        self._before = [p.detach().clone() for p in self._params]

    def keep(self) -> None:
        """Before each step, outside any capture."""
        clean = (self.watch.first_grad < 0) & (self.watch.first_loss < 0)
        for kept, p in zip(self._before, self._params):
            kept.copy_(torch.where(clean, p.detach(), kept))

    def snapshot(self) -> None:
        """At an epoch's start, before its order is drawn (device copies; no host read)."""
        self._saved = {"weights": _clone(self.model.state_dict()),
                       "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                       "shuffle": self.shuffle.get_state()}

    def replay(self, epoch: int, batches: Callable[[], list], train_step: Callable[[torch.Tensor, list], torch.Tensor],
               variants: dict[str, LossFn]) -> str:
        """Replay ``epoch`` (``batches()`` draws its batches from the restored generator; ``train_step``
        is an eager step with its update; ``variants`` maps a name to a loss function, the first one
        being the run's own execution). Writes the report; returns its summary for the failure message."""
        self._restore()
        report: dict = {"epoch": epoch, "replayed": "eagerly, from the epoch's start"}
        for k, (rows, widths) in enumerate(batches(), 1):
            before = _clone(self.model.state_dict())
            loss = train_step(rows, widths)
            if torch.isfinite(loss).item() and _finite(self.model):
                continue
            report.update(step=k, loss=float(loss), rows=len(rows), widths=[list(w) for w in widths])
            self.model.load_state_dict(before)
            report["variants"] = {name: _diagnose(self.model, fn, rows, widths) for name, fn in variants.items()}
            report["anomaly"] = _anomaly(self.model, next(iter(variants.values())), rows, widths)
            report["largest_outputs"] = _largest_outputs(self.model, next(iter(variants.values())), rows, widths)
            self._write(report, before, rows, widths)
            return _summary(report, self.folder)
        report["step"] = None
        return self._run_step(epoch, batches, variants, report)

    def _run_step(self, epoch: int, batches, variants: dict[str, LossFn], report: dict) -> str:
        """The eager replay stayed finite: the run's own first bad step, from the weights it started
        from, under ``DRAWS`` dropout draws per variant (the run's draws cannot be replayed)."""
        first = [int(x) for x in (self.watch.first_grad, self.watch.first_loss) if int(x) > 0]
        self.shuffle.set_state(self._saved["shuffle"])
        epoch_batches = batches()
        batch = (min(first) - 1) % len(epoch_batches) if first else None
        if batch is None:
            self._write(report, None, None, None)
            return f"the eager replay of epoch {epoch} stayed finite; {self.folder / 'report.json'}"
        rows, widths = epoch_batches[batch]
        with torch.no_grad():
            for p, kept in zip(self._params, self._before):
                p.copy_(kept)
        weights = _clone(self.model.state_dict())
        draws = {}
        for name, fn in variants.items():
            runs = []
            for draw in range(DRAWS):
                torch.manual_seed(draw)
                runs.append(_diagnose(self.model, fn, rows, widths))
            broke = [bool(r.get("nonfinite_gradients") or not r.get("loss_finite", True)) for r in runs]
            draws[name] = {"nonfinite_draws": sum(broke), "draws": DRAWS, "draws_nonfinite": broke,
                           "first_nonfinite": next((r for r, b in zip(runs, broke) if b), None)}
        report["run_step"] = {"batch": batch + 1, "rows": len(rows), "widths": [list(w) for w in widths], "variants": draws}
        failing = next((d for d in range(DRAWS) if draws["as run"]["draws_nonfinite"][d]), None) if "as run" in draws else None
        if failing is not None:  # the draw that broke, again, op by op
            fn = variants["as run"]
            torch.manual_seed(failing)
            report["run_step"]["anomaly"] = _anomaly(self.model, fn, rows, widths)
            torch.manual_seed(failing)
            report["run_step"]["largest_outputs"] = _largest_outputs(self.model, fn, rows, widths)
        self._write(report, weights, rows, widths)
        counts = ", ".join(f"{n}: {d['nonfinite_draws']}/{DRAWS}" for n, d in draws.items())
        return (f"the eager replay of epoch {epoch} stayed finite; the run's own first bad step (batch {batch + 1}) "
                f"from its weights, eagerly, non-finite gradients in dropout draws {counts}; {self.folder / 'report.json'}")

    def _restore(self) -> None:
        saved = self._saved
        self.model.load_state_dict(saved["weights"])
        self.optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))
        self.shuffle.set_state(saved["shuffle"])

    def _write(self, report: dict, weights: dict | None, rows, widths) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        if weights is not None:
            torch.save({k: v.cpu() for k, v in weights.items()}, self.folder / "weights.pt")
            torch.save({"rows": rows.cpu(), "widths": widths}, self.folder / "batch.pt")


def _clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def _finite(model: torch.nn.Module) -> bool:
    tensors = [p.detach() for p in model.parameters()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def _diagnose(model: torch.nn.Module, loss_fn: LossFn, rows, widths) -> dict:
    """The step's forward and backward from the current weights: is the loss finite, which gradients are not."""
    model.zero_grad(set_to_none=True)
    try:
        loss = loss_fn(rows, widths)
        loss.backward()
    except RuntimeError as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    model.zero_grad(set_to_none=True)
    loss = loss.detach()
    return {"loss": float(loss), "loss_finite": bool(torch.isfinite(loss)), "nonfinite_gradients": len(bad),
            "nonfinite_gradient_tensors": bad[:20]}


def _anomaly(model: torch.nn.Module, loss_fn: LossFn, rows, widths) -> dict:
    """Autograd's anomaly mode: the first backward operation that returned NaN, and its forward call site."""
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings(record=True) as caught, torch.autograd.detect_anomaly(check_nan=True):
        warnings.simplefilter("always")
        try:
            loss_fn(rows, widths).backward()
            found = {"error": None}
        except RuntimeError as e:
            found = {"error": str(e).splitlines()[0][:500].rstrip(".")}
    model.zero_grad(set_to_none=True)
    forward = [str(w.message) for w in caught if "forward call" in str(w.message)]
    found["forward_call"] = _project_frames(forward[0]) if forward else None
    return found


def _project_frames(trace: str) -> list[str]:
    """The frames of a traceback that are this project's code (methods and harness), innermost last."""
    lines = trace.splitlines()
    keep = [f"{a.strip()} | {b.strip()}" for a, b in zip(lines, lines[1:])
            if a.strip().startswith("File") and ("methods" in a or "benchmark" in a)]
    return keep[-8:] or lines[-8:]


def _largest_outputs(model: torch.nn.Module, loss_fn: LossFn, rows, widths, top: int = 12) -> list[dict]:
    """Each module's largest |output| (and its non-finite count) in the step's forward, largest first."""
    seen: dict[str, dict] = {}

    def hook(name):
        def record(_module, _inputs, output):
            tensors = [t for t in (output if isinstance(output, (tuple, list)) else [output])
                       if isinstance(t, torch.Tensor) and t.is_floating_point()]
            if tensors:
                t = torch.cat([x.detach().float().flatten() for x in tensors])
                finite = torch.isfinite(t)
                seen[name] = {"module": name, "max_abs": float(t[finite].abs().max()) if finite.any() else None,
                              "nonfinite": int((~finite).sum()), "dtype": str(tensors[0].dtype)}
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            loss_fn(rows, widths)
    except RuntimeError:
        traceback.print_exc()
    finally:
        for h in handles:
            h.remove()
    return sorted(seen.values(), key=lambda r: (-r["nonfinite"], -(r["max_abs"] or 0)))[:top]


def _summary(report: dict, folder: Path) -> str:
    parts = [f"replayed eagerly, step {report['step']} of epoch {report['epoch']} went non-finite"]
    anomaly = report["anomaly"].get("error")
    if anomaly:
        parts.append(f"anomaly mode: {anomaly}")
    for name, v in report["variants"].items():
        if "error" in v:
            parts.append(f"{name}: {v['error']}")
        else:
            state = "finite" if v["loss_finite"] and not v["nonfinite_gradients"] else (
                f"loss {'finite' if v['loss_finite'] else 'non-finite'}, {v['nonfinite_gradients']} gradients non-finite")
            parts.append(f"{name}: {state}")
    return "; ".join(parts) + f"; {folder / 'report.json'}"


def math_attention():
    """The math kernel for scaled_dot_product_attention (no fused or cuDNN kernel), where torch has the switch."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return nullcontext()
    return sdpa_kernel(SDPBackend.MATH)
