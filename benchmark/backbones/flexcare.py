"""FlexCare (Xu et al., KDD 2024) on the two modalities of this benchmark: time series and notes.

Written from the spec (reference/miracl_flexcare.md §10), not from the authors' code. By default
(``fusion_layout="released"``, harness >= 0.3.0) it is the function of the authors' released FlexCare
with the chest X-ray absent: all seven fusion and CLS tokens stay in the sequence, as described under
the switch below. The layout of harness < 0.3.0 (``"two_modality"``) keeps three of them: the
multimodal token MM, EHR-CLS and NOTE-CLS, with the sequence
``[task | MM | EHR-CLS ehr_1..ehr_T | NOTE-CLS tok_1..tok_n]``.

Named switch ``structural_mask``:
  "additive" (default, reproduces the reference, B9): the cross-modal mask is a float 0/1 matrix that
    PyTorch *adds* to the attention logits, so "blocked" pairs get a +1 bias and nothing is blocked;
    only padding removes keys.
  "blocking": the mask the reference intended — task sees all, MM sees the modality tokens, each
    modality block sees only itself.
Key padding, as the reference's ``src_key_padding_mask``: a padded position is no key for any query,
itself included. The CLS token of a missing modality is such a position, and it is still read (for
L_ortho). Under "blocking" it would see no key at all, so there it sees itself. Before harness 0.2.0,
it saw itself under both masks, which differed from the reference.
Switch ``modalities`` ("both" default; "ehr" or "note" for ablations): the other modality is treated
as missing for every sample.
Named switch ``fusion_layout`` (reference/miracl_flexcare.md §10.10):
  "released" (default since harness 0.3.0): the function of the authors' released FlexCare with the chest X-ray absent. Sequence
    ``[task | MM-CLS | X12 | X13 | X23 | EHR-CLS ehr_1..ehr_T | CXR-CLS | NOTE-CLS tok_1..tok_n]``
    (the X-ray patches are padded keys whose outputs feed nothing, so they are left out exactly). The
    four fusion tokens are never key-padded; CXR-CLS, a learned token, is a query only (its key is
    padded). The cross-modal mask is ``generate_cross_modal_mask``'s: the task token sees all; a fusion
    token sees itself and the content (not the CLS) of its modalities; a modality's CLS sees itself and
    its content; content sees its own content only. Under "additive" every other pair gets the +1 bias.
    MoE and pooling take the 7 tokens ``[MM-CLS, X12, X13, X23, EHR-CLS, CXR-CLS, NOTE-CLS]`` with their
    availability (only X13, EHR-CLS and NOTE-CLS can be available), and L_ortho runs over all 7.
  "two_modality" (harness < 0.3.0; records of that version ran it): the three-token layout above, a
    two-modality reading close to MIRACL's 2-modality mask (§10.9): MM plus each modality's CLS inside
    its block, L_ortho over 3 tokens. It is a different function (logits up to 0.52 apart, §10.10).
The model returns logits (not probabilities) and, as ``aux``, its own regularisers
``0.5 * L_ortho + L_moe``, which every loss is added to.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import affine, fused
from .dropout import Dropout, attention
from .packed import PackedPositions, scatter_rows
from .varlen import BLOCKED, SampleAttention

if TYPE_CHECKING:
    from ..method import TaskInfo

STRUCTURAL_MASKS = ("additive", "blocking")
FUSION_LAYOUTS = ("two_modality", "released")
PACKED_LAYOUTS = ("packed", "varlen")  # token layouts that run over the real positions only
MODALITIES = ("both", "ehr", "note")
TASK_INDEX = {"phenotyping": 2, "diagnosis": 5}  # FlexCare's task-embedding rows
MAX_POSITIONS = 600


@dataclass
class NoteRows:
    """A batch's note tokens without their padding, for models that run over real positions only.

    ``values``: [capacity, note_dim] the tokens' frozen embeddings as cached (float16), the batch's
    samples one after another, then the cache's zero row in the unused slots; ``index``: [capacity]
    each row's place in the padded [B * width] layout (B * width for an unused slot)."""

    values: torch.Tensor
    index: torch.Tensor
    width: int

    def padded(self, h: torch.Tensor, b: int) -> torch.Tensor:
        """Rows ``h`` [capacity, e] at their padded places, [B, width, e]; zeros at the padding."""
        return scatter_rows(h, self.index, b * self.width).view(b, self.width, -1)


@dataclass
class Batch:
    """One batch of inputs, already on the device. Length 0 means the modality is missing."""

    ehr: torch.Tensor  # [B, T, 76]
    ehr_len: torch.Tensor  # [B] long
    note: torch.Tensor | None  # [B, n, note_dim] frozen encoder token embeddings; None with ``note_rows``
    note_len: torch.Tensor  # [B] long
    patient_id: torch.Tensor  # [B] long
    # Known on the host, not read from the tensors: an upper bound on sum(ehr_len + note_len), so that a
    # model can pack the real positions into a fixed number of slots (None: no bound known).
    tokens: int | None = None
    # The notes as their real tokens only (``Split.batch(..., note_rows=True)``), in place of ``note``:
    # handed only to models that pack (``FlexCare.token_layout``), which never read the padding.
    note_rows: NoteRows | None = None

    @property
    def note_width(self) -> int:
        return self.note.shape[1] if self.note_rows is None else self.note_rows.width


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, C]
    aux: torch.Tensor  # scalar: the backbone's own regularisers, already weighted
    extras: dict = field(default_factory=dict)  # e.g. per-modality summary tokens


class EncoderLayer(nn.Module):
    """Post-norm transformer layer (as ``nn.TransformerEncoderLayer``: ReLU, dropout 0.1) on SDPA."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float = 0.1):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = Dropout(dropout)  # PCG64 masks on the CPU (dropout.py)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packed: PackedPositions | None = None,
                samples: SampleAttention | None = None) -> torch.Tensor:
        """``x``: [B, S, d], or [N, d] real positions with ``packed``; attention then runs padded with
        ``mask``, or over each sample's real positions with ``samples`` (varlen.py)."""
        dropout = self.dropout if self.training else 0.0
        if samples is not None:
            # q, k, v with their folded bias channels from one product, and the projection reading the
            # attention outputs channels included (varlen.py).
            h = samples.project(samples.attend(x, self.qkv, self.heads, dropout), self.proj, self.heads)
        else:
            qkv = affine.linear(x, self.qkv)
            if packed is not None:
                qkv = packed.unpack(qkv)
            b, s, _ = qkv.shape
            d = qkv.shape[-1] // 3
            q, k, v = qkv.view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = attention(q, k, v, mask, dropout).transpose(1, 2).reshape(b, s, d)
            if packed is not None:
                a = packed.pack(a)
            h = affine.linear(a, self.proj)
        # Each tail, norm(x + dropout(h)), and the feed-forward's dropout(relu(.)) are one kernel forward and
        # one backward each on CUDA (fused.py).
        x = fused.add_dropout_norm(x, h, dropout, self.norm1, self.drop)
        h = fused.relu_dropout(affine.linear(x, self.ff1), dropout, self.drop)
        return fused.add_dropout_norm(x, affine.linear(h, self.ff2), dropout, self.norm2, self.drop)


class NoisyTopKMoE(nn.Module):
    """Shazeer et al.'s noisily gated top-k mixture, gate conditioned on the task token.

    Computed densely (all experts on all tokens, then gated): the same function as sparse dispatch,
    and faster for the few hundred tokens per batch FlexCare routes.
    """

    def __init__(self, d: int, experts: int, k: int):
        super().__init__()
        self.k = k
        self.w_gate = nn.Parameter(torch.zeros(d, experts))
        self.w_task = nn.Parameter(torch.zeros(d, experts))
        self.w_noise = nn.Parameter(torch.zeros(d, experts))
        self.w1 = nn.Parameter(torch.empty(experts, d, d))
        self.b1 = nn.Parameter(torch.zeros(experts, d))
        self.w2 = nn.Parameter(torch.empty(experts, d, d))
        self.b2 = nn.Parameter(torch.zeros(experts, d))
        for w in (self.w1, self.w2):  # nn.Linear's default init, per expert
            for e in range(experts):
                nn.init.kaiming_uniform_(w[e], a=5**0.5)

    def forward(self, x: torch.Tensor, q: torch.Tensor, avail: torch.Tensor):
        """x, q: [T, d] tokens and their task token; avail: [T] bool. Returns (out, balance loss)."""
        clean = (x @ self.w_gate + q @ self.w_task).float()  # gating in fp32, also under autocast
        experts = clean.shape[-1]
        if self.training:
            std = F.softplus(x @ self.w_noise) + 0.01
            logits = clean + torch.randn_like(clean) * std
        else:
            logits = clean
        top = logits.topk(min(self.k + 1, experts), dim=-1)
        gates = torch.zeros_like(logits).scatter(
            -1, top.indices[:, : self.k], torch.softmax(top.values[:, : self.k], dim=-1)
        )
        gates = gates * avail.unsqueeze(-1)
        h = F.relu(torch.einsum("td,edh->teh", x, self.w1) + self.b1)
        out = (gates.unsqueeze(-1) * (torch.einsum("teh,ehd->ted", h, self.w2) + self.b2)).sum(1)
        if self.training and self.k < experts:
            # Smooth probability of each expert being in the top k under resampled noise.
            # Standard normal CDF as ndtr: Normal(0, 1).cdf validates its argument on the host.
            in_top = logits > top.values[:, self.k : self.k + 1]
            p_in = torch.special.ndtr((clean - top.values[:, self.k : self.k + 1]) / std)
            p_out = torch.special.ndtr((clean - top.values[:, self.k - 1 : self.k]) / std)
            load = (torch.where(in_top, p_in, p_out) * avail.unsqueeze(-1)).sum(0)
        else:
            load = (gates > 0).float().sum(0)
        loss = 0.01 * (_cv_squared(gates.sum(0)) + _cv_squared(load))
        return out * avail.unsqueeze(-1), loss


def _cv_squared(v: torch.Tensor) -> torch.Tensor:
    if v.numel() <= 1:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + 1e-10)


class FlexCare(nn.Module):
    #: Execution switch, not a hyper-parameter (the same function; the trainer sets it): "padded" runs
    #: every layer over the batch padded to its longest stay and note; "packed" runs the position-wise
    #: layers over the real positions only when the batch bounds them (``Batch.tokens``; packed.py);
    #: "varlen" also runs attention over each sample's real positions (varlen.py).
    token_layout = "padded"

    def __init__(
        self,
        num_labels: int,
        task: str = "phenotyping",
        ehr_dim: int = 76,
        note_dim: int = 768,
        hidden: int = 128,
        layers: int = 4,
        heads: int = 2,
        ff: int = 512,
        experts: int = 10,
        top_k: int = 2,
        dropout: float = 0.1,
        temperature: float = 0.2,
        ortho_weight: float = 0.5,
        structural_mask: str = "additive",
        modalities: str = "both",
        fusion_layout: str = "released",
    ):
        super().__init__()
        if fusion_layout not in FUSION_LAYOUTS:
            raise ValueError(f"fusion_layout must be one of {FUSION_LAYOUTS}, got {fusion_layout!r}")
        self.fusion_layout = fusion_layout
        # Which (query block, key block) pairs the cross-modal mask leaves open (``_blocks``).
        self.register_buffer("allowed", _ALLOWED[fusion_layout].clone(), persistent=False)
        if structural_mask not in STRUCTURAL_MASKS:
            raise ValueError(f"structural_mask must be one of {STRUCTURAL_MASKS}, got {structural_mask!r}")
        if modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {modalities!r}")
        self.modalities = modalities
        d = hidden
        self.task_index = TASK_INDEX[task]
        self.structural_mask, self.temperature, self.ortho_weight = structural_mask, temperature, ortho_weight
        self.task_embed = nn.Embedding(40, d)
        self.ehr_proj = nn.Linear(ehr_dim, d)
        self.note_proj = nn.Linear(note_dim, d)
        # Zero-initialised learnable tokens and positions, as in the reference.
        self.mm_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.ehr_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.note_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.ehr_pos = nn.Parameter(torch.zeros(1, MAX_POSITIONS, d))
        self.note_pos = nn.Parameter(torch.zeros(1, MAX_POSITIONS, d))
        if fusion_layout == "released":  # zero-initialised too: no random draw, the other weights stay as they are
            self.cross_cls = nn.Parameter(torch.zeros(1, 3, d))  # X12 (EHR+CXR), X13 (EHR+note), X23 (CXR+note)
            self.cxr_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff, dropout) for _ in range(layers))
        self.moe = NoisyTopKMoE(d, experts, top_k)
        self.pool_w = nn.Linear(2 * d, d, bias=False)
        self.pool_v = nn.Linear(d, 1, bias=False)
        self.pool_norm = nn.LayerNorm(d)
        self.head = nn.Linear(2 * d, num_labels)

    def _block_bias(self, device: torch.device, blocked: float) -> torch.Tensor:
        """[K, K] logit offset of (query block, key block), for the blocks of ``_blocks``."""
        allowed = self.allowed.to(device)  # a buffer on the model's device already: no host copy in the step
        if self.structural_mask == "additive":
            return (~allowed).float()  # the reference's +1 "blocked" bias
        return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, blocked)

    def _attention_mask(self, blocks: torch.Tensor, pad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Float [B, 1, S, S] mask added to the attention logits: structure + key padding."""
        s = len(blocks)
        struct = self._block_bias(pad.device, float("-inf"))[blocks.unsqueeze(1), blocks.unsqueeze(0)]
        key_pad = pad.unsqueeze(1)
        if self.structural_mask == "blocking":
            # A padded query must still see a key: under the blocking mask the CLS token of a missing
            # modality (read for L_ortho) would see none, so it sees itself. With the additive mask it
            # sees the task and MM tokens, and, as in the reference, not itself.
            key_pad = key_pad & ~torch.eye(s, dtype=torch.bool, device=pad.device)
        key_pad = key_pad.unsqueeze(1)  # [B, 1, S, S]
        # One pass in the compute dtype (0, 1 and -inf are exact in bf16): the mask is B * S^2 values.
        return torch.where(key_pad, float("-inf"), struct.to(dtype))

    #: The trainer may hand ``forward`` a batch as length-sorted parts (``Split.chunked``): every
    #: sample is encoded independently, so the parts are encoded apart and fused together.
    accepts_parts = True

    def forward(self, batch: Batch | list[Batch]) -> ModelOutput:
        parts = batch if isinstance(batch, list) else [batch]
        q, tokens, avail = (torch.cat(x) for x in zip(*(self._encode(p) for p in parts)))
        b = len(q)
        ortho = _decorrelation_loss(tokens)  # over every fusion token, available or not (§10.6)
        k = tokens.shape[1]
        fused, moe_loss = self.moe(
            tokens.reshape(b * k, -1), q.repeat_interleave(k, 0), avail.reshape(-1)
        )
        fused = fused.view(b, k, -1)
        score = self.pool_v(torch.tanh(self.pool_w(torch.cat([q.unsqueeze(1).expand_as(fused), fused], -1))))
        score = score.squeeze(-1).masked_fill(~avail, -1e7) / self.temperature
        h = (torch.softmax(score, -1).unsqueeze(-1) * fused).sum(1)
        z = torch.cat([q, self.pool_norm(h)], -1)
        e, n = _CLS_TOKENS[self.fusion_layout]
        return ModelOutput(
            logits=self.head(z),
            aux=self.ortho_weight * ortho + moe_loss,
            extras={"ehr_cls": tokens[:, e], "note_cls": tokens[:, n], "has_ehr": avail[:, e],
                    "has_note": avail[:, n], "patient_id": torch.cat([p.patient_id for p in parts])},
        )

    def _encode(self, batch: Batch):
        """Task token output q [B, d], fusion tokens [B, k, d] (k = 3: MM, EHR-CLS, NOTE-CLS; or the
        released layout's 7), their availability [B, k]."""
        b, t_ehr, _ = batch.ehr.shape
        t_note = batch.note_width
        if self.modalities != "both":  # ablation: the other modality is missing for everyone
            zero = torch.zeros_like(batch.ehr_len)
            batch = replace(batch, ehr_len=batch.ehr_len if self.modalities == "ehr" else zero,
                            note_len=batch.note_len if self.modalities == "note" else zero)
        has_ehr, has_note = batch.ehr_len > 0, batch.note_len > 0
        task = self.task_embed.weight[self.task_index].expand(b, 1, -1)
        ehr = torch.cat([self.ehr_cls.expand(b, -1, -1), affine.linear(batch.ehr, self.ehr_proj)], 1)
        ehr = ehr + torch.cat([torch.zeros_like(self.ehr_cls), self.ehr_pos[:, :t_ehr]], 1)
        note = torch.cat([self.note_cls.expand(b, -1, -1), self._note_tokens(batch)], 1)
        note = note + torch.cat([torch.zeros_like(self.note_cls), self.note_pos[:, :t_note]], 1)
        pos_e = torch.arange(1 + t_ehr, device=note.device)
        pos_n = torch.arange(1 + t_note, device=note.device)
        ehr_pad = (pos_e > batch.ehr_len.unsqueeze(1)) | ~has_ehr.unsqueeze(1)
        note_pad = (pos_n > batch.note_len.unsqueeze(1)) | ~has_note.unsqueeze(1)
        none = torch.zeros(b, 1, dtype=torch.bool, device=note.device)
        if self.fusion_layout == "released":
            x = torch.cat([task, self.mm_cls.expand(b, -1, -1), self.cross_cls.expand(b, -1, -1), ehr,
                           self.cxr_cls.expand(b, -1, -1), note], 1)
            pad = torch.cat([none.expand(b, 5), ehr_pad, ~none, note_pad], 1)  # CXR-CLS: never a key
            # Task, the four fusion tokens, EHR-CLS, then CXR-CLS and NOTE-CLS after the series.
            read = torch.arange(8, device=x.device)
            read = read + (read >= 6).long() * t_ehr
            both = has_ehr & has_note
            avail = torch.stack([none[:, 0], none[:, 0], both, none[:, 0], has_ehr, none[:, 0], has_note], 1)
        else:
            x = torch.cat([task, self.mm_cls.expand(b, -1, -1), ehr, note], 1)
            pad = torch.cat([none.expand(b, 2), ehr_pad, note_pad], 1)
            # Task, MM, EHR-CLS, NOTE-CLS. A device tensor built by arithmetic: no host copy (graph
            # capture), and no Python index that a compiler would specialise on the series width.
            read = torch.arange(4, device=x.device)
            read = read + (read == 3).long() * t_ehr
            avail = torch.stack([has_ehr & has_note, has_ehr, has_note], 1)
        # Read even when their modality is missing (L_ortho).
        blocks = _blocks(t_ehr, t_note, x.device, self.fusion_layout)
        dtype = affine.compute_dtype(x)  # attention's: the mask is built in it, not cast per layer
        packed = self._packing(pad, read, batch.tokens)
        samples = mask = None
        if packed is not None and self.token_layout == "varlen":
            layer0 = self.layers[0]
            samples = SampleAttention(packed, blocks, pad, self._block_bias(x.device, -BLOCKED),
                                      layer0.qkv.out_features // 3 // layer0.heads, dtype,
                                      read_rows_see_themselves=self.structural_mask == "blocking")
        else:
            mask = self._attention_mask(blocks, pad, dtype)
        if packed is not None:
            x = packed.pack(x)
        for layer in self.layers:
            x = layer(x, mask, packed, samples)
        out = x.index_select(1, read) if packed is None else packed.read(x, read)
        return out[:, 0], out[:, 1:], avail

    def _note_tokens(self, batch: Batch) -> torch.Tensor:
        """The projected note tokens, [B, t_note, d]. From ``note_rows`` only the real tokens are
        projected (the padding is zeros there, and dropped by packing): at the real notes' lengths the
        padded [B, t_note, note_dim] batch was most of a step's memory traffic outside the layers."""
        rows = batch.note_rows
        if rows is None:
            return affine.linear(batch.note, self.note_proj)
        # float16 straight to autocast's bfloat16 rounds as float16 -> float32 -> bfloat16 does.
        values = rows.values.to(affine.compute_dtype(self.note_proj.weight))
        return rows.padded(affine.linear(values, self.note_proj), len(batch.note_len))

    def _packing(self, pad: torch.Tensor, read: torch.Tensor, tokens: int | None) -> PackedPositions | None:
        b, s = pad.shape
        # Real series and note positions, plus the positions read, which every sample keeps.
        capacity = None if tokens is None else tokens + len(read) * b
        if self.token_layout not in PACKED_LAYOUTS or capacity is None or capacity >= b * s:
            return None
        # The summary tokens of a missing modality are read (L_ortho) though padded.
        return PackedPositions((~pad).index_fill(1, read, True), capacity)


def build_for(task: TaskInfo, hparams: dict) -> FlexCare:
    """FlexCare at the track's size (``task.backbone``) for a task: ``Method.build_model``'s default.
    Hyper-parameters read: ``structural_mask`` (default "additive"), ``modalities`` ("both") and
    ``fusion_layout`` ("released")."""
    size = task.backbone
    return FlexCare(
        num_labels=task.num_labels,
        task=task.kind,
        ehr_dim=task.ehr_dim,
        note_dim=task.note_dim,
        hidden=size.hidden,
        layers=size.layers,
        heads=size.heads,
        ff=size.ff,
        experts=size.experts,
        top_k=size.top_k,
        structural_mask=hparams.get("structural_mask", "additive"),
        modalities=hparams.get("modalities", "both"),
        fusion_layout=hparams.get("fusion_layout", "released"),
    )


def _blocks(t_ehr: int, t_note: int, device: torch.device, fusion_layout: str) -> torch.Tensor:
    """Block of each position, built by comparisons rather than copied from the host, so that the step
    can be captured in a CUDA graph. "two_modality": 0 task, 1 MM, 2 EHR (CLS and series), 3 note (CLS
    and tokens). "released": 0 task, 1 MM-CLS, 2 X12, 3 X13, 4 X23, 5 EHR-CLS, 6 series, 7 CXR-CLS,
    8 NOTE-CLS, 9 note tokens."""
    if fusion_layout == "released":
        pos = torch.arange(8 + t_ehr + t_note, device=device)
        return (pos.clamp(max=5) + (pos >= 6).long() + (pos >= 6 + t_ehr).long() + (pos >= 7 + t_ehr).long()
                + (pos >= 8 + t_ehr).long())
    pos = torch.arange(4 + t_ehr + t_note, device=device)
    return (pos >= 1).long() + (pos >= 2).long() + (pos >= 3 + t_ehr).long()


def _allowed_released() -> torch.Tensor:
    """(query block, key block) pairs that ``generate_cross_modal_mask`` leaves unmasked (0 there)."""
    task, mm, x12, x13, x23, ehr_cls, ehr, cxr_cls, note_cls, note = range(10)
    sees = {task: range(10), mm: (mm, ehr, note), x12: (x12, ehr), x13: (x13, ehr, note), x23: (x23, note),
            ehr_cls: (ehr_cls, ehr), ehr: (ehr,), cxr_cls: (cxr_cls,), note_cls: (note_cls, note), note: (note,)}
    allowed = torch.zeros(10, 10, dtype=torch.bool)
    for query, keys in sees.items():
        allowed[query, list(keys)] = True
    return allowed


def _allowed_two_modality() -> torch.Tensor:
    qb = torch.arange(4).unsqueeze(1)
    kb = qb.t()
    return (qb == 0) | (qb == kb) | ((qb == 1) & (kb >= 2))


_ALLOWED = {"two_modality": _allowed_two_modality(), "released": _allowed_released()}
# Positions of EHR-CLS and NOTE-CLS among the fusion tokens (``ModelOutput.extras``).
_CLS_TOKENS = {"two_modality": (1, 2), "released": (4, 6)}


def _decorrelation_loss(tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal covariance between the fusion tokens of each sample (§10.6).

    The denominator is B * (k-1)^2, as the reference's B * 6 * 6 for its seven tokens.
    """
    b, k, d = tokens.shape
    centred = tokens - tokens.mean(-1, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / (d - 1)
    off = cov - torch.diag_embed(torch.diagonal(cov, dim1=1, dim2=2))
    return (off**2).sum() / (b * (k - 1) ** 2)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
