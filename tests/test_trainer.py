import dataclasses

import pytest
import torch
import torch.nn.functional as F

import benchmark.trainer as trainer_module
from benchmark.method import EpochView, Method
from benchmark.protocol import SMOKE, Budget
from benchmark.options import Execution
from benchmark.trainer import RunData, train

from helpers import compile_failing_with, noisy_labels, smoke_task


class Spy(Method):
    """Records what the harness hands to a method."""

    wants_train_logits = True

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.seen, self.views, self.decay_epochs = [], [], []

    def loss(self, logits, targets, index, epoch):
        self.seen.append((index.clone(), targets.clone()))
        return F.binary_cross_entropy_with_logits(logits, targets)

    def weight_decay(self, epoch):
        return 1e-5 if epoch > 1 else 0.0

    def end_epoch(self, view: EpochView):
        self.views.append(view)
        return {"seen_rows": len(view.train_logits)}


def run_spy(epochs=2, seed=30):
    spec, data, info = smoke_task()
    noisy = noisy_labels(data)
    method = Spy(info, {})
    result = train(method, RunData(data.train, noisy, data.test), dataclasses.replace(SMOKE.budget, epochs=epochs), seed)
    return method, result, data, noisy


def test_method_sees_only_noisy_training_labels():
    method, _, data, noisy = run_spy()
    clean = data.train.labels.float()
    assert not torch.equal(noisy, clean)
    for index, targets in method.seen:
        torch.testing.assert_close(targets, noisy[index])
    torch.testing.assert_close(method.views[-1].noisy_labels, noisy)
    assert not any(f.name in ("labels", "train", "test") for f in dataclasses.fields(method.task))


def test_every_training_sample_is_seen_once_per_epoch_and_its_logits_kept():
    method, _, data, _ = run_spy()
    n = len(data.train)
    per_epoch = len(method.seen) // 2
    for epoch in range(2):
        rows = torch.cat([i for i, _ in method.seen[epoch * per_epoch:(epoch + 1) * per_epoch]])
        assert sorted(rows.tolist()) == list(range(n))
    assert method.views[-1].train_logits.shape == (n, 25)
    assert torch.isfinite(method.views[-1].train_logits).all()


def test_evaluation_uses_the_clean_test_labels(monkeypatch):
    captured = []
    real = trainer_module.evaluate
    monkeypatch.setattr(trainer_module, "evaluate", lambda y, s, e: captured.append(y) or real(y, s, e))
    _, _, data, _ = run_spy(epochs=1)
    assert len(captured) == 1 and torch.equal(captured[0], data.test.labels)


def test_curve_records_lr_loss_metrics_and_method_diagnostics():
    _, result, data, _ = run_spy(epochs=3)
    assert [row["epoch"] for row in result.curve] == [1, 2, 3]
    assert [row["lr"] for row in result.curve] == pytest.approx([Budget().lr_at(e) for e in (1, 2, 3)])
    assert result.curve[-1]["method"] == {"seen_rows": len(data.train)}
    assert result.final["map"] == result.curve[-1]["map"]


def test_weight_decay_comes_from_the_method_hook(monkeypatch):
    spec, data, info = smoke_task()
    seen = []

    class Decay(Spy):
        def end_epoch(self, view):
            return None

    method = Decay(info, {})
    original = torch.optim.Adam.step

    def spy_step(self, *a, **k):
        seen.append(self.param_groups[0]["weight_decay"])
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    train(method, RunData(data.train, noisy_labels(data), data.test), dataclasses.replace(SMOKE.budget, epochs=2), 30)
    assert set(seen[: len(seen) // 2]) == {0.0} and set(seen[len(seen) // 2:]) == {1e-5}


def test_same_seed_gives_identical_curves_and_another_seed_does_not():
    _, a, _, _ = run_spy(seed=30)
    _, b, _, _ = run_spy(seed=30)
    _, c, _, _ = run_spy(seed=40)
    strip = lambda curve: [{k: v for k, v in row.items() if k != "method"} for row in curve]  # noqa: E731
    assert strip(a.curve) == strip(b.curve)
    assert strip(a.curve) != strip(c.curve)


def _fail(method_cls, epochs=3):
    from benchmark.errors import RunFailed
    _, data, info = smoke_task()
    with pytest.raises(RunFailed) as failed:
        train(method_cls(info, {}), RunData(data.train, noisy_labels(data), data.test),
              dataclasses.replace(SMOKE.budget, epochs=epochs), 30)
    return str(failed.value), -(-len(data.train) // SMOKE.budget.batch_size)


def test_a_non_finite_loss_fails_the_run_naming_the_epoch_and_the_first_bad_step_in_the_forward():
    class Explodes(Spy):
        def loss(self, logits, targets, index, epoch):
            return logits.sum() * float("nan") if epoch == 2 else super().loss(logits, targets, index, epoch)

    message, per_epoch = _fail(Explodes)
    assert message.startswith("non-finite training loss (nan) in epoch 2; ")
    assert f"first at step {per_epoch + 1:,} (epoch 2, batch 1), in the forward" in message


def test_a_gradient_that_breaks_under_a_finite_loss_is_named_with_its_step_and_weight_tensor():
    _, data, _ = smoke_task()
    per_epoch = -(-len(data.train) // SMOKE.budget.batch_size)

    class BrokenBackward(Spy):
        """The gradient of one weight tensor turns NaN at the first step of epoch 2; the loss stays finite."""
        steps, broken = 0, None

        def build_model(self):
            model = super().build_model()
            name, weight = list(model.named_parameters())[-1]
            BrokenBackward.broken = name
            weight.register_hook(lambda g: g * float("nan") if BrokenBackward.steps == per_epoch + 1 else g)
            return model

        def loss(self, logits, targets, index, epoch):
            BrokenBackward.steps += 1
            return super().loss(logits, targets, index, epoch)

    message, _ = _fail(BrokenBackward)
    n = sum(1 for p in Spy(smoke_task()[2], {}).build_model().parameters())
    # Adam wrote NaN into that tensor at that step, so the loss is non-finite from the next step on.
    assert message.startswith(f"non-finite training loss (nan) in epoch {2 if per_epoch > 1 else 3}; ")
    assert (f"first at step {per_epoch + 1:,} (epoch 2, batch 1), in the backward: the loss was finite (" in message)
    assert f"the gradient of 1 of {n} weight tensors was not ({BrokenBackward.broken}); finite in: " in message


def test_a_method_that_wants_the_output_gets_the_models_extras():
    _, data, info = smoke_task()
    seen = []

    class Extras(Method):
        wants_output = True

        def loss(self, logits, targets, index, epoch, output=None):
            seen.append((len(index), output))
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)

    train(Extras(info, {}), RunData(data.train, noisy_labels(data), data.test), dataclasses.replace(SMOKE.budget, epochs=1), 30)
    for rows, output in seen:
        assert {"ehr_cls", "note_cls", "has_ehr", "has_note", "patient_id"} <= set(output.extras)
        assert output.logits.shape[0] == rows and output.extras["patient_id"].shape == (rows,)


class NoDropout(Spy):
    """FlexCare without dropout: then neither token layout draws random numbers in the encoder layers."""

    def build_model(self):
        model = super().build_model()
        for layer in model.layers:
            layer.dropout, layer.drop.p = 0.0, 0.0
        return model


def test_training_on_packed_positions_follows_the_padded_run():
    """Same seed, same batches: the packed and varlen layouts train the same model (dropout off, so both layouts
    draw the same random numbers), and the layout the trainer chose is the one the model used."""
    spec, data, info = smoke_task()
    noisy = noisy_labels(data)
    budget = dataclasses.replace(SMOKE.budget, epochs=2)
    curves = {}
    for layout in ("padded", "packed", "varlen"):
        method = NoDropout(info, {})
        built = []
        method.build_model = lambda f=method.build_model: built.append(f()) or built[-1]
        curves[layout] = train(method, RunData(data.train, noisy, data.test), budget, 30, Execution(token_layout=layout)).curve
        assert built[0].token_layout == layout
    for layout in ("packed", "varlen"):
        for a, b in zip(curves["padded"], curves[layout]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["map"] == pytest.approx(b["map"], abs=1e-4)


def test_token_layout_auto_packs_on_cuda_only_and_names_the_choices(monkeypatch):
    from benchmark import options

    assert Execution(device="cpu").resolved().token_layout == "padded"
    assert Execution(device="cpu", token_layout="packed").resolved().token_layout == "packed"
    monkeypatch.setattr(options, "resolve_device", lambda name: "cuda")
    assert Execution().resolved().token_layout == "varlen"
    with pytest.raises(ValueError, match=r"token_layout must be one of \('auto', 'padded', 'packed', 'varlen'\), got 'dense'"):
        Execution(token_layout="dense")


def test_a_compiled_model_trains_as_the_eager_one(monkeypatch):
    """``Execution(compile="on")``: the same training (dropout off; the compiled kernels draw the gating
    noise as eager ones do when told to), compiled for training only: evaluation runs eagerly."""
    import torch._dynamo
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    spec, data, info = smoke_task()
    noisy = noisy_labels(data)
    budget = dataclasses.replace(SMOKE.budget, epochs=2)
    curves = {}
    for mode in ("off", "on"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        result = train(NoDropout(info, {}), RunData(data.train, noisy, data.test), budget, 30, Execution(compile=mode))
        curves[mode] = result.curve
        # The first epoch's share (warm-up, captures, compilation) is told apart from the steady steps.
        assert 0 < result.timings["train_first_epoch"] < result.timings["train"]
    compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert compiled == 1  # the training forward: symbolic shapes cover every batch, evaluation is eager
    for a, b in zip(curves["off"], curves["on"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["map"] == pytest.approx(b["map"], abs=1e-3)
    with pytest.raises(ValueError, match=r"compile must be one of \('off', 'on'\), got 'max'"):
        Execution(compile="max")


def test_compile_is_off_unless_asked_for_whatever_the_grid_size(monkeypatch):
    """Compiling draws other random numbers, so a published cell must not depend on how many runs its
    grid had (harness < 0.3.0 compiled grids of four or more runs on a GPU): off by default, on CPU and
    GPU alike; an explicit choice stands; 'auto' is no longer a choice."""
    from benchmark import options

    assert Execution(device="cpu").resolved(runs=100).compile == "off"
    monkeypatch.setattr(options, "resolve_device", lambda name: "cuda")
    for runs in (1, 3, 4, 100):
        assert Execution(jobs=1).resolved(runs).compile == "off"
    assert Execution(jobs=2, compile="on").resolved(1).compile == "on"
    with pytest.raises(ValueError, match=r"compile must be one of \('off', 'on'\), got 'auto'"):
        Execution(compile="auto")


def test_a_model_that_fails_to_compile_trains_eagerly_and_says_so(monkeypatch):
    """A compiler bug must not cost the run: it trains eagerly (the same curve as an eager run), the
    result names the error, and later runs of the model in this process do not try again."""
    from benchmark import fastpath

    spec, data, info = smoke_task()
    noisy = noisy_labels(data)
    budget = dataclasses.replace(SMOKE.budget, epochs=2)
    eager = train(NoDropout(info, {}), RunData(data.train, noisy, data.test), budget, 30, Execution(compile="off"))
    monkeypatch.setattr(fastpath, "_COMPILE_FAILED", {})
    monkeypatch.setattr(torch, "compile", compile_failing_with("an Inductor assertion"))
    fell_back = train(NoDropout(info, {}), RunData(data.train, noisy, data.test), budget, 30, Execution(compile="on"))
    assert eager.compile_fallback is None
    assert "BackendCompilerFailed" in fell_back.compile_fallback and "an Inductor assertion" in fell_back.compile_fallback
    for a, b in zip(eager.curve, fell_back.curve):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(model) or model)
    again = train(NoDropout(info, {}), RunData(data.train, noisy, data.test), budget, 30, Execution(compile="on"))
    assert calls == [] and again.compile_fallback == fell_back.compile_fallback


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def _lr(device: str):
    return torch.tensor(1e-2, device=device) if device == "cuda" else 1e-2  # as ``FastPath.adam`` passes it


@pytest.mark.parametrize("device", DEVICES)
def test_the_compiled_optimiser_update_is_adams(device):
    """``--compile on`` compiles Adam's update too (on CUDA): the same rule as eager Adam (fused Adam
    on CUDA), step by step."""
    from benchmark.fastpath import _optimizer

    torch.manual_seed(0)
    models = [torch.nn.Linear(6, 3).to(device), torch.nn.Linear(6, 3).to(device)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(32, 6, device=device)
    cuda = device == "cuda"
    pairs = [_optimizer(m, _lr(device), on_cuda=cuda, compiled=c) for m, c in zip(models, (False, True))]
    for _ in range(4):
        for m, (opt, update) in zip(models, pairs):
            opt.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            update()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert not torch.equal(a, torch.zeros_like(a))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_a_compiled_grid_compiles_adams_update_once_and_frees_each_runs_optimiser(device):
    """Every run of a compiled grid builds a new model and optimiser: their update must reuse the
    compiled code (no recompilation per run, which Dynamo caps, falling back to eager Adam) and must
    not keep the run's weights and Adam state alive after it."""
    import gc
    import weakref

    from torch._dynamo.utils import counters

    from benchmark.fastpath import _optimizer

    x = torch.randn(32, 6, device=device)
    gone, compiled_frames = [], []
    for run in range(4):
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).to(device)
        opt, update = _optimizer(model, _lr(device), on_cuda=device == "cuda", compiled=True)
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            update()
        compiled_frames.append(counters["frames"]["ok"])
        gone.append(weakref.ref(opt))
        del model, opt, update
        gc.collect()
    assert compiled_frames[1:] == compiled_frames[:1] * 3, f"frames compiled after each run: {compiled_frames}"
    assert all(ref() is None for ref in gone), "a finished run's optimiser is still referenced"


def test_training_does_not_warn_that_the_schedule_steps_before_the_optimiser():
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_spy(epochs=2)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_forensics_replays_the_failing_epoch_and_names_the_backward_operation_that_broke(tmp_path):
    """A NaN gradient under a finite loss, in the batch that holds one training row (epoch 2 only):
    the replay finds that batch again, anomaly mode names the operation, and the step's weights and
    rows are saved."""
    import json
    import re

    from benchmark.errors import RunFailed
    _, data, info = smoke_task()
    row = len(data.train) // 2

    class HiddenNaN(Spy):
        def loss(self, logits, targets, index, epoch):
            base = super().loss(logits, targets, index, epoch)
            if epoch != 2:
                return base
            # The discarded branch is NaN in the forward, so its derivative is 0 * NaN in the backward.
            hit = (index == row).any()
            root = (logits.mean() * 0 + torch.where(hit, -1.0, 1.0)).sqrt()  # NaN only in the batch of ``row``
            return base + torch.where(hit, torch.zeros(()), root)

    with pytest.raises(RunFailed) as failed:
        train(HiddenNaN(info, {}), RunData(data.train, noisy_labels(data), data.test),
              dataclasses.replace(SMOKE.budget, epochs=3, batch_size=16), 30, Execution(forensics=str(tmp_path)))
    message = str(failed.value)
    batch = int(re.search(r"first at step [\d,]+ \(epoch 2, batch (\d+)\), in the backward", message).group(1))
    assert f"replayed eagerly, step {batch} of epoch 2 went non-finite" in message
    assert "anomaly mode: Function 'SqrtBackward0' returned nan values" in message
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["step"] == batch and report["variants"]["as run"]["loss_finite"]
    assert report["variants"]["fp32"]["nonfinite_gradients"] > 0  # not a precision effect: fp32 breaks too
    assert any("test_trainer.py" in frame or "loss" in frame for frame in report["anomaly"]["forward_call"])
    saved = torch.load(tmp_path / "batch.pt")
    assert (saved["rows"] == row).any()
    weights = torch.load(tmp_path / "weights.pt")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_forensics_takes_apart_the_runs_own_bad_step_when_the_eager_replay_stays_finite(tmp_path):
    """A NaN gradient at one global step only (as a kernel failing once would): the replay cannot meet
    it again, so the step is rerun from the weights it started from, on its own rows."""
    import json

    from benchmark.errors import RunFailed
    _, data, info = smoke_task()
    seen = []
    per_epoch = -(-len(data.train) // 16)
    epoch_end = lambda step: -(-step // per_epoch) * per_epoch  # noqa: E731

    class Once(Spy):
        steps = 0

        def loss(self, logits, targets, index, epoch):
            Once.steps += 1
            seen.append(index.clone())
            base = super().loss(logits, targets, index, epoch)
            # Once in the run; then, after the run's failing epoch and its eager replay, in about half
            # of the dropout-like draws of the forensic reruns (as a kernel failing on some draws would).
            after_replay = Once.steps > epoch_end(9) + per_epoch
            broken = Once.steps == 9 or (after_replay and bool(torch.rand(()) < 0.5))
            root = (logits.mean() * 0 + (-1.0 if broken else 1.0)).sqrt()
            return base + torch.where(torch.tensor(broken), torch.zeros(()), root)

    with pytest.raises(RunFailed) as failed:
        train(Once(info, {}), RunData(data.train, noisy_labels(data), data.test),
              dataclasses.replace(SMOKE.budget, epochs=3, batch_size=16), 30, Execution(forensics=str(tmp_path)))
    message = str(failed.value)
    epoch, batch = (9 - 1) // per_epoch + 1, (9 - 1) % per_epoch + 1
    assert f"the eager replay of epoch {epoch} stayed finite; the run's own first bad step (batch {batch})" in message
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run_step"]["batch"] == batch
    broke = report["run_step"]["variants"]["as run"]["nonfinite_draws"]
    assert 0 < broke < 16 and f"non-finite gradients in dropout draws as run: {broke}/16" in message
    assert report["run_step"]["anomaly"]["error"].startswith("Function 'SqrtBackward0' returned nan values")
    assert torch.equal(torch.load(tmp_path / "batch.pt")["rows"], seen[8].cpu())
    weights = torch.load(tmp_path / "weights.pt")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_a_long_models_message_names_the_modules_whose_gradient_stayed_finite():
    from benchmark.nonfinite import NonFiniteWatch

    model = torch.nn.ModuleDict({
        "encoder": torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(15))),
        "blocks": torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(14)),
        "head": torch.nn.Linear(2, 1),
    })
    watch = NonFiniteWatch(model, torch.device("cpu"))
    for name, p in model.named_parameters():
        # The break sits in blocks.0's weight: everything before it (the encoder, blocks.0's weight) is NaN.
        broken = name.startswith("encoder") or name == "blocks.0.weight"
        p.grad = torch.full_like(p, float("nan") if broken else 1.0)
    watch.check(torch.tensor(0.5))
    message = watch.describe(steps_per_epoch=10)
    assert "the gradient of 31 of 60 weight tensors was not" in message
    assert message.endswith("; finite in: blocks.0 (1 of 2), " + ", ".join(f"blocks.{i}" for i in range(1, 14)) + ", head")
