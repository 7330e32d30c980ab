"""Linear and LayerNorm whose parameter gradients are reduced by matrix-vector products (CUDA).

At the full track's real note lengths a step runs FlexCare over 20k (``mimic4-*``) to 50k
(``mimic3-phe``) packed rows of width 128. Autograd reduces a Linear's bias gradient with
``grad.sum(0)`` and a LayerNorm's weight and bias gradients with PyTorch's GammaBeta kernel; over so many
rows and so few columns both run far below the card's bandwidth (H200, 50k rows: 54 us per bias sum,
214 us per LayerNorm parameter reduction, 2.7 of a step's 11.3 ms of kernels; docs/performance.md).
A matrix-vector product with a vector of ones reads the same bytes at the card's bandwidth.

The functions are the same as ``F.linear`` and ``F.layer_norm``, in the dtypes autocast gives them
(Linear in the autocast dtype, LayerNorm in fp32); only the order of the float additions of the
parameter gradients differs. They run on CUDA only: elsewhere ``F.linear`` / the module itself run, so
CPU training draws and rounds exactly as before (tests/test_affine.py checks both against autograd in
fp64, through these functions' CPU route for the backward they define).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Off: every call is ``F.linear`` / the LayerNorm module (the autograd reductions), as before harness 0.6.0.
ENABLED = True


def linear(x: torch.Tensor, layer: nn.Linear, force: bool = False) -> torch.Tensor:
    """``layer(x)``, its bias gradient reduced by a matrix-vector product (CUDA, or ``force``)."""
    return linear_of(x, layer.weight, layer.bias, force)


def linear_of(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, force: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, its bias gradient reduced by a matrix-vector product (CUDA, or ``force``)."""
    if not (ENABLED and (x.is_cuda or force)) or bias is None or not torch.is_grad_enabled() or transformed(x):
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias, compute_dtype(x))


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm, force: bool = False) -> torch.Tensor:
    """``norm(x)``, its weight and bias gradients reduced by matrix-vector products (CUDA, or ``force``)."""
    if not (ENABLED and (x.is_cuda or force)) or norm.weight is None or not torch.is_grad_enabled() or transformed(x):
        return norm(x)
    dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype  # autocast's fp32 list
    return _LayerNorm.apply(x, norm.weight, norm.bias, norm.normalized_shape, norm.eps, dtype)


def transformed(x: torch.Tensor) -> bool:
    """Whether ``x`` is inside a ``torch.func`` transform (vmap, grad), where these Functions have no rule.

    Not asked while compiling: Dynamo cannot trace the query, and broke the graph at every Linear and
    LayerNorm of a compiled model (one graph per layer call, recompiled per dtype); the harness compiles
    no function that runs under a transform."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matrix product of ``x`` runs in: autocast's, if on for its device, else its own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _column_sums(g: torch.Tensor) -> torch.Tensor:
    """Sum over every leading dimension of ``g`` ([..., c] -> [c]), as one matrix-vector product.

    bf16 / fp16 gradients are summed into an fp32 result (``matmul``), which reaches the fp32 parameter
    unrounded, where autograd's ``sum(0)`` rounds it to bf16 first."""
    rows = g.reshape(-1, g.shape[-1])
    with torch.autocast(rows.device.type, enabled=False):  # a backward called under autocast would cast mv to bf16
        if rows.dtype in (torch.bfloat16, torch.float16):
            if rows.is_cuda:
                sums = matmul(rows.new_ones(1, rows.shape[0]), rows).view(-1)
                if sums.dtype == torch.float32:
                    return sums
            rows = rows.float()  # CPU PyTorch (or an older one) has no half products with an fp32 result
        return torch.mv(rows.t(), rows.new_ones(rows.shape[0]))


def matmul(a: torch.Tensor, b: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` (``+ add_to``); half CUDA products with an fp32 result where this PyTorch can
    (``out_dtype``), else in the inputs' dtype."""
    global _MM_OUT_DTYPE, _ADDMM_OUT_DTYPE
    # Not while compiling (``--compile on`` traces the backward of ``varlen._Projections``): torch 2.11's
    # decomposition of ``addmm`` has no ``out_dtype`` and fails on fake tensors.
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16) and not torch.compiler.is_compiling():
        try:
            if add_to is None and _MM_OUT_DTYPE:
                return torch.mm(a, b, out_dtype=torch.float32)
            if add_to is not None and _ADDMM_OUT_DTYPE and add_to.dtype == torch.float32:
                return torch.addmm(add_to, a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # a PyTorch without fp32 output for half products
            if add_to is None:
                _MM_OUT_DTYPE = False
            else:
                _ADDMM_OUT_DTYPE = False
    out = a @ b
    return out if add_to is None else add_to + out


_MM_OUT_DTYPE = True  # torch.mm(..., out_dtype=) available (set False at the first failure)
_ADDMM_OUT_DTYPE = True  # the same for torch.addmm


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dtype):
        # Autocast's casts, made here: inside a Function's forward autocast still applies to F.linear,
        # so the casts are explicit and the product runs with autocast off.
        xc, wc, bc = x.to(dtype), weight.to(dtype), bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(xc, wc, bc)
        ctx.save_for_backward(xc, wc)
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        xc, wc = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        g = grad.to(xc.dtype)
        g2 = g.reshape(-1, g.shape[-1])
        dx = (g @ wc).to(x_dtype) if ctx.needs_input_grad[0] else None
        dw = (g2.t() @ xc.reshape(-1, xc.shape[-1])).to(w_dtype) if ctx.needs_input_grad[1] else None
        db = _column_sums(g2).to(b_dtype) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, shape, eps, dtype):
        # The normalisation and the affine map are kept apart so that the backward can reduce the
        # parameter gradients itself.
        xf = x.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            xhat, mean, rstd = torch.native_layer_norm(xf, shape, None, None, eps)
            out = torch.addcmul(bias.to(dtype), xhat, weight.to(dtype))
        ctx.save_for_backward(xf, xhat, mean, rstd, weight)
        ctx.shape, ctx.x_dtype = shape, x.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        xf, xhat, mean, rstd, weight = ctx.saved_tensors
        g = grad.to(xf.dtype)
        dx = None
        if ctx.needs_input_grad[0]:
            dx, _, _ = torch.ops.aten.native_layer_norm_backward(
                g * weight.to(xf.dtype), xf, ctx.shape, mean, rstd, None, None, [True, False, False])
            dx = dx.to(ctx.x_dtype)
        dw = _column_sums(g * xhat).to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = _column_sums(g).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None
