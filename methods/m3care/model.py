"""M3Care (Zhang et al., KDD 2022) on the two modalities of this benchmark: time series and notes.

Written from the spec (reference/baselines.md section 7), not from any reference code. Per batch:

1. unimodal encoders give one vector per modality, h_i^m in R^D, zero where the modality is missing;
2. a learned deep kernel per modality (Gaussian kernels at three bandwidths, mixed with a kernel on
   a learned MLP's features) gives the similarity of every pair of patients who both observe m;
   the similarities are averaged over the co-observed modalities and cut at a learned threshold;
3. a two-layer GCN per modality aggregates h^m from the similar patients *who observe m* (the
   column mask, switch ``gcn_mask``): a missing modality is imputed from the batch's neighbours, an
   observed one is gated with its aggregate;
4. two interaction blocks (self-attention over the two modality tokens) and an MLP head give logits.

Two numerical safeguards, each the plain formula's function wherever that was finite (so neither is
a switch; tests/test_m3care.py compares them with the plain formulas):

- the series encoder centres its attention keys over each stay's valid steps (``SeriesEncoderLayer``).
  Softmax ignores a shift common to a query's scores, so that shift, ``q_i . mean(k)``, gets no
  gradient and drifts as the weights grow: in a CPU reproduction of the full phenotyping task the
  lowest logsumexp of a query row fell from -5.9 after one epoch to -63 by epoch 19, and kept
  falling while the learning rate was high. cuDNN's attention backward, which PyTorch picks by
  default for masked attention on H100/H200 (pytorch/pytorch#196678), overflows on a row whose
  logsumexp is below -ln(FLT_MAX) = -88.7 when the key length is 64 mod 128 (the 192, 320 and 448
  width buckets: about half the full task's steps): the loss stays finite, the gradient is NaN, and
  Adam's update makes the weights NaN. With centred keys a query's scores average 0 over the valid
  keys, so its logsumexp is at least log(valid steps) >= 0 whatever the weights (README:
  "Non-finite loss");
- the gate ``lambda = a / (a + b)`` is evaluated as ``sigmoid(log a - log b)``: where both gate logits
  are below about -88 both sigmoids round to 0 and the quotient is 0/0, also in the backward of a
  missing modality's row, whose mixed value ``torch.where`` discards.

The stability term ``sum_m | ||phi_m(H^m)||_F - ||H^m||_F |`` is returned as ``aux``, weighted by
``lambda_stab``, so the trainer adds it to whatever loss the method computes. Switch
``stability_gradient``: ``phi`` (default) evaluates it on a detached H, so it trains the kernel MLPs
phi_m only; ``encoders`` is the spec's formula taken literally, whose gradient also reaches the
encoders through H.

Predictions depend on the other patients in the batch (steps 2-3): the harness evaluates in fixed
batches of ``fastpath.EVAL_BATCH`` rows in the test split's row order, so they are reproducible.
Shape-static and free of host reads (a step can be captured in a CUDA graph).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.backbones.dropout import Dropout, attention
from benchmark.backbones.flexcare import Batch, EncoderLayer, ModelOutput
from benchmark.backbones.sequence import masked_mean, sinusoid, valid_steps

MODALITIES = ("ehr", "note")
GCN_MASKS = ("column", "outer")
KERNEL_FORMS = ("product", "convex")
STABILITY_GRADIENTS = ("phi", "encoders")


class SeriesEncoderLayer(EncoderLayer):
    """The FlexCare backbone's post-norm layer (same weights) with each stay's keys centred over its
    valid steps before attention: every score of a query drops by the same ``q_i . mean(k)``, so the
    attention is unchanged, and a query's scores average 0 over the valid keys, so its logsumexp is at
    least log(valid steps) >= 0 (Jensen). A query row whose scores all lie far below zero (logsumexp
    below -88.7) makes cuDNN's attention backward overflow (module docstring)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, d]; ``mask`` [B, 1, 1, T] bool, True at a valid key (at least one per row)."""
        qkv = self.qkv(x)
        b, s, _ = qkv.shape
        d = qkv.shape[-1] // 3
        q, k, v = qkv.view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = attention(q, centred_keys(k, mask), v, mask, self.dropout if self.training else 0.0)
        x = self.norm1(x + self.drop(self.proj(a.transpose(1, 2).reshape(b, s, d))))
        return self.norm2(x + self.drop(self.ff2(self.drop(F.relu(self.ff1(x))))))


def centred_keys(k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``k`` [B, H, T, dh] minus its mean over the valid keys of each sample (``mask`` [B, 1, 1, T]),
    computed in fp32 at least and returned in ``k``'s dtype. Shape-static, no host reads."""
    wide = k.to(torch.promote_types(k.dtype, torch.float32))
    w = mask.transpose(-1, -2).to(wide.dtype)  # [B, 1, T, 1]
    mean = (wide * w).sum(-2, keepdim=True) / w.sum(-2, keepdim=True).clamp_min(1)
    return (wide - mean).to(k.dtype)


def gate_share(bar_logit: torch.Tensor, own_logit: torch.Tensor) -> torch.Tensor:
    """``a / (a + b)`` with ``a = sigmoid(bar_logit)``, ``b = sigmoid(own_logit)``, as
    ``sigmoid(log a - log b)`` in fp32 at least: the same value, finite where both sigmoids round to 0."""
    dtype = torch.promote_types(torch.promote_types(bar_logit.dtype, own_logit.dtype), torch.float32)
    return torch.sigmoid(F.logsigmoid(bar_logit.to(dtype)) - F.logsigmoid(own_logit.to(dtype)))


class GraphConvolution(nn.Module):
    """``A (X W) + b`` without adjacency normalisation; W, b ~ U(+-1/sqrt(out)) (Kipf & Welling's init)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        bound = 1 / math.sqrt(d_out)
        self.weight = nn.Parameter(torch.empty(d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound))

    def forward(self, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return adj @ (x @ self.weight) + self.bias


class GCN(nn.Module):
    """Two graph convolutions with ReLU: the auxiliary (neighbourhood) representation h-bar."""

    def __init__(self, d: int):
        super().__init__()
        self.first, self.second = GraphConvolution(d, d), GraphConvolution(d, d)

    def forward(self, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.second(adj, F.relu(self.first(adj, x))))


class InteractionBlock(nn.Module):
    """One multimodal interaction block as the original's: token embedding, positions, residual
    self-attention and feed-forward, ReLU after the block. No LayerNorm: the original's pre-norm
    wrapper never feeds its normalised input to the sub-layers (spec 7.1(6)); its unused head is left out."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.embed = nn.Linear(d, d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        x = self.embed(x) + sinusoid(s, d, x.device).to(x.dtype)
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = attention(q, k, v, None, self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, s, d)))
        x = x + self.drop(self.ff2(self.drop(F.relu(self.ff1(x)))))
        return F.relu(x)


def multi_bandwidth_gaussian(x: torch.Tensor, pair: torch.Tensor, kernel_num: int = 3,
                             kernel_mul: float = 2.0) -> torch.Tensor:
    """Mean over bandwidths b * kernel_mul^k (k centred on 0) of exp(-||x_i - x_j||^2 / b_k).

    The base bandwidth b is the mean squared distance over the distinct co-observed pairs
    (``pair`` [B, B] 0/1), without gradient; b = 1 when it is below 1e-3 (e.g. one observed row).
    """
    x = x.float()
    sq = (x * x).sum(1)
    dist = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x @ x.t()).clamp_min(0)
    with torch.no_grad():
        off_diagonal = pair.sum() - pair.diagonal().sum()
        b = (dist * pair).sum() / off_diagonal.clamp_min(1)
        b = torch.where(b < 1e-3, torch.ones_like(b), b)
    scales = [kernel_mul ** (k - kernel_num // 2) for k in range(kernel_num)]
    return torch.stack([torch.exp(-dist / (b * s)) for s in scales]).mean(0)


class M3Care(nn.Module):
    #: The trainer may hand ``forward`` length-sorted parts of a batch: each sample is encoded on its
    #: own, then the parts are joined before the batch-level graph (a permutation-equivariant step).
    accepts_parts = True

    def __init__(
        self,
        num_labels: int,
        ehr_dim: int = 76,
        note_dim: int = 768,
        hidden: int = 128,
        dropout: float = 0.1,
        heads: tuple[int, int] = (4, 1),
        kernel_num: int = 3,
        kernel_mul: float = 2.0,
        gcn_mask: str = "column",
        kernel_form: str = "product",
        lambda_stab: float = 0.01,
        stability_gradient: str = "phi",
    ):
        super().__init__()
        if gcn_mask not in GCN_MASKS:
            raise ValueError(f"gcn_mask must be one of {GCN_MASKS}, got {gcn_mask!r}")
        if kernel_form not in KERNEL_FORMS:
            raise ValueError(f"kernel_form must be one of {KERNEL_FORMS}, got {kernel_form!r}")
        if stability_gradient not in STABILITY_GRADIENTS:
            raise ValueError(f"stability_gradient must be one of {STABILITY_GRADIENTS}, got {stability_gradient!r}")
        d = hidden
        self.gcn_mask, self.kernel_form, self.lambda_stab = gcn_mask, kernel_form, lambda_stab
        self.stability_gradient = stability_gradient
        self.kernel_num, self.kernel_mul = kernel_num, kernel_mul
        self.ehr_proj = nn.Linear(ehr_dim, d)
        self.ehr_layer = SeriesEncoderLayer(d, heads[0], 4 * d, dropout)
        self.note_proj = nn.Linear(note_dim, d)
        self.phi = nn.ModuleList(_mlp(d) for _ in MODALITIES)
        self.norm = nn.BatchNorm1d(d)  # shared by both modalities and both kernels, as the original
        self.eps = nn.Parameter(torch.full((len(MODALITIES),), 2.0))
        self.theta = nn.Parameter(torch.tensor(2.0))
        self.gcn = nn.ModuleList(GCN(d) for _ in MODALITIES)
        self.gate_bar = nn.ModuleList(nn.Linear(d, 1) for _ in MODALITIES)
        self.gate_own = nn.ModuleList(nn.Linear(d, 1) for _ in MODALITIES)
        self.token_type = nn.Embedding(len(MODALITIES), d)
        nn.init.normal_(self.token_type.weight, std=0.02)
        self.blocks = nn.ModuleList(InteractionBlock(d, h, 4 * d, dropout) for h in heads)
        self.head = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.ReLU(), Dropout(dropout), nn.Linear(2 * d, num_labels))

    def forward(self, batch: Batch | list[Batch]) -> ModelOutput:
        parts = batch if isinstance(batch, list) else [batch]
        h, present = (torch.cat(x) for x in zip(*(self._encode(p) for p in parts)))
        similarity, stab = self._similarity(h, present)
        imputed, aggregated = self._impute(h, present, similarity)
        x = imputed + self.token_type.weight.to(imputed.dtype)
        for block in self.blocks:
            x = block(x)
        return ModelOutput(
            logits=self.head(x.flatten(1)),
            aux=self.lambda_stab * stab,
            extras={"imputed": imputed, "aggregated": aggregated, "similarity": similarity,
                    "has_ehr": present[:, 0], "has_note": present[:, 1],
                    "patient_id": torch.cat([p.patient_id for p in parts])},
        )

    def _encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, 2, D] (ReLU'd, zero where missing) and presence [B, 2] bool."""
        t = batch.ehr.shape[1]
        x = self.ehr_proj(batch.ehr)
        x = x + sinusoid(t, x.shape[-1], x.device).to(x.dtype)
        # A stay of length 0 attends to its first (padding) step, so no attention row is empty.
        keys = valid_steps(batch.ehr_len.clamp_min(1), t)[:, None, None, :]
        h_ehr = F.relu(masked_mean(self.ehr_layer(x, keys), batch.ehr_len))
        h_note = F.relu(self.note_proj(masked_mean(batch.note, batch.note_len)))
        present = torch.stack([batch.ehr_len > 0, batch.note_len > 0], 1)
        h = torch.stack([h_ehr, h_note.to(h_ehr.dtype)], 1)
        return h * present.unsqueeze(-1).to(h.dtype), present

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """The shared BatchNorm; a training batch of one row uses the running statistics."""
        if self.training and x.shape[0] < 2:
            n = self.norm
            return F.batch_norm(x, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)
        return self.norm(x)

    def _kernel(self, h: torch.Tensor, phi: torch.Tensor, pair: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The modality's deep kernel K^m [B, B] (Liu et al. 2020's form, switch ``kernel_form``)."""
        gauss = lambda z: multi_bandwidth_gaussian(self._norm(z.float()), pair, self.kernel_num, self.kernel_mul)  # noqa: E731
        deep, plain, w = gauss(F.relu(phi)), gauss(h), torch.sigmoid(eps)
        if self.kernel_form == "product":  # the original: [(1 - w) K_deep + w] * K_plain
            return ((1 - w) * deep + w) * plain
        return (1 - w) * deep + w * plain  # the imml port's convex mix

    def _similarity(self, h: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The thresholded fused similarity S~ [B, B] and the stability term (unweighted)."""
        m = present.float()
        fused, counts, stab = 0.0, 0.0, h.new_zeros((), dtype=torch.float32)
        for i, phi_net in enumerate(self.phi):
            hi, mi = h[:, i], m[:, i]
            pair = mi.unsqueeze(1) * mi.unsqueeze(0)
            phi = phi_net(hi)
            fused = fused + self._kernel(hi, phi, pair, self.eps[i]) * pair
            counts = counts + pair
            stab = stab + self._stability(phi_net, hi, phi, mi)
        s = fused / counts.clamp_min(1)  # pairs with no co-observed modality: 0, not 0/0
        t = torch.sigmoid(self.theta)
        # Values above t are kept as they are (S), the rest zeroed; t is learned through the ReLU branch.
        return F.relu(s - t) + (s > t).float() * t.detach(), stab

    def _stability(self, phi_net: nn.Module, hi: torch.Tensor, phi: torch.Tensor, mi: torch.Tensor) -> torch.Tensor:
        """| ||phi_m(H^m)||_F - ||H^m||_F | over the batch's observed rows (a missing row's phi is the bias).

        Through H, the |.| gradient keeps its full size however small the term is, and on the encoders
        it outweighs BCE's about 100-fold (CPU reproduction on the diagnosis task's missingness); Adam
        then steers the encoders by it, the note path shrinks, and where most stays have no time
        series the predictions hardly vary between patients. ``phi`` detaches H (one more phi
        forward) so that the encoders learn from the task loss alone.
        """
        if self.stability_gradient == "phi":
            hi = hi.detach()
            phi = phi_net(hi)
        return (torch.linalg.norm((phi * mi.unsqueeze(1).to(phi.dtype)).float()) - torch.linalg.norm(hi.float())).abs()

    def _impute(self, h: torch.Tensor, present: torch.Tensor, sim: torch.Tensor):
        """h~ [B, 2, D]: an observed modality gated with its neighbourhood aggregate, a missing one
        replaced by it; and the aggregates h-bar [B, 2, D]."""
        m = present.float()
        tilde, bars = [], []
        for i, gcn in enumerate(self.gcn):
            hi, mi = h[:, i].float(), m[:, i]
            # Column mask: aggregate only from neighbours who observe m (switch gcn_mask; "outer" is
            # the original code's mask, which also empties the row of a patient missing m).
            adj = sim * (mi.unsqueeze(0) if self.gcn_mask == "column" else mi.unsqueeze(1) * mi.unsqueeze(0))
            bar = gcn(adj, hi)
            lam = gate_share(self.gate_bar[i](bar), self.gate_own[i](hi))  # a / (a + b), finite
            mixed = lam * bar + (1 - lam) * hi
            tilde.append(torch.where(present[:, i : i + 1], mixed, bar))
            bars.append(bar)
        return torch.stack(tilde, 1), torch.stack(bars, 1)


def _mlp(d: int) -> nn.Sequential:
    """phi_m: the deep kernel's feature map D -> D -> D -> D."""
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
