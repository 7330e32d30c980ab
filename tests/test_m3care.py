import dataclasses

import pytest
import torch
from helpers import assert_padding_is_ignored, batch_rows, make_batch, smoke_run

from benchmark.backbones import flexcare as flexcare_module
from benchmark.backbones.flexcare import EncoderLayer, count_parameters
from benchmark.backbones.sequence import valid_steps
from benchmark.method_card import shape_info, trainable_parameters
from benchmark.protocol import FULL
from benchmark.registry import get_method

m3care_model = get_method("m3care").module("model")  # methods/m3care/model.py, as the method imports it
M3Care, multi_bandwidth_gaussian = m3care_model.M3Care, m3care_model.multi_bandwidth_gaussian

MISSING = dict(ehr_len=[10, 0, 4, 0, 10, 6], note_len=[7, 7, 0, 0, 3, 0])  # 1: no series, 2 and 5: no note, 3: neither


def small(**kw):
    torch.manual_seed(0)
    return M3Care(num_labels=25, note_dim=24, hidden=32, **kw)


def connect_all(model):
    """Threshold sigma(theta) ~ 0: every pair with any co-observed modality is a neighbour."""
    with torch.no_grad():
        model.theta.fill_(-20.0)
    return model


@pytest.mark.parametrize("train", [True, False])
def test_missing_series_note_or_both_give_finite_outputs_and_gradients(train):
    model = small().train(train)
    out = model(make_batch(**MISSING))
    assert out.logits.shape == (6, 25) and torch.isfinite(out.logits).all() and torch.isfinite(out.aux)
    out.logits.sum().add(out.aux).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_imputed_note_changes_when_a_similar_patients_note_changes():
    model = connect_all(small()).eval()
    batch = make_batch(**MISSING)  # patient 2 has a series but no note
    before = model(batch).extras["imputed"][2, 1]
    note = batch.note.clone()
    note[0, :7] += 1.0  # a neighbour who observes the note
    after = model(dataclasses.replace(batch, note=note)).extras["imputed"][2, 1]
    assert not torch.allclose(before, after)
    # ... and two patients missing their note get different imputations: not a learned constant.
    imputed = model(batch).extras["imputed"]
    assert not torch.allclose(imputed[2, 1], imputed[5, 1])


def test_original_outer_mask_makes_the_imputation_a_constant():
    model = connect_all(small(gcn_mask="outer")).eval()
    batch = make_batch(**MISSING)
    note = batch.note.clone()
    note[0, :7] += 1.0
    changed = model(dataclasses.replace(batch, note=note)).extras["imputed"]
    torch.testing.assert_close(model(batch).extras["imputed"][2, 1], changed[2, 1])
    torch.testing.assert_close(changed[2, 1], changed[5, 1])


def test_a_missing_modality_is_zero_before_imputation_and_not_a_neighbour():
    model = connect_all(small()).eval()
    batch = make_batch(**MISSING)
    ehr = batch.ehr.clone()
    ehr[1] = torch.randn(10, 76)  # patient 1 has no series: whatever sits in its rows is ignored
    out, changed = model(batch), model(dataclasses.replace(batch, ehr=ehr))
    torch.testing.assert_close(out.logits, changed.logits)


def test_padding_does_not_change_the_prediction():
    assert_padding_is_ignored(small().eval())


def test_length_sorted_parts_give_the_same_function_as_the_whole_batch():
    model = small().eval()
    batch = make_batch(**MISSING)
    order = torch.tensor([3, 1, 5, 0, 2, 4])
    whole = model(batch).logits
    parts = model([batch_rows(batch, order[:2]), batch_rows(batch, order[2:])]).logits
    torch.testing.assert_close(parts, whole[order], atol=1e-5, rtol=1e-5)


def test_a_training_batch_of_one_runs():
    model = small().train()
    out = model(make_batch(b=1))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux)


def test_evaluation_is_deterministic_for_a_fixed_batch():
    model = small().eval()
    batch = make_batch(**MISSING)
    torch.testing.assert_close(model(batch).logits, model(batch).logits, atol=0, rtol=0)


def test_kernel_is_one_on_the_diagonal_and_bandwidth_ignores_pairs_not_co_observed():
    x = torch.randn(4, 8)
    pair = torch.ones(4, 4)
    k = multi_bandwidth_gaussian(x, pair)
    torch.testing.assert_close(k.diagonal(), torch.ones(4))
    far = x.clone()
    far[3] = 1e3  # an unobserved row far away must not widen the bandwidth
    pair[3], pair[:, 3] = 0, 0
    torch.testing.assert_close(multi_bandwidth_gaussian(far, pair)[:3, :3], multi_bandwidth_gaussian(x[:3], torch.ones(3, 3)))


def test_stability_term_is_the_weighted_aux_and_can_be_switched_off():
    batch = make_batch(**MISSING)
    assert small(lambda_stab=0.01).train()(batch).aux > 0
    assert small(lambda_stab=0.0).train()(batch).aux == 0


def test_parameter_count_on_the_full_track_is_within_10_percent_of_the_spec():
    n = trainable_parameters(get_method("m3care"), shape_info(FULL, "mimic4-phe"))
    assert abs(n - 0.97e6) / 0.97e6 < 0.10, n
    assert n == count_parameters(M3Care(num_labels=25, note_dim=768, hidden=128))


def test_smoke_track_run_completes_and_records_the_parameter_count(tmp_path):
    stdout, records = smoke_run("m3care", tmp_path)
    assert "M3Care" in stdout and len(records) == 2
    assert all(r["method"]["parameters"] > 0 for r in records)


def _stability_grads(switch):
    model = small(lambda_stab=1.0, stability_gradient=switch).train()
    model(make_batch(**MISSING)).aux.backward()
    return model.note_proj.weight.grad, model.phi[1][0].weight.grad


def test_stability_term_trains_phi_but_not_the_encoders_by_default():
    encoder, phi = _stability_grads("phi")
    assert encoder is None or encoder.abs().max() == 0
    assert phi.abs().max() > 0


def test_literal_stability_switch_sends_its_gradient_into_the_encoders():
    encoder, _ = _stability_grads("encoders")
    assert encoder.abs().max() > 0


def test_stability_switch_changes_the_gradient_not_the_value():
    batch = make_batch(**MISSING)
    model = small(stability_gradient="phi").eval()
    detached = model(batch).aux
    model.stability_gradient = "encoders"
    torch.testing.assert_close(detached, model(batch).aux)


# Numerical safeguards (model docstring): each is the plain formula's function, and stays finite where
# the plain formula gave NaN.

def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.full_like(out.logits, 0.3)) + out.aux
    loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _non_finite(grads):
    return [name for name, g in grads.items() if not torch.isfinite(g).all()]


def _plain_formulas(monkeypatch):
    """The spec's formulas as written: uncentred keys (the backbone's layer) and a / (a + b)."""
    monkeypatch.setattr(m3care_model.SeriesEncoderLayer, "forward", EncoderLayer.forward)

    def quotient(bar_logit, own_logit):
        a, b = torch.sigmoid(bar_logit), torch.sigmoid(own_logit)
        return a / (a + b)

    monkeypatch.setattr(m3care_model, "gate_share", quotient)


def _opposed_queries(model, bias=-100.0):
    """A series encoder whose queries all oppose all keys: every attention score about -280, so every
    query row's logsumexp is far below -ln(FLT_MAX) = -88.7 (what training drifted towards)."""
    d = model.ehr_layer.qkv.out_features // 3
    with torch.no_grad():
        model.ehr_layer.qkv.bias[:d] += 1.0
        model.ehr_layer.qkv.bias[d : 2 * d] += bias
    return model


def _series_attention_calls(monkeypatch):
    """Record (q, k, mask) of every masked attention call (the series encoder's)."""
    calls, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            calls.append((q.detach(), k.detach(), attn_mask))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    # On a CPU with dropout the layers write their attention out (backbones/dropout.py); through SDPA,
    # as on a GPU, every call passes the recorder.
    def through_sdpa(q, k, v, mask, p):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)

    monkeypatch.setattr(m3care_model, "attention", through_sdpa)
    monkeypatch.setattr(flexcare_module, "attention", through_sdpa)
    return calls


def _row_logsumexp(q, k, mask):
    s = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    return s.masked_fill(~mask, float("-inf")).logsumexp(-1)  # [B, H, T]


def test_every_series_attention_row_has_a_non_negative_logsumexp_even_when_queries_oppose_keys(monkeypatch):
    model, batch = _opposed_queries(small()).train(), make_batch(**MISSING)
    calls = _series_attention_calls(monkeypatch)
    model(batch)
    with monkeypatch.context() as plain:
        _plain_formulas(plain)
        model(batch)
    (q, k, mask), (plain_q, plain_k, _) = calls
    assert _row_logsumexp(plain_q, plain_k, mask).max() < -88.7  # the failing condition, uncentred
    torch.testing.assert_close(q, plain_q)
    valid = mask.sum(-1, keepdim=True).squeeze(-2)  # [B, 1, 1]: valid keys of each stay
    assert (_row_logsumexp(q, k, mask) >= valid.log() - 1e-4).all()  # centred: >= log(valid keys) >= 0


class _OverflowingBackward(torch.autograd.Function):
    """Masked attention whose backward repeats cuDNN's SM90 kernel for a key length of 64 mod 128
    (pytorch/pytorch#196678): the 64 zero-filled keys past the last are scored 0 instead of masked,
    so their probability exp(0 - logsumexp) overflows fp32 when the logsumexp is below -88.7, and
    inf times their zero keys puts NaN into the query gradient. Elsewhere exact attention."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        scale = q.shape[-1] ** -0.5
        s = ((q @ k.transpose(-1, -2)) * scale).masked_fill(~mask, float("-inf"))
        lse = s.logsumexp(-1, keepdim=True)
        p = (s - lse).exp()
        out = p @ v
        ctx.save_for_backward(q, k, v, p, lse, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, p, lse, out = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        delta = (grad * out).sum(-1, keepdim=True)
        ds = p * (grad @ v.transpose(-1, -2) - delta)
        tail = torch.exp(0.0 - lse.float()) * (0.0 - delta)  # a zero-filled key: score 0, value 0
        dq = (ds @ k) * scale + tail * 0.0  # ... times its zero key: NaN where the tail overflowed
        return dq, (ds.transpose(-1, -2) @ q) * scale, p.transpose(-1, -2) @ grad, None


def _overflowing_kernel(monkeypatch):
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, **kw):
        if attn_mask is None or k.shape[-2] % 128 != 64:
            return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, **kw)
        assert dropout_p == 0.0
        return _OverflowingBackward.apply(q, k, v, attn_mask)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)


def test_the_emulated_kernel_is_exact_attention_where_the_logsumexp_is_benign(monkeypatch):
    batch = make_batch(b=6, t=64, ehr_len=[64, 0, 20, 0, 64, 33], note_len=MISSING["note_len"])
    _, exact = _loss_and_grads(small(dropout=0.0).train(), batch)
    _overflowing_kernel(monkeypatch)
    _, emulated = _loss_and_grads(small(dropout=0.0).train(), batch)
    for name, g in exact.items():
        torch.testing.assert_close(emulated[name], g, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("autocast", [False, True])
def test_queries_opposing_every_key_give_finite_gradients_through_an_overflowing_kernel(monkeypatch, autocast):
    """The full phenotyping run's likely failure (epoch 19, H200, bf16): a series width of 64 mod 128
    (45 % of that task's steps) and query rows with logsumexp < -88.7. The loss is finite, the
    gradient NaN, and Adam's update would make the weights NaN."""
    _overflowing_kernel(monkeypatch)
    model = _opposed_queries(small(dropout=0.0)).train()
    batch = make_batch(b=6, t=64, ehr_len=[64, 50, 20, 64, 64, 33], note_len=MISSING["note_len"])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, grads = _loss_and_grads(model, batch)
    assert torch.isfinite(logits).all()
    assert not _non_finite(grads), _non_finite(grads)


def _underflowing_gates(model, own_weight=0.0):
    """Both gates' logits -200 (sigmoids 0 in fp32 and bf16); ``own_weight`` > 0 lifts the own gate of
    every row with a nonzero h back to 1, leaving it at 0 for a missing modality's (zero) row only."""
    with torch.no_grad():
        for bar, own in zip(model.gate_bar, model.gate_own):
            bar.weight.zero_(), bar.bias.fill_(-200.0)
            own.weight.fill_(own_weight), own.bias.fill_(-200.0)
    return model


@pytest.mark.parametrize("autocast", [False, True])
def test_gate_gives_finite_outputs_and_gradients_when_both_gates_underflow(autocast):
    model = _underflowing_gates(small()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, grads = _loss_and_grads(model, make_batch(**MISSING))
    assert torch.isfinite(logits).all()
    assert not _non_finite(grads), _non_finite(grads)


def test_gate_of_a_missing_modality_gives_a_finite_gradient_when_both_of_its_gates_underflow():
    """Only the missing rows' gates underflow: ``torch.where`` discards their mixed value, so the
    forward was finite, but the discarded 0/0 came back as NaN in the backward."""
    model = connect_all(_underflowing_gates(small(), own_weight=1e4)).train()
    logits, grads = _loss_and_grads(model, make_batch(**MISSING))
    assert torch.isfinite(logits).all()
    assert not _non_finite(grads), _non_finite(grads)


@pytest.mark.parametrize("state", ["ordinary", "opposed queries"])
def test_series_layer_is_the_backbone_layer_in_fp64(state):
    """Centred keys: the backbone layer's outputs and gradients (inputs and weights), also where every
    score is about -280 (fp64 keeps the uncentred formula finite there)."""
    torch.manual_seed(0)
    layer = m3care_model.SeriesEncoderLayer(32, 4, 128, dropout=0.0).double()
    if state == "opposed queries":
        with torch.no_grad():
            layer.qkv.bias[:32] += 1.0
            layer.qkv.bias[32:64] -= 100.0
    x = torch.randn(5, 12, 32, dtype=torch.float64) * 3
    mask = valid_steps(torch.tensor([12, 1, 7, 3, 12]), 12)[:, None, None, :]
    results = []
    for forward in (m3care_model.SeriesEncoderLayer.forward, EncoderLayer.forward):
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        out = forward(layer, xi, mask)
        (out * torch.linspace(-1, 1, 32, dtype=torch.float64)).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (out, dx, grads), (plain_out, plain_dx, plain_grads) = results
    torch.testing.assert_close(out, plain_out, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(dx, plain_dx, atol=1e-9, rtol=1e-9)
    for name, g in plain_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-9, rtol=1e-9, msg=name)


def test_safeguards_leave_the_model_unchanged_on_an_ordinary_batch(monkeypatch):
    """The whole model (fp32, its kernels cast to it) against the plain formulas: logits and gradients."""
    batch = make_batch(**MISSING)
    logits, grads = _loss_and_grads(connect_all(small(dropout=0.0)).train(), batch)
    _plain_formulas(monkeypatch)
    plain_logits, plain_grads = _loss_and_grads(connect_all(small(dropout=0.0)).train(), batch)
    torch.testing.assert_close(logits, plain_logits, atol=1e-6, rtol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, g in plain_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_gate_share_is_the_quotient_of_the_two_sigmoids():
    za, zb = torch.randn(1000, dtype=torch.float64) * 20, torch.randn(1000, dtype=torch.float64) * 20
    a, b = torch.sigmoid(za), torch.sigmoid(zb)
    torch.testing.assert_close(m3care_model.gate_share(za, zb), a / (a + b), atol=1e-12, rtol=1e-12)
    assert m3care_model.gate_share(za.bfloat16(), zb.bfloat16()).dtype == torch.float32
    assert torch.isfinite(m3care_model.gate_share(torch.tensor([-500.0]), torch.tensor([-500.0]))).all()
