import dataclasses

import pytest
import torch
from helpers import assert_padding_is_ignored, batch_rows, make_batch, smoke_run

from benchmark.backbones.flexcare import count_parameters
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
