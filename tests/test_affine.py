"""The Linear and LayerNorm of ``backbones/affine.py`` are ``nn.Linear`` and ``nn.LayerNorm``: the same
outputs and the same gradients for the input and every parameter, in fp64 (their CPU route, forced), and
on a GPU under bf16 autocast within its rounding."""
import pytest
import torch
from torch import nn

from benchmark.backbones import affine


def _grads(fn, x, module):
    x = x.detach().clone().requires_grad_()
    module.zero_grad()
    out = fn(x)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    (out * weight).sum().backward()
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


def test_on_the_cpu_the_modules_themselves_run():
    """CPU training rounds and draws as before: no custom backward there unless forced."""
    layer, norm = nn.Linear(4, 4), nn.LayerNorm(4)
    x = torch.randn(3, 4, requires_grad=True)
    assert type(affine.linear(x, layer).grad_fn).__name__ == "AddmmBackward0"
    assert type(affine.layer_norm(x, norm).grad_fn).__name__ == "NativeLayerNormBackward0"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA route")
def test_under_bf16_autocast_on_a_gpu_the_gradients_are_exact_sums_of_the_same_terms():
    """On the GPU the parameter gradients are sums over 20,000 rows of the terms autograd sums too (the
    output gradient times the layer's input in the dtype autocast gives it). Against those sums in fp64,
    each entry is off by no more than fp32 summation allows, relative to the absolute mass of its terms,
    whatever cancellation the ordered output gradient of ``_grads`` causes; the outputs and the input
    gradients are autograd's to bf16 rounding."""
    torch.manual_seed(2)
    dev = torch.device("cuda")
    layer, norm = nn.Linear(128, 128).to(dev), nn.LayerNorm(128).to(dev)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(20000, 128, device=dev)
    for fn, module in ((lambda t: affine.linear(t, layer), layer), (lambda t: affine.layer_norm(t, norm), norm)):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, dx, *params = _grads(fn, x, module)
            ref_out, ref_dx, *_ = _grads(module, x, module)
        assert out.dtype == ref_out.dtype and dx.dtype == ref_dx.dtype
        for a, b in ((out, ref_out), (dx, ref_dx)):
            assert float((a.float() - b.float()).norm() / b.float().norm()) < 1e-2
        g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=dev).view_as(out).double()  # as _grads
        if module is layer:
            weight_grad, bias_grad = params
            exact = g.t() @ x.bfloat16().double()  # a matrix product of bf16 operands, as autograd's
            assert float((weight_grad.double() - exact).norm() / exact.norm()) < 1e-2
            sums = [(bias_grad, g)]
        else:
            xhat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
            sums = list(zip(params, (g * xhat.double(), g)))
        for grad, terms in sums:
            assert grad.dtype == torch.float32
            error = (grad.double() - terms.sum(0)).abs() / terms.abs().sum(0)
            assert float(error.max()) < 1e-5
