"""The fused sub-layer tail of ``backbones/fused.py`` is ``norm(x + dropout(h))``: checked against a LayerNorm
written out in fp64 (forward and every gradient), with the roundings of autocast's mixed dtypes, its dropout
draws, and inside FlexCare on every missingness pattern. Without a GPU the kernels run in Triton's
interpreter (``conftest.py`` turns it on)."""
import dataclasses
import os

import pytest
import torch
from torch import nn

from benchmark.backbones import fused
from helpers import make_batch

pytestmark = pytest.mark.skipif(fused.triton is None, reason="Triton is not installed")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # CPU tensors run through Triton's interpreter
DEVICES = (["cpu"] if INTERPRETED else []) + (["cuda"] if torch.cuda.is_available() else [])


def _norm(d, dtype=torch.float64, device="cpu", seed=0):
    norm = nn.LayerNorm(d).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # away from the identity, so that a swapped weight or bias shows
        norm.weight.copy_(torch.rand(d, generator=g, dtype=dtype) + 0.5)
        norm.bias.copy_(torch.rand(d, generator=g, dtype=dtype) - 0.5)
    return norm


def _keep_mask(shape, p, seed, dtype, device):
    """The elements a call under ``torch.manual_seed(seed)`` keeps, read from the function itself: with
    x = 0, h = 1 and the identity LayerNorm the kept elements are the row's only positive outputs."""
    torch.manual_seed(seed)
    probe = fused.add_dropout_norm(torch.zeros(shape, dtype=dtype, device=device),
                                   torch.ones(shape, dtype=dtype, device=device), p,
                                   nn.LayerNorm(shape[-1]).to(device=device, dtype=dtype), None, force=True)
    return probe > 0


def _spec(x, h, keep, p, weight, bias, eps):
    """LayerNorm(x + h * keep / (1 - p)) over the last dimension, written out in fp64."""
    s = x + h * keep / (1 - p)
    mean = s.mean(-1, keepdim=True)
    var = ((s - mean) ** 2).mean(-1, keepdim=True)
    return (s - mean) / torch.sqrt(var + eps) * weight + bias


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
# Scales 1, 1.25 and 2: exact in the fp32 scalar the kernel takes (as F.dropout's), so fp64 sums can be exact.
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("shape", [(37, 128), (3, 11, 48)])  # rows not a multiple of a block; width not a power of 2
def test_the_fused_tail_is_layer_norm_of_the_dropped_residual_in_fp64(shape, p, device):
    g = torch.Generator().manual_seed(1)
    x, h, grad = (torch.randn(shape, generator=g, dtype=torch.float64).to(device) for _ in range(3))
    norm = _norm(shape[-1], device=device)
    keep = _keep_mask(shape, p, 7, torch.float64, device) if p > 0 else torch.ones(shape, dtype=torch.bool, device=device)
    xs, hs, w, b = _leaves(x, h, norm.weight, norm.bias)
    torch.manual_seed(7)  # the probe's seed: the same draws
    out = fused.add_dropout_norm(xs, hs, p, norm, None, force=True)
    ours = torch.autograd.grad(out, (xs, hs, norm.weight, norm.bias), grad)
    xr, hr, wr, br = _leaves(x, h, norm.weight, norm.bias)
    ref = _spec(xr, hr, keep.double(), p, wr, br, norm.eps)
    spec = torch.autograd.grad(ref, (xr, hr, wr, br), grad)
    assert out.dtype == torch.float64 and out.shape == shape
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    for name, a, e in zip(("x", "h", "weight", "bias"), ours, spec):
        torch.testing.assert_close(a, e, atol=1e-11, rtol=0, msg=lambda m, n=name: f"gradient of {n}: {m}")
    if p > 0:  # the dropped elements of h get no gradient, the kept ones it scaled
        assert (ours[1][~keep] == 0).all() and (ours[1][keep] != 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_under_autocast_the_tail_rounds_as_dropout_and_layer_norm_do(device):
    """x fp32 and h bf16, as FlexCare's residual and projection under autocast: the kept h scaled and rounded
    to bf16, the sum normalised in fp32 (autocast's LayerNorm), an fp32 output; h's gradient is the sum's
    gradient rounded to bf16, then masked, scaled and rounded again (autograd's route through F.dropout)."""
    n, d, p = 300, 128, 0.1
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, d, generator=g).to(device)
    h = torch.randn(n, d, generator=g).to(device=device, dtype=torch.bfloat16)
    grad = torch.randn(n, d, generator=g).to(device)
    norm = _norm(d, torch.float32, device)
    keep = _keep_mask((n, d), p, 3, torch.float32, device)
    xs, hs = _leaves(x, h)
    torch.manual_seed(3)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = fused.add_dropout_norm(xs, hs, p, norm, None, force=True)
    dx, dh, dw, db = torch.autograd.grad(out, (xs, hs, norm.weight, norm.bias), grad)
    assert out.dtype == torch.float32 and dx.dtype == torch.float32 and dh.dtype == torch.bfloat16
    dropped = torch.where(keep, h.float() * (1 / (1 - p)), 0.0).to(torch.bfloat16)
    sr = (x.double() + dropped.double()).requires_grad_()
    wr, br = _leaves(norm.weight.double(), norm.bias.double())
    ref = _spec(sr, torch.zeros_like(sr), torch.ones_like(sr), 0.0, wr, br, norm.eps)
    ds, dwr, dbr = torch.autograd.grad(ref, (sr, wr, br), grad.double())
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(dx.double(), ds, atol=2e-5, rtol=0)
    torch.testing.assert_close(dw.double(), dwr, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(db.double(), dbr, atol=1e-4, rtol=1e-5)
    # h's gradient from the fp64 one by autograd's roundings; one bf16 step apart at most where ds's fp32
    # rounding falls on the other side of a bf16 boundary.
    expected = torch.where(keep, ds.to(torch.bfloat16).float() * (1 / (1 - p)), 0.0).to(torch.bfloat16)
    assert (dh[~keep] == 0).all()
    torch.testing.assert_close(dh.float(), expected.float(), atol=0, rtol=2**-7)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_keeps_one_minus_p_draws_anew_per_call_and_follows_the_seed(device):
    shape, p = (256, 128), 0.1
    first = _keep_mask(shape, p, 11, torch.float32, device)
    again = _keep_mask(shape, p, 11, torch.float32, device)
    other = _keep_mask(shape, p, 12, torch.float32, device)
    n = first.numel()
    # 5 standard deviations of a binomial(n, 0.9) fraction
    assert abs(first.float().mean().item() - (1 - p)) < 5 * ((p * (1 - p)) / n) ** 0.5
    assert torch.equal(first, again)
    assert (first != other).float().mean() > 0.1  # two independent masks differ in ~18 % of elements
    torch.manual_seed(11)
    norm = nn.LayerNorm(128).to(device)
    x, h = torch.zeros(shape, device=device), torch.ones(shape, device=device)
    a, b = (fused.add_dropout_norm(x, h, p, norm, None, force=True) > 0 for _ in range(2))
    assert (a != b).any(), "two calls in a row drew the same mask"


def test_outside_its_reach_the_tail_is_the_pytorch_expression(monkeypatch):
    """CPU tensors (no ``force``), the switch off or a width it does not take run ``norm(x + dropout(h))``."""
    x, h = torch.randn(5, 16), torch.randn(5, 16)
    norm = _norm(16, torch.float32)
    calls = []
    drop = lambda t: calls.append(t) or t  # noqa: E731 - records that the module ran
    assert not fused.usable(x, h, norm)
    torch.testing.assert_close(fused.add_dropout_norm(x, h, 0.1, norm, drop), norm(x + h))
    monkeypatch.setattr(fused, "ENABLED", False)
    assert not fused.usable(x, h, norm, force=True)
    fused.add_dropout_norm(x, h, 0.1, norm, drop, force=True)
    assert len(calls) == 2
    monkeypatch.setattr(fused, "ENABLED", True)
    assert not fused.usable(x, h[:, :8], norm, force=True)


def test_inside_torch_func_transforms_the_pytorch_expressions_run():
    """The custom Functions have no vmap rule: under ``torch.func.vmap`` (perf/stacked_runs.py stacks runs so)
    the tail, the activation and affine's Linear fall back to PyTorch ops, which vmap batches."""
    from benchmark.backbones import affine

    norm, layer = _norm(16, torch.float32), nn.Linear(16, 16)
    x, h = torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    tail = torch.func.vmap(lambda a, b: fused.add_dropout_norm(a, b, 0.0, norm, lambda t: t, force=True))(x, h)
    torch.testing.assert_close(tail, norm(x + h))
    act = torch.func.vmap(lambda a: fused.relu_dropout(a, 0.0, lambda t: t, force=True))(x)
    torch.testing.assert_close(act, torch.relu(x))
    lin = torch.func.vmap(lambda a: affine.linear(a, layer, force=True))(x)
    torch.testing.assert_close(lin, layer(x))


@pytest.mark.skipif(not INTERPRETED, reason="fp64 FlexCare on CPU tensors needs Triton's interpreter")
@pytest.mark.parametrize("layout", ["padded", "packed", "varlen"])
def test_flexcare_with_fused_tails_is_the_same_function_with_gradients(monkeypatch, layout):
    """Dropout off (eval mode), fp64: the same logits, regularisers and parameter gradients as the PyTorch
    tails, on every missingness pattern (both, series only, note only, neither; a one-bin series)."""
    from test_flexcare import _random_released

    model = _random_released()
    model.token_layout = layout
    batch = make_batch(ehr_len=[10, 0, 4, 0, 10, 1], note_len=[7, 7, 0, 0, 3, 0])
    batch = dataclasses.replace(batch, ehr=batch.ehr.double(), note=batch.note.double(),
                                tokens=int((batch.ehr_len + batch.note_len).sum()))

    def run(on: bool):
        monkeypatch.setattr(fused, "_runs_here", lambda t: on)
        model.zero_grad()
        out = model(batch)
        (out.logits.sum() + out.aux).backward()
        return out.logits.detach(), out.aux.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                                                      if p.grad is not None}

    calls = []
    real = fused._AddDropoutNorm.apply
    monkeypatch.setattr(fused._AddDropoutNorm, "apply", lambda *a: calls.append(1) or real(*a))
    logits, aux, grads = run(True)
    assert len(calls) == 2 * len(model.layers)
    ref_logits, ref_aux, ref_grads = run(False)
    assert len(calls) == 2 * len(model.layers)
    torch.testing.assert_close(logits, ref_logits, atol=1e-10, rtol=0)
    torch.testing.assert_close(aux, ref_aux, atol=1e-10, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-9, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5])
def test_the_fused_feed_forward_activation_is_dropout_of_relu(p, device):
    """fp64, and bf16 with F.dropout's and relu's roundings and gradient route; the draws are the tail's."""
    g = torch.Generator().manual_seed(4)
    u, grad = (torch.randn(5, 9, 512, generator=g, dtype=torch.float64).to(device) for _ in range(2))
    torch.manual_seed(21)  # the kept elements, read from the function itself: relu(1) is kept or 0
    keep = fused.relu_dropout(torch.ones_like(u), p, None, force=True) > 0
    assert abs(keep.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / keep.numel()) ** 0.5 + 1e-12
    us = u.clone().requires_grad_()
    torch.manual_seed(21)
    out = fused.relu_dropout(us, p, None, force=True)
    (du,) = torch.autograd.grad(out, us, grad)
    ur = u.clone().requires_grad_()
    ref = torch.relu(ur) * keep / (1 - p)
    (dref,) = torch.autograd.grad(ref, ur, grad)
    torch.testing.assert_close(out, ref, atol=1e-15, rtol=0)
    torch.testing.assert_close(du, dref, atol=1e-15, rtol=0)
    if p == 0.0:
        return
    ub, gb = u.to(torch.bfloat16), grad.to(torch.bfloat16)
    ubs = ub.clone().requires_grad_()
    torch.manual_seed(21)
    out = fused.relu_dropout(ubs, p, None, force=True)
    (du,) = torch.autograd.grad(out, ubs, gb)
    scale = 1 / (1 - p)
    assert torch.equal(out, torch.where(keep, torch.relu(ub).float() * scale, 0.0).to(torch.bfloat16))
    assert torch.equal(du, torch.where(keep & (ub > 0), gb.float() * scale, 0.0).to(torch.bfloat16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_replayed_cuda_graph_draws_new_masks():
    shape, p = (512, 128), 0.1
    norm = nn.LayerNorm(128).cuda()
    x, h = torch.zeros(shape, device="cuda"), torch.ones(shape, device="cuda")
    fused.add_dropout_norm(x, h, p, norm, None)  # compiles the kernel outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused.add_dropout_norm(x, h, p, norm, None)
    masks = []
    for _ in range(3):
        graph.replay()
        masks.append(out > 0)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    assert abs(masks[0].float().mean().item() - (1 - p)) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_the_gpu_flexcare_with_fused_tails_agrees_with_pytorch_tails_under_autocast(monkeypatch):
    """The trainer's dtypes (bf16 autocast, varlen layout, dropout off): logits and gradients to bf16 tolerance."""
    from test_flexcare import _random_released

    model = _random_released().float().cuda()
    model.token_layout = "varlen"
    batch = make_batch(ehr_len=[10, 0, 4, 0, 10, 1], note_len=[7, 7, 0, 0, 3, 0])
    batch = dataclasses.replace(batch, ehr=batch.ehr.cuda(), note=batch.note.cuda(), ehr_len=batch.ehr_len.cuda(),
                                note_len=batch.note_len.cuda(), patient_id=batch.patient_id.cuda(),
                                tokens=int((batch.ehr_len + batch.note_len).sum()))

    def run(on: bool):
        monkeypatch.setattr(fused, "ENABLED", on)
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        (out.logits.float().sum() + out.aux).backward()
        return out.logits.float().detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    logits, grads = run(True)
    ref_logits, ref_grads = run(False)
    torch.testing.assert_close(logits, ref_logits, atol=3e-2, rtol=3e-2)
    for name in ref_grads:
        scale = ref_grads[name].abs().max().item() + 1e-6
        assert (grads[name] - ref_grads[name]).abs().max().item() <= 5e-2 * scale, name
