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

On CUDA in bf16/fp16 the kernel is PyTorch's flash attention (with its own attention dropout, the
same distribution as the padded path's). Elsewhere (CPU, fp32) the rows go back to the padded batch
for attention, as in the packed layout, with the same folded channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .packed import PackedPositions

CHANNELS = 8  # per 8 blocks (or fewer): flash attention wants head sizes in multiples of 8
BLOCKED = 1e4  # a logit offset that no softmax survives (exp(-1e4) == 0 in fp32)


class SampleAttention:
    """Per-forward metadata: the sequences of the packed rows and their folded bias channels."""

    def __init__(self, packed: PackedPositions, blocks: torch.Tensor, pad: torch.Tensor, bias: torch.Tensor,
                 head_dim: int, dtype: torch.dtype, read_rows_see_themselves: bool = False):
        """``blocks``: [S] block of each padded position; ``pad``: [B, S] True where not a key (padding
        and the read-only rows); ``bias``: [K, K] float logit offset of (query block, key block)."""
        b, s = pad.shape
        self.packed = packed
        self.max_len, self.scale = s, head_dim**-0.5
        cu = F.pad(packed.counts.cumsum(0), (1, 0))
        # Padding sequences: enough of at most s rows for any count of real rows (empty ones cost nothing).
        ends = (cu[-1] + s * torch.arange(1, -(-packed.capacity // s) + 1, device=pad.device)).clamp(max=packed.capacity)
        self.cu = torch.cat([cu, ends]).to(torch.int32)
        block = packed.pack(blocks.expand(b, s).unsqueeze(-1)).squeeze(-1)  # unused rows: block 0
        not_key = packed.pack(pad.unsqueeze(-1).to(torch.uint8)).squeeze(-1).bool()
        self.channels = channels = -(-bias.shape[0] // CHANNELS) * CHANNELS
        onehot = F.one_hot(block, channels).to(torch.float32)
        # Column block(k) of the bias, padded to CHANNELS; read-only rows are blocked for every block
        # (or every other block: ``read_rows_see_themselves``).
        k_extra = F.pad(bias.to(torch.float32), (0, 0, 0, channels - bias.shape[0])).t()[block]
        hidden = not_key.unsqueeze(-1) & (onehot == 0) if read_rows_see_themselves else not_key.unsqueeze(-1)
        k_extra = k_extra - BLOCKED * hidden
        # [rows, 3, 1, channels]: the query's, the key's and the value's (zero) extra channels.
        self.extras = torch.stack([onehot / self.scale, k_extra, torch.zeros_like(k_extra)], 1).unsqueeze(2).to(dtype)

    def attend(self, qkv: torch.Tensor, heads: int, dropout: float) -> torch.Tensor:
        """``qkv``: [rows, 3d] packed projections -> [rows, d] attention outputs."""
        n, three_d = qkv.shape
        d = three_d // 3
        q, k, v = _WithExtras.apply(qkv.view(n, 3, heads, d // heads), self.extras.expand(n, 3, heads, self.channels))
        if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
            out = attention(q, k, v, self.cu, self.max_len, dropout, self.scale)
        else:
            out = self._padded(q, k, v, dropout)
        return out[..., : d // heads].reshape(n, d)

    def _padded(self, q, k, v, dropout: float) -> torch.Tensor:
        """The same attention where flash kernels do not run (CPU, fp32): the rows scattered back into
        the padded batch, keys limited to each sample's kept rows (the folded channels do the rest)."""
        n, heads, e = q.shape
        b, s = self.packed.shape
        q, k, v = (self.packed.unpack(t.reshape(n, -1)).view(b, s, heads, e).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.packed.keep.view(b, 1, 1, s), dropout_p=dropout,
                                             scale=self.scale)
        return self.packed.pack(out.transpose(1, 2).reshape(b, s, -1)).view(n, heads, e)


class _WithExtras(torch.autograd.Function):
    """q, k and v with their extra channels, from one concatenation (views of it: flash attention reads
    rows at any stride); the backward gathers the three gradients' own channels in one copy."""

    @staticmethod
    def forward(ctx, qkv, extras):
        ctx.e = qkv.shape[-1]
        return tuple(torch.cat([qkv, extras], -1).unbind(1))

    @staticmethod
    def backward(ctx, *grads):
        e = ctx.e
        return torch.stack([g[..., :e] for g in grads], 1), None


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
