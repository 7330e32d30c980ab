import pytest
import torch

from benchmark.backbones.flexcare import Batch, FlexCare, count_parameters
from helpers import make_batch, with_note_rows


def small(**kw):
    torch.manual_seed(0)
    return FlexCare(num_labels=25, note_dim=24, hidden=32, layers=2, heads=2, ff=64, experts=4, **kw)


def test_outputs_are_logits_of_shape_batch_by_labels():
    model = small().eval()
    out = model(make_batch())
    assert out.logits.shape == (6, 25)
    assert out.aux.shape == ()
    assert (out.logits < 0).any()  # logits, not probabilities


def test_missing_modalities_give_finite_outputs_in_both_mask_modes():
    batch = make_batch(ehr_len=[10, 0, 4, 0, 10, 1], note_len=[7, 7, 0, 0, 3, 0])
    for mode in ("additive", "blocking"):
        for train in (True, False):
            model = small(structural_mask=mode).train(train)
            out = model(batch)
            assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux), (mode, train)
            out.logits.sum().add(out.aux).backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_padding_does_not_change_the_prediction():
    model = small().eval()
    short = make_batch(b=2, t=6, n=5, ehr_len=[6, 3], note_len=[5, 2])
    long = Batch(
        ehr=torch.cat([short.ehr, torch.randn(2, 4, 76)], 1),  # garbage beyond the length
        ehr_len=short.ehr_len,
        note=torch.cat([short.note, torch.randn(2, 3, 24)], 1),
        note_len=short.note_len,
        patient_id=short.patient_id,
    )
    torch.testing.assert_close(model(short).logits, model(long).logits, atol=1e-5, rtol=1e-5)


def test_additive_structural_mask_reproduces_the_reference_bias_and_blocking_differs():
    batch = make_batch()
    additive, blocking = small(structural_mask="additive").eval(), small(structural_mask="blocking").eval()
    blocking.load_state_dict(additive.state_dict())
    assert not torch.allclose(additive(batch).logits, blocking(batch).logits)
    from benchmark.backbones.flexcare import _blocks

    # The block indices below are the two-modality layout's (0 task, 1 MM, 2 EHR, 3 note).
    additive, blocking = (small(structural_mask=m, fusion_layout="two_modality").eval() for m in ("additive", "blocking"))
    pad, blocks = torch.zeros(1, 2 + 3 + 3, dtype=torch.bool), _blocks(2, 2, torch.device("cpu"), "two_modality")
    mask = additive._attention_mask(blocks, pad, torch.float32)[0, 0]
    # EHR-CLS (row 2) to a note token (col 6): "blocked" in the reference = +1 added, not -inf.
    assert mask[2, 6] == 1.0 and mask[0, 6] == 0.0
    assert blocking._attention_mask(blocks, pad, torch.float32)[0, 0][2, 6] == float("-inf")


def test_both_modalities_shape_the_prediction():
    model = small().eval()
    batch = make_batch()
    base = model(batch).logits
    other_note = make_batch(seed=1)
    swapped = Batch(batch.ehr, batch.ehr_len, other_note.note, batch.note_len, batch.patient_id)
    other_ehr = Batch(other_note.ehr, batch.ehr_len, batch.note, batch.note_len, batch.patient_id)
    assert not torch.allclose(base, model(swapped).logits)
    assert not torch.allclose(base, model(other_ehr).logits)


@pytest.mark.parametrize("fusion_layout", ["released", "two_modality"])
def test_paper_size_parameter_count_matches_the_reference_less_what_we_drop(fusion_layout):
    model = FlexCare(num_labels=25, note_dim=768, fusion_layout=fusion_layout)
    reference_total = 1_862_709  # spec §10.7, excluding the text encoder
    dropped = (
        198_272  # the registered but unused template encoder layer
        + 123_776 - 128  # the CXR patch embedding and positions (no images here); its CLS stays
        + (112_565 - 6_425)  # the six heads of other tasks
    )
    if fusion_layout == "two_modality":
        dropped += 128 + 3 * 128  # no CXR-CLS, and the four fusion CLS tokens become one (MM)
    assert count_parameters(model) == reference_total - dropped
    assert FlexCare(num_labels=25, note_dim=768).fusion_layout == "released"  # the default since 0.3.0


def test_modality_ablation_ignores_the_other_modality():
    batch = make_batch()
    other = make_batch(seed=3)
    ehr_only = small(modalities="ehr").eval()
    swapped_note = Batch(batch.ehr, batch.ehr_len, other.note, batch.note_len, batch.patient_id)
    torch.testing.assert_close(ehr_only(batch).logits, ehr_only(swapped_note).logits)
    note_only = small(modalities="note").eval()
    swapped_ehr = Batch(other.ehr, batch.ehr_len, batch.note, batch.note_len, batch.patient_id)
    torch.testing.assert_close(note_only(batch).logits, note_only(swapped_ehr).logits)
    both = small().eval()
    assert not torch.allclose(both(batch).logits, both(swapped_note).logits)


def assert_same_function_as_padded(layout: str, batch, tokens: int, modalities: tuple) -> None:
    """``layout`` on ``batch`` bounded by ``tokens`` gives the padded layout's logits, regularisers,
    summary tokens and gradients, in both structural-mask modes and both fusion layouts, with the notes
    padded and as their real tokens only (``Batch.note_rows``)."""
    import dataclasses
    import itertools

    for mode, modality, fusion in itertools.product(("additive", "blocking"), modalities, ("two_modality", "released")):
        model = small(structural_mask=mode, modalities=modality, fusion_layout=fusion).eval()
        outputs, grads = [], []
        for name, b in (("padded", batch), (layout, dataclasses.replace(batch, tokens=tokens)),
                        (layout, with_note_rows(batch, tokens))):
            model.token_layout = name
            model.zero_grad()
            out = model(b)
            out.logits.sum().add(out.aux).backward()
            outputs.append((out.logits, out.aux, out.extras["ehr_cls"], out.extras["note_cls"]))
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        for other, other_grads in zip(outputs[1:], grads[1:]):
            torch.testing.assert_close(other, outputs[0], atol=1e-5, rtol=1e-5)
            assert other_grads.keys() == grads[0].keys()
            for name in grads[0]:
                torch.testing.assert_close(other_grads[name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_packed_layout_is_the_same_function_and_really_packs(monkeypatch):
    """Position-wise layers over the real positions only (``Batch.tokens`` bounds them): the same
    logits, regularisers and gradients as over the padded batch, missing modalities included."""
    from benchmark.backbones import packed

    batch = make_batch(b=6, t=12, n=9, ehr_len=[12, 3, 0, 7, 1, 0], note_len=[9, 0, 2, 0, 5, 9], seed=1)
    packs = []
    monkeypatch.setattr(packed.PackedPositions, "pack",
                        lambda self, x, f=packed.PackedPositions.pack: packs.append(1) or f(self, x))
    assert_same_function_as_padded("packed", batch, int((batch.ehr_len + batch.note_len).sum()), ("both", "ehr"))
    assert len(packs) == 8 * 2 * (1 + 2)  # 2 packed forwards (notes padded, note rows): input, then per layer
    model = small()
    model.token_layout = "packed"
    assert model(batch).logits.shape == (6, 25)  # no bound on the real positions: runs padded


def test_varlen_attention_is_the_same_function(monkeypatch):
    """Attention over each sample's real positions (the structural bias and key padding folded into
    extra channels): the same logits, regularisers and gradients as the padded batch, missing
    modalities and read-only CLS rows included. On CPU the folded channels run through the padded
    form (flash kernels need a GPU: tested below)."""
    from benchmark.backbones import varlen

    batch = make_batch(b=6, t=12, n=9, ehr_len=[12, 3, 0, 7, 1, 0], note_len=[9, 0, 2, 0, 5, 9], seed=2)
    calls = []
    monkeypatch.setattr(varlen.SampleAttention, "attend",
                        lambda *a, f=varlen.SampleAttention.attend: calls.append(1) or f(*a))
    # A bound with unused rows, as in training.
    assert_same_function_as_padded("varlen", batch, int((batch.ehr_len + batch.note_len).sum()) + 5, ("both", "note"))
    assert len(calls) == 2 * 2 * 8  # each of the 2 layers, notes padded and as rows, in the 8 cases


def _dense_varlen(q, k, v, cu, scale):
    """Attention within each sequence cu[i]:cu[i+1], written out in full (the test's reference)."""
    rows = torch.arange(len(q), device=q.device)
    seq = torch.searchsorted(cu[1:].long(), rows, right=True)
    same = seq.unsqueeze(0) == seq.unsqueeze(1)
    scores = torch.einsum("ihe,jhe->hij", q, k) * scale
    weights = torch.softmax(scores.masked_fill(~same, float("-inf")), -1)
    return torch.einsum("hij,jhe->ihe", weights, v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention needs a GPU")
def test_flash_varlen_attention_matches_the_dense_form_with_gradients():
    from benchmark.backbones.varlen import attention

    torch.manual_seed(0)
    dev = torch.device("cuda")
    q, k, v = (torch.randn(300, 2, 72, device=dev).bfloat16().requires_grad_() for _ in range(3))
    # Four samples, then the unused rows as a padding sequence (their outputs are never read).
    cu = torch.tensor([0, 40, 41, 200, 290, 300], dtype=torch.int32, device=dev)
    grad = torch.randn(300, 2, 72, device=dev).bfloat16()
    grad[290:] = 0
    results = []
    dense = tuple(t.detach().float().requires_grad_() for t in (q, k, v))
    for inputs, fn in (((q, k, v), lambda *t: attention(*t, cu, 160, 0.0, 0.125)),  # 160 >= longest
                       (dense, lambda *t: _dense_varlen(*t, cu, 0.125))):
        out = fn(*inputs)
        out.float().backward(grad.float())
        results.append([out.float()] + [t.grad.float() for t in inputs])
    for flash, dense in zip(*results):
        torch.testing.assert_close(flash, dense, atol=3e-2, rtol=3e-2)
    assert all((t[290:] == 0).all() for t in results[0][1:])  # rows no loss reads: exactly no gradient


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention needs a GPU")
@pytest.mark.parametrize("fusion_layout", ["two_modality", "released"])
def test_varlen_layout_on_the_gpu_agrees_with_padded_to_bf16_tolerance(fusion_layout):
    import dataclasses

    batch = make_batch(b=6, t=12, n=9, ehr_len=[12, 3, 0, 7, 1, 0], note_len=[9, 0, 2, 0, 5, 9], seed=2)
    batch = dataclasses.replace(batch, **{f: getattr(batch, f).cuda() for f in ("ehr", "ehr_len", "note", "note_len", "patient_id")},
                                tokens=int((batch.ehr_len + batch.note_len).sum()) + 7)
    model = small(fusion_layout=fusion_layout).cuda().eval()
    logits = {}
    half = batch.note.half()  # the cache's dtype
    batch = dataclasses.replace(batch, note=half.float())
    rows = with_note_rows(dataclasses.replace(batch, note=half), batch.tokens)
    for layout, b in (("padded", batch), ("varlen", batch), ("varlen rows", rows)):
        model.token_layout = layout.split()[0]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits[layout] = model(b).logits.float()
    assert torch.isfinite(logits["varlen"]).all()
    torch.testing.assert_close(logits["varlen"], logits["padded"], atol=5e-2, rtol=5e-2)
    # float16 note rows cast straight to bfloat16 round as the padded float32 notes do
    torch.testing.assert_close(logits["varlen rows"], logits["varlen"], atol=1e-3, rtol=1e-3)
    model.train()  # attention dropout inside the flash kernel; gradients reach every layer
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
    out.logits.float().sum().add(out.aux).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.layers[0].qkv.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernels need a GPU")
def test_a_compiled_varlen_model_trains_on_the_gpu():
    """``--compile on`` traces the forward and the backward of the varlen layout's own Functions
    (``varlen._Projections``, ``affine``): they compile, and every layer gets a finite gradient."""
    import dataclasses

    import torch._dynamo

    torch._dynamo.reset()
    batch = make_batch(b=6, t=12, n=9, ehr_len=[12, 3, 0, 7, 1, 0], note_len=[9, 0, 2, 0, 5, 9], seed=2)
    batch = dataclasses.replace(batch, **{f: getattr(batch, f).cuda() for f in ("ehr", "ehr_len", "note", "note_len", "patient_id")},
                                tokens=int((batch.ehr_len + batch.note_len).sum()) + 7)
    model = small().cuda().train()
    model.token_layout = "varlen"
    compiled = torch.compile(model, dynamic=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(with_note_rows(batch, batch.tokens))
    out.logits.float().sum().add(out.aux).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.layers[0].qkv.weight.grad.abs().sum() > 0 and model.note_proj.weight.grad.abs().sum() > 0


def test_a_compiled_model_compiles_once_for_batches_of_many_widths():
    """Symbolic shapes (``--compile on``): batches of other series and note widths, and other
    counts of real positions, reuse one compilation instead of compiling per width."""
    import dataclasses

    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = small().eval()
    model.token_layout = "varlen"
    model.compile(dynamic=True)
    with torch.no_grad():
        for t, n, seed in ((12, 9, 1), (20, 5, 2), (7, 14, 3), (33, 11, 4)):
            batch = make_batch(b=6, t=t, n=n, seed=seed, ehr_len=[t, t // 2, 0, 3, 1, t - 1],
                               note_len=[n, 0, 2, n // 2, 1, n])
            model(dataclasses.replace(batch, tokens=int((batch.ehr_len + batch.note_len).sum()) + 3))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2


def test_packed_positions_round_trip_and_reject_a_bad_capacity():
    import pytest

    from benchmark.backbones.packed import PackedPositions

    keep = torch.tensor([[True, False, True], [False, False, True]])
    x = torch.arange(6.0).view(2, 3, 1)
    p = PackedPositions(keep, capacity=4)
    assert p.pack(x).flatten().tolist() == [0.0, 2.0, 5.0, 0.0]  # real positions in order, then a zero row
    assert p.unpack(p.pack(x)).flatten().tolist() == [0.0, 0.0, 2.0, 0.0, 0.0, 5.0]
    assert p.read(p.pack(x), torch.tensor([2])).flatten().tolist() == [2.0, 5.0]
    with pytest.raises(ValueError, match="capacity must be in 1..6"):
        PackedPositions(keep, capacity=7)


def test_the_encoder_is_the_references_transformer_with_its_masks_missing_modalities_included():
    """The reference runs ``nn.TransformerEncoder`` (post-norm, ReLU) with the 0/1 float structural
    mask as ``mask`` and the padding as ``src_key_padding_mask``: a padded position is no key for any
    query, itself included. The positions FlexCare reads (task, MM, EHR-CLS, NOTE-CLS; a missing
    modality's CLS feeds L_ortho) must come out as there. The three-token layout of harness < 0.3.0;
    the released layout is checked against the spec's dense implementation below."""
    from benchmark.backbones.flexcare import _blocks

    model = small(dropout=0.0, fusion_layout="two_modality").eval()
    batch = make_batch(ehr_len=[10, 0, 4, 0, 10, 1], note_len=[7, 7, 0, 0, 3, 0])
    seen = {}
    model.layers[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model.layers[-1].register_forward_hook(lambda m, args, out: seen.update(out=out))
    model(batch)
    d, t, n = 32, batch.ehr.shape[1], batch.note.shape[1]
    reference = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(d, 2, 64, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False)
    for ours, theirs in zip(model.layers, reference.layers):
        theirs.self_attn.in_proj_weight.data.copy_(ours.qkv.weight)
        theirs.self_attn.in_proj_bias.data.copy_(ours.qkv.bias)
        for a, b in [("proj", "self_attn.out_proj"), ("ff1", "linear1"), ("ff2", "linear2"), ("norm1", "norm1"),
                     ("norm2", "norm2")]:
            theirs.get_submodule(b).load_state_dict(ours.get_submodule(a).state_dict())
    blocks = _blocks(t, n, torch.device("cpu"), "two_modality")
    struct = model._block_bias(torch.device("cpu"), 0.0)[blocks.unsqueeze(1), blocks.unsqueeze(0)]
    pos_e, pos_n = torch.arange(1 + t), torch.arange(1 + n)
    pad = torch.cat([torch.zeros(6, 2, dtype=torch.bool),
                     (pos_e > batch.ehr_len[:, None]) | (batch.ehr_len[:, None] == 0),
                     (pos_n > batch.note_len[:, None]) | (batch.note_len[:, None] == 0)], 1)
    reference.train()  # the plain (not the fused inference) path, as the reference trains; dropout is 0
    expected = reference(seen["x"], mask=struct, src_key_padding_mask=pad)
    read = torch.tensor([0, 1, 2, 3 + t])
    torch.testing.assert_close(seen["out"][:, read], expected[:, read], atol=1e-5, rtol=1e-4)


# --- The released FlexCare (fusion_layout="released"), against a slow dense implementation of the spec ---------
# Written from reference/miracl_flexcare.md §10.3-10.6 and §10.10 alone, one sample at a time, in fp64:
# the sequence [task | MM-CLS | X12 | X13 | X23 | EHR-CLS ehr.. | CXR-CLS | NOTE-CLS tok..], the 0/1 float
# mask of generate_cross_modal_mask (no X-ray patches: they are padded keys whose outputs feed nothing),
# key padding, post-norm layers, then availability, L_ortho over 7 tokens, the MoE and the pooling.

def _spec_cross_modal_mask(ehr_cls: int, cxr_cls: int, note_cls: int, total: int) -> torch.Tensor:
    """1 = "blocked" (a +1 logit under the additive reading), 0 = open, slice by slice as the spec states."""
    m = torch.ones(total, total, dtype=torch.float64)
    m[0, :] = 0  # the task token sees everything
    for row, spans in ((1, [(ehr_cls + 1, cxr_cls), (cxr_cls + 1, note_cls), (note_cls + 1, total)]),  # MM-CLS
                       (2, [(ehr_cls + 1, cxr_cls), (cxr_cls + 1, note_cls)]),  # X12: EHR + CXR content
                       (3, [(ehr_cls + 1, cxr_cls), (note_cls + 1, total)]),  # X13: EHR + note content
                       (4, [(cxr_cls + 1, note_cls), (note_cls + 1, total)])):  # X23: CXR + note content
        m[row, row] = 0
        for a, b in spans:
            m[row, a:b] = 0
    for cls, end in ((ehr_cls, cxr_cls), (cxr_cls, note_cls), (note_cls, total)):
        m[cls, cls:end] = 0  # a modality's CLS: itself and its content
        m[cls + 1:end, cls + 1:end] = 0  # content: its own content only
    return m


def _spec_released(model, batch, blocking=False):
    """(logits [B, C], L_ortho, L_moe) of the released function, eval mode, as the spec describes it."""
    d = model.task_embed.weight.shape[1]
    heads = model.layers[0].heads
    t_max, n_max = batch.ehr.shape[1], batch.note.shape[1]
    qs, sevens, avails = [], [], []
    for i in range(len(batch.ehr_len)):
        le, ln = int(batch.ehr_len[i]), int(batch.note_len[i])
        seq = [model.task_embed.weight[model.task_index], model.mm_cls[0, 0], *model.cross_cls[0], model.ehr_cls[0, 0]]
        seq += [model.ehr_proj(batch.ehr[i, t]) + model.ehr_pos[0, t] for t in range(t_max)]
        seq += [model.cxr_cls[0, 0], model.note_cls[0, 0]]
        seq += [model.note_proj(batch.note[i, j]) + model.note_pos[0, j] for j in range(n_max)]
        x = torch.stack(seq)
        ehr_cls, cxr_cls, note_cls, total = 5, 6 + t_max, 7 + t_max, len(seq)
        padded = torch.zeros(total, dtype=torch.bool)
        for p in range(ehr_cls, cxr_cls):  # the EHR block: CLS + series, real for len + 1 if present
            padded[p] = le == 0 or p - ehr_cls > le
        padded[cxr_cls] = True  # no X-ray: its whole block is padded
        for p in range(note_cls, total):
            padded[p] = ln == 0 or p - note_cls > ln
        mask = _spec_cross_modal_mask(ehr_cls, cxr_cls, note_cls, total)
        if blocking:  # the intended mask; a padded query keeps itself as its one key
            mask = mask.masked_fill(mask == 1, float("-inf"))
        for layer in model.layers:
            q, k, v = layer.qkv(x).view(total, 3, heads, d // heads).unbind(1)
            attn = torch.zeros(total, d, dtype=torch.float64)
            for h in range(heads):
                logits = q[:, h] @ k[:, h].T / (d // heads) ** 0.5 + mask
                for key in range(total):
                    if padded[key]:
                        logits[:, key] = float("-inf")
                        if blocking:
                            logits[key, key] = mask[key, key] if mask[key, key] == 0 else 0.0
                attn[:, h * (d // heads):(h + 1) * (d // heads)] = torch.softmax(logits, -1) @ v[:, h]
            x = layer.norm1(x + layer.proj(attn))
            x = layer.norm2(x + layer.ff2(torch.relu(layer.ff1(x))))
        qs.append(x[0])
        sevens.append(x[[1, 2, 3, 4, ehr_cls, cxr_cls, note_cls]])
        has_e, has_n = le > 0, ln > 0
        avails.append(torch.tensor([False, False, has_e and has_n, False, has_e, False, has_n]))
    q, m, avail = torch.stack(qs), torch.stack(sevens), torch.stack(avails)
    b = len(q)
    centred = m - m.mean(-1, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / (d - 1)
    ortho = sum(cov[i, r, c] ** 2 for i in range(b) for r in range(7) for c in range(7) if r != c) / (b * 6 * 6)
    moe = model.moe
    fused = torch.zeros_like(m)
    importance = torch.zeros(moe.w_gate.shape[1], dtype=torch.float64)
    load = torch.zeros_like(importance)
    for i in range(b):
        for j in range(7):
            if not avail[i, j]:
                continue  # unavailable tokens skip the MoE and stay zero
            gate_logits = m[i, j] @ moe.w_gate + q[i] @ moe.w_task
            top = gate_logits.topk(moe.k)
            weights = torch.softmax(top.values, -1)
            for w, e in zip(weights, top.indices):
                expert = torch.relu(m[i, j] @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e]
                fused[i, j] += w * expert
                importance[e] += w
                load[e] += 1
    cv2 = lambda v: v.var() / v.mean() ** 2  # noqa: E731 - unbiased variance, as the spec's CV^2
    moe_loss = 0.01 * (cv2(importance) + cv2(load))
    score = torch.stack([torch.stack([model.pool_v(torch.tanh(model.pool_w(torch.cat([q[i], fused[i, j]]))))[0]
                                      for j in range(7)]) for i in range(b)])
    score = score.masked_fill(~avail, -1e7) / 0.2
    h = (torch.softmax(score, -1).unsqueeze(-1) * fused).sum(1)
    z = torch.cat([q, model.pool_norm(h)], -1)
    return model.head(z), ortho, moe_loss


def _random_released(structural_mask="additive"):
    model = small(dropout=0.0, fusion_layout="released", structural_mask=structural_mask).double().eval()
    with torch.no_grad():  # the zero-initialised tokens, gates and positions at random values, as after training
        for p in (model.mm_cls, model.cross_cls, model.cxr_cls, model.ehr_cls, model.note_cls, model.ehr_pos,
                  model.note_pos, model.moe.w_gate, model.moe.w_task):
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("notes", ["padded", "rows"])
@pytest.mark.parametrize("structural_mask", ["additive", "blocking"])
@pytest.mark.parametrize("layout", ["padded", "packed", "varlen"])
def test_the_released_layout_is_the_spec_function_in_every_token_layout(layout, structural_mask, notes):
    """Every missingness pattern (both, series only, note only, neither; a one-bin series) in one batch,
    the notes padded or as their real tokens only (``Batch.note_rows``, what packing models get)."""
    import dataclasses

    import benchmark.backbones.flexcare as flexcare

    model = _random_released(structural_mask)
    model.token_layout = layout
    batch = make_batch(ehr_len=[10, 0, 4, 0, 10, 1], note_len=[7, 7, 0, 0, 3, 0])
    batch = dataclasses.replace(batch, ehr=batch.ehr.double(), note=batch.note.double(),
                                tokens=int((batch.ehr_len + batch.note_len).sum()))
    spec_batch = batch
    if notes == "rows":
        batch = with_note_rows(batch, batch.tokens + 2)  # two unused slots
    seen = {}
    model.moe.register_forward_hook(lambda m, args, out: seen.update(moe=out[1]))
    ortho_fn = flexcare._decorrelation_loss
    flexcare._decorrelation_loss = lambda tokens: seen.setdefault("ortho", ortho_fn(tokens))
    try:
        with torch.no_grad():
            out = model(batch)
            logits, ortho, moe_loss = _spec_released(model, spec_batch, blocking=structural_mask == "blocking")
    finally:
        flexcare._decorrelation_loss = ortho_fn
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["ortho"], ortho, atol=1e-5, rtol=0)
    # The gates run in fp32 by design (also under autocast), so L_moe is an fp32 number.
    torch.testing.assert_close(seen["moe"].double(), moe_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.aux.double(), 0.5 * ortho + moe_loss, atol=1e-5, rtol=0)


def test_the_released_layout_differs_from_the_two_modality_reading_and_adds_four_tokens():
    """The switch is another function (§10.10), not a relabelling, and only adds the X12/X13/X23 and
    CXR-CLS tokens: the other weights come out of the same seed unchanged."""
    two, released = small(dropout=0.0, fusion_layout="two_modality").eval(), small(dropout=0.0).eval()
    assert count_parameters(released) - count_parameters(two) == 4 * 32
    shared = {k: v for k, v in released.state_dict().items() if k not in ("cross_cls", "cxr_cls")}
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in shared.items())
    with torch.no_grad():
        for m in (two, released):
            m.ehr_cls.normal_(0, 0.5), m.note_cls.normal_(0, 0.5), m.mm_cls.normal_(0, 0.5)
        released.cross_cls.normal_(0, 0.5)
        batch = make_batch(ehr_len=[10, 0, 4, 0, 10, 1], note_len=[7, 7, 0, 0, 3, 0])
        assert not torch.allclose(two(batch).logits, released(batch).logits, atol=1e-3)
    with pytest.raises(ValueError, match="fusion_layout must be one of"):
        small(fusion_layout="three")


def test_methods_describe_names_the_fusion_layout_and_its_parameter_count(monkeypatch):
    from benchmark.backbones import flexcare
    from benchmark.method_card import card, shape_info
    from benchmark.protocol import FULL
    from benchmark.registry import get_method

    entry, info = get_method("bce"), shape_info(FULL, "mimic4-phe")
    text = card(entry, FULL, info)
    assert "trainable parameters: 1,434,649 on full/mimic4-phe" in text
    assert "model: FlexCare, fusion layout released, structural mask additive" in text
    build = flexcare.build_for
    monkeypatch.setattr(flexcare, "build_for", lambda task, hp: build(task, {**hp, "fusion_layout": "two_modality"}))
    text = card(entry, FULL, info)
    assert f"trainable parameters: {1_434_649 - 4 * 128:,} on full/mimic4-phe" in text  # no X12, X13, X23, CXR-CLS
    assert "fusion layout two_modality" in text
