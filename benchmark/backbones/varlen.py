"""Attention over each sample's real positions only, on the packed rows (``packed.py``).

With the position-wise layers packed, attention was the one part still run over the padded batch:
a full-track batch pads ~13.5k real positions to ~60k, so the kernels did ~20x the work of the real
pairs and the rows were scattered out and gathered back in every layer. Here the packed rows are the
sequences of a variable-length ("varlen") flash attention: sample i is rows ``cu[i]:cu[i+1]``.

Varlen flash attention takes no mask, so FlexCare's two masks are folded into the dot product:
- The structural bias depends only on the blocks (task, MM, EHR, note; or the released layout's 10)
  of the query and the key, so it is a low-rank product: each query gets extra channels (8 per 8
  blocks), the one-hot of its block times 1/scale, and each key the column of the KxK bias for its block. ``scale * q.k`` then gains
  exactly ``bias[block(q), block(k)]``: 1/scale = sqrt(head size) is exact in bf16 for head sizes
  16, 64 (paper size) and 256; for others the bias is off by bf16 rounding, at most 0.4 %.
- Key padding: the rows kept only to be read (the CLS token of a missing modality) are no keys: their
  key channels get ``-BLOCKED`` for every block, as the reference's padding mask, which hides them
  from every query, themselves included. Under the blocking structural mask such a row would then
  see no key at all, so there (``read_rows_see_themselves``, as the padded layout's mask) they stay
  keys for their own block only; a read row is alone in its block within its sample.
The padding of the packed rows (unused capacity) is never read. Since harness 0.6.0 it forms sequences of
its own, appended after the batch's (at most ``max_len`` rows each, so the kernels' grid stays that of
the batch): the kernels then write every row, and the padding rows' outputs are finite (they start as
zero rows), so nothing stale reaches a weight gradient, and no pass over all rows has to zero them
(4 per layer before, 0.4 ms of a ``mimic3-phe`` step on an H200). Their gradients are exactly zero,
since no loss reads them. The padding sequences change how far flash attention advances the CUDA
generator per call, so GPU runs draw other dropout masks than under 0.5.0.
Since harness 0.7.0 the extra channels come out of the q, k, v projection itself (``_Projections``): they
are linear in a few columns per row (its block's one-hot, whether it is a key, a 1 for the bias), so the
rows are widened by those columns and the weight by constant rows, and no concatenation or stack of the
channels runs; the output projection reads the attention output with its channels (zero, since v's are
zero) through a weight with zero columns there. The same sums, in another order (fp64: tests/test_flexcare.py).

On CUDA in bf16/fp16 the kernel is PyTorch's flash attention (with its own attention dropout, the
same distribution as the padded path's). Elsewhere (CPU, fp32) the rows go back to the padded batch
for attention, as in the packed layout, with the same folded channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import affine
from .packed import PackedPositions

CHANNELS = 8  # per 8 blocks (or fewer): flash attention wants head sizes in multiples of 8
BLOCKED = 1e4  # a logit offset that no softmax survives (exp(-1e4) == 0 in fp32)


class SampleAttention:
    """Per-forward metadata: the sequences of the packed rows and the inputs of their folded bias channels."""

    def __init__(self, packed: PackedPositions, blocks: torch.Tensor, pad: torch.Tensor, bias: torch.Tensor,
                 head_dim: int, dtype: torch.dtype, read_rows_see_themselves: bool = False):
        """``blocks``: [S] block of each padded position; ``pad``: [B, S] True where not a key (padding
        and the read-only rows); ``bias``: [K, K] float logit offset of (query block, key block)."""
        b, s = pad.shape
        self.packed = packed
        self.max_len, self.scale, self.head_dim = s, head_dim**-0.5, head_dim
        cu = F.pad(packed.counts.cumsum(0), (1, 0))
        # Padding sequences: enough of at most s rows for any count of real rows (empty ones cost nothing).
        ends = (cu[-1] + s * torch.arange(1, -(-packed.capacity // s) + 1, device=pad.device)).clamp(max=packed.capacity)
        self.cu = torch.cat([cu, ends]).to(torch.int32)
        block = packed.pack(blocks.expand(b, s).unsqueeze(-1)).squeeze(-1)  # unused rows: block 0
        not_key = packed.pack(pad.unsqueeze(-1).to(torch.uint8)).squeeze(-1).to(torch.float32)
        self.channels = c = -(-bias.shape[0] // CHANNELS) * CHANNELS
        onehot = F.one_hot(block, c).to(torch.float32)
        # The extra channels are linear in a few per-row features, so the q, k, v projection makes them
        # itself, from the input rows widened by these columns (``_Projections``): the one-hot of the row's
        # block, [not_key x one-hot], not_key, and a 1 that carries the projection's bias.
        feats = [onehot] + ([onehot * not_key[:, None]] if read_rows_see_themselves else []) + [
            not_key[:, None], torch.ones_like(not_key)[:, None]]
        width = sum(f.shape[1] for f in feats)
        feats.append(onehot.new_zeros(len(onehot), -(-width // 8) * 8 - width))  # GEMM-aligned row width
        self.features = torch.cat(feats, 1).to(dtype)
        self.ones_column = width - 1
        # Rows of the extra channels over the feature columns, for q, k and v: q's is the one-hot times
        # 1/scale; k's the column block(k) of the bias (padded to ``c``), less BLOCKED for a read-only row
        # (for every block, or every other block: ``read_rows_see_themselves``); v's is zero.
        eye = torch.eye(c, device=pad.device)
        k_rows = [F.pad(bias.to(torch.float32), (0, c - bias.shape[0], 0, c - bias.shape[0]))]
        if read_rows_see_themselves:
            k_rows.append(BLOCKED * eye)
        k_rows.append(torch.full((c, 1), -BLOCKED, device=pad.device))
        k_extra = torch.cat(k_rows, 1)
        q_extra = torch.cat([eye / self.scale, eye.new_zeros(c, k_extra.shape[1] - c)], 1)
        rows = torch.stack([q_extra, k_extra, torch.zeros_like(k_extra)])  # [3, c, feature columns]
        self.extra_rows = F.pad(rows, (0, self.features.shape[1] - rows.shape[2]))

    def attend(self, x: torch.Tensor, qkv: nn.Linear, heads: int, dropout: float) -> torch.Tensor:
        """``x``: [rows, d] packed inputs -> [rows, heads * (head size + channels)] attention outputs, the
        channels past each head's size zero (``project`` reads them so)."""
        q, k, v = _Projections.apply(x, self._qkv_weight(qkv, heads), self.features, affine.compute_dtype(x), heads)
        if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
            out = attention(q, k, v, self.cu, self.max_len, dropout, self.scale)
        else:
            out = self._padded(q, k, v, dropout)
        return out.reshape(len(x), -1)

    def project(self, a: torch.Tensor, proj: nn.Linear, heads: int) -> torch.Tensor:
        """``proj`` of the attention outputs of ``attend``, its weight given zero columns for the channels."""
        d = proj.out_features
        weight = F.pad(proj.weight.view(d, heads, self.head_dim), (0, self.channels)).view(d, -1)
        return affine.linear_of(a, weight, proj.bias)

    def _qkv_weight(self, qkv: nn.Linear, heads: int) -> torch.Tensor:
        """[3 * heads * (head size + channels), d + feature columns]: each head's q, k, v rows of ``qkv``
        with the bias in the column of the 1, then the extra channels' rows."""
        d, e, f = qkv.in_features, self.head_dim, self.features.shape[1]
        w = qkv.weight.view(3, heads, e, d)
        bias = qkv.bias.view(3, heads, e, 1)
        real = torch.cat([w, w.new_zeros(3, heads, e, self.ones_column), bias,
                          w.new_zeros(3, heads, e, f - self.ones_column - 1)], -1)
        extra = F.pad(self.extra_rows, (d, 0)).unsqueeze(1).expand(3, heads, self.channels, d + f)
        return torch.cat([real, extra.to(real.dtype)], 2).reshape(-1, d + f)

    def _padded(self, q, k, v, dropout: float) -> torch.Tensor:
        """The same attention where flash kernels do not run (CPU, fp32): the rows scattered back into
        the padded batch, keys limited to each sample's kept rows (the folded channels do the rest)."""
        n, heads, e = q.shape
        b, s = self.packed.shape
        q, k, v = (self.packed.unpack(t.reshape(n, -1)).view(b, s, heads, e).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.packed.keep.view(b, 1, 1, s), dropout_p=dropout,
                                             scale=self.scale)
        return self.packed.pack(out.transpose(1, 2).reshape(b, s, -1)).view(n, heads, e)


class _Projections(torch.autograd.Function):
    """q, k and v with their extra channels from one product: the rows ``x`` widened by the feature columns,
    times the widened weight (views of one output: flash attention reads rows at any stride). It replaces a
    projection, a concatenation with the channels and, in the backward, a stack of the three gradients
    (0.8 ms of a ``mimic3-phe`` step on an H200): the backward takes dq, dk and dv as they come. Half
    products are summed into fp32 results where PyTorch can (``affine.matmul``)."""

    @staticmethod
    def forward(ctx, x, weight, features, dtype, heads):
        n, d = x.shape
        rows = torch.empty(n, d + features.shape[1], dtype=dtype, device=x.device)
        rows[:, :d].copy_(x)
        rows[:, d:].copy_(features)
        wc = weight.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = rows @ wc.t()
        ctx.save_for_backward(rows, wc)
        ctx.x_dtype, ctx.w_dtype, ctx.d = x.dtype, weight.dtype, d
        return tuple(out.view(n, 3, heads, -1).unbind(1))

    @staticmethod
    def backward(ctx, *grads):
        rows, wc = ctx.saved_tensors
        n, d = len(rows), ctx.d
        g = [grad.reshape(n, -1).to(wc.dtype) for grad in grads]
        parts = wc.view(3, -1, wc.shape[1])
        dx = dw = None
        with torch.autocast(rows.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                dx = affine.matmul(g[0], parts[0, :, :d])
                for i in (1, 2):
                    dx = affine.matmul(g[i], parts[i, :, :d], add_to=dx)
                dx = dx.to(ctx.x_dtype)
            if ctx.needs_input_grad[1]:
                dw = torch.cat([affine.matmul(gi.t(), rows) for gi in g]).to(ctx.w_dtype)
        return dx, dw, None, None, None


def attention(q, k, v, cu, max_len: int, dropout: float, scale: float) -> torch.Tensor:
    """Flash attention within each sequence ``cu[i]:cu[i+1]`` (at most ``max_len`` rows; ``cu[-1]`` is
    every row) of [rows, heads, e] bf16/fp16 CUDA tensors."""
    return _FlashVarlen.apply(q, k, v, cu, max_len, dropout, scale)


class _FlashVarlen(torch.autograd.Function):
    """PyTorch's varlen flash attention kernels (forward and backward), with attention dropout."""

    @staticmethod
    def forward(ctx, q, k, v, cu, max_len, dropout, scale):
        out, lse, rng, unused, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, max_len, max_len, dropout, False, False, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse, cu, rng, unused)
        ctx.max_len, ctx.dropout, ctx.scale = max_len, dropout, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse, cu, rng, unused = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad.contiguous(), q, k, v, out, lse, cu, cu, ctx.max_len, ctx.max_len, ctx.dropout, False,
            rng, unused, scale=ctx.scale)
        return dq, dk, dv, None, None, None, None
