"""FlexCare's elementwise tails as one Triton kernel forward and one backward each (CUDA): a sub-layer's
``LayerNorm(x + dropout(h))`` and the feed-forward's ``dropout(relu(u))``.

At the full track's real note lengths a FlexCare step runs over 20k (``mimic4-*``) to 50k (``mimic3-phe``)
packed rows of width 128, and each of its eight post-norm tails was about a dozen bandwidth-bound
kernels: dropout, the residual add, the cast to fp32, PyTorch's LayerNorm (whose kernel runs one row of
128 per block, 75 us for 50k rows on an H200), the affine map, and in the backward their gradients and
the parameter reductions (docs/performance.md). Here the forward reads ``x`` and ``h`` once and writes
the output and what the backward needs; the backward reads them once, writes both input gradients, and
reduces the weight and bias gradients per program (one small sum after). The feed-forward's activation
is one pass each way instead of two (relu, then dropout with its mask tensor).

The functions are those of ``norm(x + F.dropout(h, p))`` under autocast and of ``F.dropout(F.relu(u), p)``:
the kept elements scaled by 1 / (1 - p) and rounded to their dtype, the sum and the normalisation in fp32
(autocast's LayerNorm), the tail's output in fp32 (or, outside autocast, in the promoted dtype of ``x`` and
``h``); the gradients go through the same roundings as autograd's (the sum's gradient cast to ``h``'s
dtype, then masked and scaled; relu's gradient where its output is positive). Only the float order of the
normalisation's and the parameter gradients' sums differs, and the dropout draws: an element is kept where
its uniform from Triton's Philox (four per call, keyed by a seed drawn from the device's PyTorch generator
per call, so CUDA-graph replays draw anew) is at least ``p``: the same distribution as ``F.dropout``, other
numbers (harness 0.7.0). ``tests/test_fused.py`` checks both against fp64 forms written out, on the CPU
through Triton's interpreter and on a GPU.

Where they do not run (no Triton, CPU, a compiled model, ``ENABLED`` off) the same expressions run as
PyTorch ops (``affine.layer_norm`` and the dropout module), as before.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import affine

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU install: the sub-layer's tail runs as PyTorch ops
    triton = None

#: Off: the PyTorch expressions (harness < 0.7.0's kernels and draws).
ENABLED = True
ROWS_FORWARD = 8  # rows per program of the forward kernel
ROWS_BACKWARD = 32  # rows per iteration of the backward's persistent programs (perf/fused_kernels.py)
PROGRAMS_PER_SM = 32
ELEMENTS = 2048  # elements per program of the feed-forward's kernels (a multiple of 4)


def add_dropout_norm(x: torch.Tensor, h: torch.Tensor, p: float, norm: torch.nn.LayerNorm, dropout,
                     force: bool = False) -> torch.Tensor:
    """``norm(x + dropout(h))``, with ``dropout`` the module that applies probability ``p`` (0 outside
    training) where the fused kernels do not run. ``force``: run them on a CPU tensor too (Triton's
    interpreter; tests only)."""
    if not usable(x, h, norm, force):
        return affine.layer_norm(x + dropout(h), norm)
    dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else torch.promote_types(x.dtype, h.dtype)
    # Decided here: inside a Function's forward gradients are always off.
    saving = torch.is_grad_enabled() and any(t.requires_grad for t in (x, h, norm.weight, norm.bias))
    return _AddDropoutNorm.apply(x, h, norm.weight, norm.bias, p, norm.eps, dtype, saving)


def usable(x: torch.Tensor, h: torch.Tensor, norm: torch.nn.LayerNorm, force: bool = False) -> bool:
    """Whether the fused tail runs for this call (else the PyTorch expression does)."""
    d = x.shape[-1]
    return (_eligible(x, force) and x.shape == h.shape and norm.weight is not None
            and norm.normalized_shape == (d,) and d <= 4096)


def relu_dropout(u: torch.Tensor, p: float, dropout, force: bool = False) -> torch.Tensor:
    """``dropout(F.relu(u))`` (the feed-forward's hidden layer) in one kernel forward and one backward,
    with the tail's draws; ``dropout`` applies probability ``p`` where the kernels do not run."""
    if not _eligible(u, force):
        return dropout(F.relu(u))
    saving = torch.is_grad_enabled() and u.requires_grad
    return _ReluDropout.apply(u, p, saving)


def _eligible(x: torch.Tensor, force: bool) -> bool:
    return (ENABLED and triton is not None and (_runs_here(x) or force) and not torch.compiler.is_compiling()
            and not affine.transformed(x) and x.numel() < 2**31)


def _seed(p: float, device: torch.device) -> torch.Tensor:
    """A device tensor drawn from PyTorch's generator, so that a replayed CUDA graph draws anew."""
    if p > 0:
        return torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64)
    return torch.zeros(1, dtype=torch.int64, device=device)


def _runs_here(x: torch.Tensor) -> bool:
    return x.is_cuda


@functools.lru_cache(maxsize=None)
def _programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


class _AddDropoutNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, weight, bias, p, eps, dtype, saving):
        d = x.shape[-1]
        x2, h2 = x.reshape(-1, d).contiguous(), h.reshape(-1, d).contiguous()
        n = x2.shape[0]
        out = torch.empty(n, d, dtype=dtype, device=x.device)
        seed = _seed(p, x.device)
        acc = torch.float64 if dtype == torch.float64 else torch.float32  # fp64 for the tests' exact checks
        xhat = torch.empty(n, d, dtype=acc, device=x.device) if saving else out
        rstd = torch.empty(n, dtype=acc, device=x.device)
        block = max(4, triton.next_power_of_2(d))  # four uniforms per Philox call
        _forward[(triton.cdiv(n, ROWS_FORWARD),)](
            x2, h2, weight, bias, out, xhat, rstd, seed, n, d, float(p), 1.0 / (1.0 - p), eps,
            DROPOUT=p > 0, SAVE=saving, ROWS=ROWS_FORWARD, BLOCK=block, num_warps=4 if block <= 256 else 8,
            ACC=_TL_DTYPES[acc])
        if saving:
            ctx.save_for_backward(xhat, rstd, weight, seed)
            ctx.p, ctx.dtypes, ctx.shape = p, (x.dtype, h.dtype, weight.dtype, bias.dtype), x.shape
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight, seed = ctx.saved_tensors
        x_dtype, h_dtype, w_dtype, b_dtype = ctx.dtypes
        n, d = xhat.shape
        g = grad.reshape(n, d).contiguous()
        dx = torch.empty(n, d, dtype=x_dtype, device=g.device)
        dh = torch.empty(n, d, dtype=h_dtype, device=g.device)
        programs = min(_programs(g.device), triton.cdiv(n, ROWS_BACKWARD))
        partial = torch.empty(2, programs, d, dtype=xhat.dtype, device=g.device)
        p = ctx.p
        _backward[(programs,)](
            g, xhat, rstd, weight, seed, dx, dh, partial, n, d, float(p), 1.0 / (1.0 - p), programs,
            DROPOUT=p > 0, ROWS=ROWS_BACKWARD, BLOCK=max(4, triton.next_power_of_2(d)), num_warps=4,
            ACC=_TL_DTYPES[xhat.dtype])
        sums = partial.sum(1)
        return (dx.view(ctx.shape), dh.view(ctx.shape), sums[0].to(w_dtype), sums[1].to(b_dtype),
                None, None, None, None)


class _ReluDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, p, saving):
        u1 = u.contiguous().view(-1)
        out = torch.empty_like(u1)
        seed = _seed(p, u.device)
        grid = (triton.cdiv(u1.numel(), ELEMENTS),)
        _relu_dropout[grid](u1, out, seed, u1.numel(), float(p), 1.0 / (1.0 - p), DROPOUT=p > 0, QUARTER=ELEMENTS // 4)
        if saving:
            ctx.save_for_backward(u1, seed)
            ctx.p, ctx.shape = p, u.shape
        return out.view(u.shape)

    @staticmethod
    def backward(ctx, grad):
        u1, seed = ctx.saved_tensors
        g = grad.contiguous().view(-1).to(u1.dtype)
        du = torch.empty_like(u1)
        p = ctx.p
        _relu_dropout_backward[(triton.cdiv(u1.numel(), ELEMENTS),)](
            g, u1, seed, du, u1.numel(), float(p), 1.0 / (1.0 - p), DROPOUT=p > 0, QUARTER=ELEMENTS // 4)
        return du.view(ctx.shape), None, None


if triton is not None:
    _TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}

    @triton.jit
    def _rounded(v, dtype: tl.constexpr):
        """``v`` in ``dtype``, rounded to nearest even as PyTorch's casts; written out for bf16, where Triton's
        interpreter truncates (the tests' CPU route)."""
        if dtype == tl.bfloat16:
            bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            return bits.to(tl.float32, bitcast=True).to(dtype)
        else:
            return v.to(dtype)

    @triton.jit
    def _uniform_tile(seed, rows, ROWS: tl.constexpr, BLOCK: tl.constexpr):
        """[ROWS, BLOCK] uniforms for the elements of ``rows``, four per Philox call (one per element cost the
        kernels more than their memory traffic): elements 4j..4j+3 of a row share call j of that row."""
        groups = rows[:, None] * (BLOCK // 4) + tl.arange(0, BLOCK // 4)[None, :]
        r0, r1, r2, r3 = tl.rand4x(seed.to(tl.uint32), groups)
        return tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), [ROWS, BLOCK])

    @triton.jit
    def _wide(v):
        """``v`` in fp32, or fp64 if it is (the tests' exact checks)."""
        if v.dtype == tl.float64:
            return v
        else:
            return v.to(tl.float32)

    @triton.jit(do_not_specialize=["n"])
    def _forward(X, H, W, B, Out, Xhat, Rstd, Seed, n, d, p, scale, eps,
                 DROPOUT: tl.constexpr, SAVE: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
                 ACC: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK)
        inside = (rows < n)[:, None] & (cols < d)[None, :]
        offs = rows[:, None] * d + cols[None, :]
        x = tl.load(X + offs, mask=inside, other=0.0).to(ACC)
        h = tl.load(H + offs, mask=inside, other=0.0)
        if DROPOUT:
            keep = _uniform_tile(tl.load(Seed), rows, ROWS, BLOCK) >= p
            # F.dropout's result: the kept element times 1 / (1 - p), in h's dtype.
            h = _rounded(tl.where(keep, h.to(ACC) * scale, 0.0), h.dtype)
        s = x + h.to(ACC)
        mean = tl.sum(s, 1) / d
        centred = tl.where(inside, s - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / d + eps)
        xhat = centred * rstd[:, None]
        w = tl.load(W + cols, mask=cols < d, other=0.0).to(ACC)
        b = tl.load(B + cols, mask=cols < d, other=0.0).to(ACC)
        tl.store(Out + offs, _rounded(xhat * w[None, :] + b[None, :], Out.dtype.element_ty), mask=inside)
        if SAVE:
            tl.store(Xhat + offs, xhat, mask=inside)
            tl.store(Rstd + rows, rstd, mask=rows < n)

    @triton.jit(do_not_specialize=["n"])
    def _backward(G, Xhat, Rstd, W, Seed, DX, DH, Partial, n, d, p, scale, programs,
                  DROPOUT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        w = tl.load(W + cols, mask=cols < d, other=0.0).to(ACC)
        dw = tl.zeros([BLOCK], dtype=ACC)
        db = tl.zeros([BLOCK], dtype=ACC)
        for start in range(0, n, programs * ROWS):
            rows = start + pid * ROWS + tl.arange(0, ROWS)
            inside = (rows < n)[:, None] & (cols < d)[None, :]
            offs = rows[:, None] * d + cols[None, :]
            g = tl.load(G + offs, mask=inside, other=0.0).to(ACC)
            xhat = tl.load(Xhat + offs, mask=inside, other=0.0)
            rstd = tl.load(Rstd + rows, mask=rows < n, other=0.0)
            dw += tl.sum(g * xhat, 0)
            db += tl.sum(g, 0)
            wg = g * w[None, :]
            c1 = tl.sum(xhat * wg, 1) / d
            c2 = tl.sum(wg, 1) / d
            ds = (wg - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
            tl.store(DX + offs, _rounded(ds, DX.dtype.element_ty), mask=inside)
            # Autograd's route to h: the sum's gradient in h's dtype, then dropout's mask and scale.
            dh = _rounded(ds, DH.dtype.element_ty)
            if DROPOUT:
                keep = _uniform_tile(tl.load(Seed), rows, ROWS, BLOCK) >= p
                dh = _rounded(tl.where(keep, dh.to(ACC) * scale, 0.0), DH.dtype.element_ty)
            tl.store(DH + offs, dh, mask=inside)
        tl.store(Partial + pid * d + cols, dw, mask=cols < d)
        tl.store(Partial + (programs + pid) * d + cols, db, mask=cols < d)

    @triton.jit(do_not_specialize=["n"])
    def _relu_dropout(U, Out, Seed, n, p, scale, DROPOUT: tl.constexpr, QUARTER: tl.constexpr):
        # A program's BLOCK elements as four quarters: quarter k takes output k of the program's Philox calls
        # (no reshaping of the draws: a 1-D interleave of them cost more than the kernel's memory traffic).
        quarter: tl.constexpr = QUARTER
        first = tl.program_id(0) * 4 * QUARTER + tl.arange(0, QUARTER)
        r0, r1, r2, r3 = _quarters(Seed, tl.program_id(0) * QUARTER, QUARTER, DROPOUT)
        _relu_part(U, Out, first, n, r0, p, scale, DROPOUT)
        _relu_part(U, Out, first + quarter, n, r1, p, scale, DROPOUT)
        _relu_part(U, Out, first + 2 * quarter, n, r2, p, scale, DROPOUT)
        _relu_part(U, Out, first + 3 * quarter, n, r3, p, scale, DROPOUT)

    @triton.jit(do_not_specialize=["n"])
    def _relu_dropout_backward(G, U, Seed, DU, n, p, scale, DROPOUT: tl.constexpr, QUARTER: tl.constexpr):
        quarter: tl.constexpr = QUARTER
        first = tl.program_id(0) * 4 * QUARTER + tl.arange(0, QUARTER)
        r0, r1, r2, r3 = _quarters(Seed, tl.program_id(0) * QUARTER, QUARTER, DROPOUT)
        _relu_grad_part(G, U, DU, first, n, r0, p, scale, DROPOUT)
        _relu_grad_part(G, U, DU, first + quarter, n, r1, p, scale, DROPOUT)
        _relu_grad_part(G, U, DU, first + 2 * quarter, n, r2, p, scale, DROPOUT)
        _relu_grad_part(G, U, DU, first + 3 * quarter, n, r3, p, scale, DROPOUT)

    @triton.jit
    def _quarters(Seed, first_call, quarter: tl.constexpr, DROPOUT: tl.constexpr):
        if DROPOUT:
            r0, r1, r2, r3 = tl.rand4x(tl.load(Seed).to(tl.uint32), first_call + tl.arange(0, quarter))
        else:
            r0 = tl.zeros([quarter], dtype=tl.float32)
            r1, r2, r3 = r0, r0, r0
        return r0, r1, r2, r3

    @triton.jit
    def _relu_part(U, Out, offs, n, r, p, scale, DROPOUT: tl.constexpr):
        inside = offs < n
        u = _wide(tl.load(U + offs, mask=inside, other=0.0))  # compared wide: the interpreter's bf16 is not ordered
        y = tl.where(u > 0, u, 0.0)
        if DROPOUT:
            y = tl.where(r >= p, y * scale, 0.0)
        tl.store(Out + offs, _rounded(y, Out.dtype.element_ty), mask=inside)

    @triton.jit
    def _relu_grad_part(G, U, DU, offs, n, r, p, scale, DROPOUT: tl.constexpr):
        inside = offs < n
        g = tl.load(G + offs, mask=inside, other=0.0)
        u = _wide(tl.load(U + offs, mask=inside, other=0.0))
        if DROPOUT:  # dropout's gradient (masked, scaled, rounded), then relu's (where its output is positive)
            g = _rounded(tl.where(r >= p, _wide(g) * scale, 0.0), g.dtype)
        tl.store(DU + offs, tl.where(u > 0, g, 0.0).to(g.dtype), mask=inside)
