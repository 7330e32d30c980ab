"""The Linear and LayerNorm of ``backbones/affine.py`` are ``nn.Linear`` and ``nn.LayerNorm``: the same
outputs and the same gradients for the input and every parameter, in fp64 (their CPU route, forced), and
on a GPU under bf16 autocast within its rounding."""
import pytest
import torch
from torch import nn

from benchmark.backbones import affine


def _grads(fn, x, module, weight=None):
    """The output, the input gradient and the parameter gradients of ``(fn(x) * weight).sum()``; by
    default ``weight`` runs from -1 to 1 over the output's entries."""
    x = x.detach().clone().requires_grad_()
    module.zero_grad()
    out = fn(x)
    if weight is None:
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    (out * weight.to(out.dtype)).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("shape", [(37, 16), (3, 11, 16)])
def test_linear_is_nn_linear_with_its_gradients_in_fp64(shape):
    torch.manual_seed(0)
    layer = nn.Linear(16, 24).double()
    x = torch.randn(*shape, dtype=torch.float64)
    ours = _grads(lambda t: affine.linear(t, layer, force=True), x, layer)
    reference = _grads(layer, x, layer)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(37, 16), (3, 11, 16)])
def test_layer_norm_is_nn_layer_norm_with_its_gradients_in_fp64(shape):
    torch.manual_seed(1)
    norm = nn.LayerNorm(16).double()
    with torch.no_grad():  # away from the initial 1 and 0, so that both parameters matter
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    ours = _grads(lambda t: affine.layer_norm(t, norm, force=True), x, norm)
    reference = _grads(norm, x, norm)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_a_compiled_model_traces_them_as_one_graph_with_the_same_gradients():
    """``torch.compile`` with ``fullgraph=True`` fails at any graph break: the functorch query of
    ``transformed`` broke the graph at every layer call of a compiled FlexCare (one graph per call)."""
    torch.manual_seed(2)
    layer, norm = nn.Linear(16, 8).double(), nn.LayerNorm(8).double()
    model = nn.ModuleList([layer, norm])

    def fn(t):
        return affine.layer_norm(affine.linear(t, layer, force=True), norm, force=True)

    x = torch.randn(3, 11, 16, dtype=torch.float64)
    compiled = _grads(torch.compile(fn, backend="aot_eager", fullgraph=True), x, model)
    eager = _grads(lambda t: norm(layer(t)), x, model)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_on_the_cpu_the_modules_themselves_run():
    """CPU training rounds and draws as before: no custom backward there unless forced."""
    layer, norm = nn.Linear(4, 4), nn.LayerNorm(4)
    x = torch.randn(3, 4, requires_grad=True)
    assert type(affine.linear(x, layer).grad_fn).__name__ == "AddmmBackward0"
    assert type(affine.layer_norm(x, norm).grad_fn).__name__ == "NativeLayerNormBackward0"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA route"))])
def test_under_bf16_autocast_the_parameter_gradients_are_the_sums_autograd_sums(device):
    """Under bf16 autocast (the GPU's route; forced on the CPU) the parameter gradients sum 20,000 rows of
    the terms autograd sums too. The data make every sum exact in fp32 whatever its order (bf16 values on
    a grid of 2^-6 and 2^-2, partial sums below 2^24 grid steps), so the bias gradients must equal the fp64
    sums exactly and the Linear weight gradient must be the exact sum rounded once to bf16. LayerNorm's
    weight gradient sums fp32 products, so it is held to fp32 summation's bound (n * 2^-24 of the terms'
    absolute mass, Higham). Outputs and input gradients: autograd's to bf16 rounding."""
    torch.manual_seed(2)
    dev, n = torch.device(device), 20000
    layer, norm = nn.Linear(128, 128).to(dev), nn.LayerNorm(128).to(dev)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x_grid = torch.randint(-8, 9, (n, 128), device=dev).float() / 4  # exact in bf16
    g = torch.randint(-64, 65, (n, 128), device=dev).float() / 64  # exact in bf16
    for fn, module, x in ((lambda t: affine.linear(t, layer, force=True), layer, x_grid),
                          (lambda t: affine.layer_norm(t, norm, force=True), norm, torch.randn(n, 128, device=dev))):
        with torch.autocast(device, dtype=torch.bfloat16):
            out, dx, weight_grad, bias_grad = _grads(fn, x, module, g)
            ref_out, ref_dx, *_ = _grads(module, x, module, g)
        assert out.dtype == ref_out.dtype and dx.dtype == ref_dx.dtype
        for a, b in ((out, ref_out), (dx, ref_dx)):
            assert float((a.float() - b.float()).norm() / b.float().norm()) < 1e-2
        assert weight_grad.dtype == bias_grad.dtype == torch.float32
        assert torch.equal(bias_grad.double(), g.double().sum(0))
        if module is layer:
            exact = g.double().t() @ x.double()
            assert torch.all((weight_grad.double() - exact).abs() <= exact.abs() * 2.0**-8)
        else:
            xd = x.double()
            xhat = (xd - xd.mean(-1, keepdim=True)) / torch.sqrt(xd.var(-1, unbiased=False, keepdim=True) + norm.eps)
            terms = g.double() * xhat
            assert torch.all((weight_grad.double() - terms.sum(0)).abs() <= n * 2.0**-24 * terms.abs().sum(0))
