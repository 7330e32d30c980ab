"""MIRACL: every formula on hand-made examples, every switch, the loss, and what the method can see."""
import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark import gmm
from benchmark.backbones.flexcare import ModelOutput
from benchmark.errors import UsageError
from benchmark.method import EpochView
from benchmark.protocol import SMOKE
from benchmark.trainer import RunData, train

from helpers import method_module, noisy_labels, smoke_task

miracl = method_module("miracl")
HP = __import__("benchmark.registry", fromlist=["get_method"]).get_method("miracl").hparams


def make(info=None, **override):
    """The class from the method's module (monkeypatching the module's functions takes effect)."""
    return miracl.MIRACL(info, {**HP, **override})


def as_history(*rows):
    """[E, N = len(rows), C = 1] bool history from per-entry 0/1 sequences."""
    return torch.tensor(rows, dtype=torch.bool).t().unsqueeze(-1)


# --- memorisation / forgetting difficulty D -------------------------------------------------------

def test_difficulty_of_known_prediction_histories():
    history = as_history(
        [1, 1, 0, 0, 0, 1],  # wrong runs [3], right runs [2, 1]: M 3, F 1.5
        [0, 0, 0, 0, 0, 0],  # M 6, F 0 (no right run)
        [1, 1, 1, 1, 1, 1],  # M 0 (no wrong run), F 6
        [0, 1, 0, 1, 0, 1],  # M 1, F 1
        [0, 0, 1, 0, 0, 1],  # M (2 + 2) / 2, F 1
    )
    assert miracl.difficulty(history)[:, 0].tolist() == [1.5, 6.0, -6.0, 0.0, 1.0]
    assert miracl.difficulty(history, forgetting_weight=0.5)[:, 0].tolist() == [2.25, 6.0, -3.0, 0.5, 1.5]


def test_difficulty_without_history_is_zero():
    assert miracl.difficulty(torch.zeros(0, 3, 2, dtype=torch.bool)).tolist() == [[0.0, 0.0]] * 3


def test_vectorised_difficulty_equals_the_run_length_definition():
    history = torch.rand(9, 40, 3, generator=torch.Generator().manual_seed(0)) < 0.6
    d = miracl.difficulty(history)
    for i, j in itertools.product(range(40), range(3)):
        runs = [(value, len(list(g))) for value, g in itertools.groupby(history[:, i, j].tolist())]
        mean = lambda v: np.mean([n for x, n in runs if x == v]) if any(x == v for x, _ in runs) else 0.0  # noqa: E731
        assert d[i, j].item() == pytest.approx(mean(False) - mean(True))


def spec_difficulty(history, forgetting_weight=1.0):
    """The spec's definition (section 4.3) as the reference computes it, in NumPy float64: per entry,
    split the correctness sequence into runs; M, F = np.mean of the wrong / right run lengths (0
    without such a run); D = M - lambda F."""
    e, n, c = history.shape
    d = np.zeros((n, c))
    for i, j in itertools.product(range(n), range(c)):
        runs = [(value, len(list(g))) for value, g in itertools.groupby(history[:, i, j].tolist())]
        mean = lambda v: np.mean([k for x, k in runs if x == v]) if any(x == v for x, _ in runs) else 0.0  # noqa: E731
        d[i, j] = mean(False) - forgetting_weight * mean(True)
    return d


@pytest.mark.parametrize("forgetting_weight", [1.0, 0.3])
def test_default_difficulty_is_the_float64_numpy_transcription_to_the_bit(forgetting_weight):
    history = torch.rand(11, 60, 4, generator=torch.Generator().manual_seed(3)) < 0.55
    d = miracl.difficulty(history, forgetting_weight)
    assert d.dtype == torch.float64
    np.testing.assert_array_equal(d.numpy(), spec_difficulty(history, forgetting_weight))
    d32 = miracl.difficulty(history, forgetting_weight, torch.float32)
    assert d32.dtype == torch.float64 and not torch.equal(d32, d)  # float32 rounds M and F (e.g. 4 / 3)
    torch.testing.assert_close(d32, d, atol=1e-5, rtol=0)


def test_switch_difficulty_dtype_float32_reorders_a_near_tie_of_the_selection_score():
    # Entry A: wrong once, then right 6 epochs (M 1, F 6, D -5), rank 3. Entry B: wrong, right
    # alternating, then right twice (M 1, F 4/3, D -1/3), rank 1. With D over [-7, 7] and r over
    # [1, 7], s_A = s_B up to N(.)'s 1e-9: float64 puts A 1.6e-11 below B, as exact arithmetic
    # does; float32's rounding of 4/3 puts A 1.4e-9 above B.
    rows = [[0, 1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1, 1], [1] * 7, [0] * 7]  # A, B, D = -7, D = +7
    history = torch.tensor(rows, dtype=torch.bool).t().reshape(7, 2, 2)  # [E, N = 2, C = 2]
    history = torch.cat([history, torch.ones(7, 2, 5, dtype=torch.bool)], 2)  # C = 7 labels, D = -7
    r = torch.tensor([[3, 1, 2, 4, 5, 6, 7], [1, 7, 2, 3, 4, 5, 6]])  # A = (0, 0) rank 3, B = (0, 1) rank 1
    noisy = torch.zeros(2, 7, dtype=torch.long)
    s64, s32 = (miracl.selection_score(miracl.difficulty(history, 1.0, dtype), r, noisy)
                for dtype in (torch.float64, torch.float32))
    d_spec = torch.from_numpy(spec_difficulty(history))
    s_spec = miracl.selection_score(d_spec, r, noisy)
    assert d_spec[0, 0] == -5 and d_spec[0, 1] == 1 - 4 / 3 and d_spec.min() == -7 and d_spec.max() == 7
    assert torch.equal(s64, s_spec)
    assert s64[0, 0] < s64[0, 1] and s32[0, 0] > s32[0, 1]


def test_switch_difficulty_dtype_is_refused_unless_float64_or_float32():
    with pytest.raises(UsageError, match="difficulty_dtype must be one of float64, float32"):
        make(difficulty_dtype="float16")


# --- ranks, N(.), the selection score -------------------------------------------------------------

def test_ranks_are_descending_positions_with_ties_in_label_order():
    probs = torch.tensor([[0.1, 0.9, 0.5], [0.5, 0.5, 0.2], [0.3, 0.2, 0.4]])
    assert miracl.ranks(probs).tolist() == [[3, 1, 2], [1, 2, 3], [2, 3, 1]]


def test_minmax_is_global_over_the_matrix():
    a = torch.tensor([[1.0, 3.0], [5.0, 9.0]], dtype=torch.float64)
    torch.testing.assert_close(miracl.minmax(a), torch.tensor([[0, 0.25], [0.5, 1.0]], dtype=torch.float64))
    assert miracl.minmax(torch.full((2, 2), 7.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_selection_score_mixes_normalised_difficulty_and_rank_with_alpha():
    d = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64)  # N(D) = [[0, .5], [1, .75]]
    r = torch.tensor([[1, 2], [2, 1]])  # N(r) = [[0, 1], [1, 0]]
    noisy = torch.tensor([[1, 0], [0, 1]])
    s = miracl.selection_score(d, r, noisy, alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.75], [1.0, 0.375]], dtype=torch.float64))
    s = miracl.selection_score(d, r, noisy, alpha=0.25)
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.875], [1.0, 0.1875]], dtype=torch.float64))


def test_switch_rank_only_selection_ignores_difficulty():
    d = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    r = torch.tensor([[1, 3], [2, 1]])
    s = miracl.selection_score(d, r, torch.zeros(2, 2), rank_only=True)
    torch.testing.assert_close(s, torch.tensor([[0.0, 1.0], [0.5, 0.0]], dtype=torch.float64), atol=1e-8, rtol=0)


def test_switch_negative_rank_flip_ranks_observed_negatives_as_l_plus_1_minus_r():
    r = torch.tensor([[1, 3, 2], [2, 1, 3]])
    noisy = torch.tensor([[1, 0, 0], [0, 1, 1]])
    s = miracl.selection_score(torch.zeros(2, 3, dtype=torch.float64), r, noisy, alpha=0.0, negative_rank_flip=True)
    # ranks used: [[1, 1, 2], [2, 1, 3]] -> N over [1, 3]
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.0, 0.5], [0.5, 0.0, 1.0]], dtype=torch.float64))


# --- the label-correlation gate Z- -----------------------------------------------------------------

def test_correlation_gate_on_a_hand_made_label_matrix():
    noisy = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]])
    # co-occurrence (diagonal 0) [[0,1,0],[1,0,1],[0,1,0]] -> R = [[0,1,0],[.5,0,.5],[0,1,0]];
    # z = Y R = [[.5,1,.5],[0,1,0],[0,0,0],[.5,1,.5]]; Z- = observed negatives with z > tau.
    assert miracl.correlation_gate(noisy, 0.02).int().tolist() == [[0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert miracl.correlation_gate(noisy, 0.6).int().tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]]


# --- partition, U, p*, Eq. 3-5 ----------------------------------------------------------------------

def mixtures(means, valid=None):
    """Hand-made mixtures: ``means`` [C, 2 observed classes, 2 sorted components]."""
    means = torch.tensor(means, dtype=torch.float64).view(-1, 2)
    ones = torch.ones_like(means)
    valid = torch.ones(len(means), dtype=torch.bool) if valid is None else torch.tensor(valid)
    return gmm.Mixtures(ones / 2, means, ones, valid, torch.zeros(len(means), dtype=torch.long))


def test_partition_thresholds_at_the_component_means_and_u_interpolates_between_them():
    mix = mixtures([[[0.2, 0.6], [0.3, 0.7]]])  # negatives (0.2, 0.6), positives (0.3, 0.7)
    s = torch.tensor([0.3, 0.5, 0.8, 0.1, 0.4, 0.6], dtype=torch.float64).unsqueeze(1)
    noisy = torch.tensor([1, 1, 1, 0, 0, 0]).unsqueeze(1)
    part, u = miracl.partition(s, noisy, mix)
    assert part[:, 0].tolist() == [0, 1, 2, 0, 1, 1]  # s <= mu_lo clean, <= mu_hi uncertain, above noisy
    expected = [0.0, 0.2 / (0.4 + 1e-6), 1.0, 0.0, 0.2 / (0.4 + 1e-6), 0.4 / (0.4 + 1e-6)]
    torch.testing.assert_close(u[:, 0], torch.tensor(expected, dtype=torch.float64))


def test_an_entry_whose_mixture_was_not_fitted_stays_clean():
    mix = mixtures([[[0.2, 0.6], [0.3, 0.7]]], valid=[True, False])  # no positives' mixture
    part, u = miracl.partition(torch.tensor([[0.9], [0.9]], dtype=torch.float64), torch.tensor([[1], [0]]), mix)
    assert part[:, 0].tolist() == [0, 2] and u[0, 0] == 0


def test_correction_equations_3_to_5_for_every_branch():
    noisy = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    part = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1])
    u = torch.tensor([0, 0.25, 1, 0, 0.25, 1, 1, 0.5], dtype=torch.float64)
    target = torch.full((8,), 0.4, dtype=torch.float64)
    gate = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0], dtype=torch.bool)
    labels, kept = miracl.correct(noisy, part, u, target, gate)
    # positive: clean 1, uncertain U p* + (1 - U), noisy p*; negative in Z-: clean 0, uncertain U p*,
    # noisy p*; negative outside Z-: 0 whatever its partition, reported clean.
    torch.testing.assert_close(labels, torch.tensor([1, 0.85, 0.4, 0, 0.1, 0.4, 0, 0], dtype=torch.float64))
    assert kept.tolist() == [0, 1, 2, 0, 1, 2, 0, 0]


def test_pstar_mixes_fused_and_unimodal_predictions():
    p, pe, pn = (torch.tensor([v]) for v in (0.5, 1.0, 0.0))
    assert miracl.pstar(p, pe, pn, (0.6, 0.2, 0.2)).item() == pytest.approx(0.5)
    assert miracl.pstar(p, pe, pn, (0.2, 0.5, 0.3)).item() == pytest.approx(0.6)


@pytest.mark.parametrize("text", ["0.6,0.2", "0.6,0.2,0.3", "1,-0.5,0.5", "a,b,c"])
def test_switch_pstar_weights_refuses_malformed_weights(text):
    with pytest.raises(UsageError, match="pstar_weights"):
        make(pstar_weights=text)


# --- beta_t ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule, expected", [
    ("reference", [1 - 0.5 * 6 / 31, 1 - 0.5 * 10 / 31, 1 - 0.5 * 20 / 31, 1 - 0.5 * 30 / 31]),  # 0.903 .. 0.516
    ("paper", [1.0, 1 - 0.5 * 4 / 24, 1 - 0.5 * 14 / 24, 0.5]),
])
def test_switch_beta_schedule_values_at_epochs_6_10_20_30(schedule, expected):
    values = [miracl.beta(t, 30, 5, schedule) for t in (6, 10, 20, 30)]
    assert values == pytest.approx(expected)
    assert [round(v, 3) for v in values] == {"reference": [0.903, 0.839, 0.677, 0.516],
                                             "paper": [1.0, 0.917, 0.708, 0.5]}[schedule]


# --- the losses ---------------------------------------------------------------------------------------

def test_unimodal_bce_leaves_out_samples_without_the_modality():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(4, 3, generator=g), (torch.rand(4, 3, generator=g) < 0.5).float()
    present = torch.tensor([True, False, True, False])
    expected = F.binary_cross_entropy_with_logits(z[present], y[present])
    torch.testing.assert_close(miracl.masked_bce(z, y, present), expected)
    z2 = z.clone()
    z2[~present] = 100.0
    torch.testing.assert_close(miracl.masked_bce(z2, y, present), expected)
    assert miracl.masked_bce(z, y, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_align_loss_by_hand_for_two_patients():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    n = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    yes = torch.ones(2, dtype=torch.bool)
    loss = miracl.align_loss(e, n, yes, yes, torch.tensor([7, 8]), temperature=0.5)
    # Views e1 e2 n1 n2 = (1,0) (0,1) (1,0) (1,0); each anchor's positive is its stay's other modality.
    sim = lambda a, b: 2.0 * float(torch.dot(a, b))  # noqa: E731
    views, terms = [e[0], e[1], n[0], n[1]], []
    for a, pos in ((0, 2), (1, 3), (2, 0), (3, 1)):
        keys = [sim(views[a], views[k]) for k in range(4) if k != a]
        terms.append(-(sim(views[a], views[pos]) - np.log(np.sum(np.exp(keys)))))
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_align_loss_pairs_stays_of_one_patient_and_ignores_missing_views():
    g = torch.Generator().manual_seed(1)
    e, n = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    has_e, has_n = torch.tensor([True, True, False, True]), torch.tensor([True, False, True, True])
    pid = torch.tensor([1, 1, 2, 3])
    loss = miracl.align_loss(e, n, has_e, has_n, pid)
    e2, n2 = e.clone(), n.clone()
    e2[2], n2[1] = 100.0, -100.0  # the missing views
    torch.testing.assert_close(miracl.align_loss(e2, n2, has_e, has_n, pid), loss)
    # Stay 1 (no note) still has positives through stay 0 of the same patient: making stay 1's EHR
    # view equal to stay 0's views lowers the loss.
    e3 = e.clone()
    e3[1] = e[0] + n[0]
    assert miracl.align_loss(e3, n, has_e, has_n, pid) != loss
    lone = miracl.align_loss(e[:1], n[:1], torch.tensor([True]), torch.tensor([False]), pid[:1])
    assert lone.item() == 0.0 and torch.isfinite(lone)


def fake_output(b, c, seed=0, has_note=None):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return ModelOutput(logits=r(b, c), aux=torch.zeros(()), extras={
        "ehr_logits": r(b, c), "note_logits": r(b, c), "ehr_embed": r(b, 4), "note_embed": r(b, 4),
        "has_ehr": torch.ones(b, dtype=torch.bool),
        "has_note": torch.ones(b, dtype=torch.bool) if has_note is None else has_note,
        "patient_id": torch.arange(b)})


def tiny_info(n=6, c=3):
    return dataclasses.replace(smoke_task()[2], n_train=n, num_labels=c, label_names=tuple("abc"[:c]))


def test_warm_up_loss_is_bce_plus_lambda_cons_times_l_cons():
    method = make(tiny_info())
    out = fake_output(6, 3)
    y = (torch.rand(6, 3, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    ex = out.extras
    cons = (F.binary_cross_entropy_with_logits(ex["ehr_logits"], y) + F.binary_cross_entropy_with_logits(ex["note_logits"], y)
            + miracl.align_loss(ex["ehr_embed"], ex["note_embed"], ex["has_ehr"], ex["has_note"], ex["patient_id"]))
    loss = method.loss(out.logits, y, torch.arange(6), 1, output=out)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(out.logits, y) + 0.1 * cons)


def test_corrected_loss_mixes_corrected_and_observed_bce_with_beta():
    method = make(tiny_info())
    out = fake_output(6, 3, has_note=torch.tensor([True, True, False, True, True, True]))
    y = torch.zeros(6, 3)
    warm = method.loss(out.logits, y, torch.arange(6), 1, output=out)
    b = method.buffers
    b["labels"].copy_(torch.full((6, 3), 0.7))
    b["beta"].fill_(0.75)
    method.correcting = True
    index = torch.tensor([5, 0, 3, 1, 2, 4])
    z = out.logits
    main = (0.75 * F.binary_cross_entropy_with_logits(z, torch.full((6, 3), 0.7), reduction="none")
            + 0.25 * F.binary_cross_entropy_with_logits(z, y, reduction="none")).mean()
    loss = method.loss(z, y, index, 6, output=out)
    torch.testing.assert_close(loss - main, warm - F.binary_cross_entropy_with_logits(z, y))  # same L_cons term
    # The unimodal probabilities were recorded at the batch's rows; a missing note records the fused p.
    torch.testing.assert_close(b["p_ehr"][index], torch.sigmoid(out.extras["ehr_logits"]))
    torch.testing.assert_close(b["p_note"][index[2]], torch.sigmoid(z[2]))
    torch.testing.assert_close(b["p_note"][index[0]], torch.sigmoid(out.extras["note_logits"][0]))


# --- end_epoch: stages, non-cumulative correction, switches --------------------------------------------

def synthetic_view(epoch, epochs, n=400, c=5, seed=0):
    g = torch.Generator().manual_seed(seed + epoch)
    noisy = (torch.rand(n, c, generator=g) < 0.3).float()
    logits = 3 * (noisy - 0.5) + 2 * torch.randn(n, c, generator=g)
    return EpochView(epoch, epochs, noisy, logits)


def drive(method, epochs=8, upto=None):
    """end_epoch over synthetic epochs (after a loss call allocates the buffers); the last summary."""
    info = method.task
    method.loss(torch.zeros(info.n_train, info.num_labels), torch.zeros(info.n_train, info.num_labels),
                torch.arange(info.n_train), 1, output=fake_output(info.n_train, info.num_labels))
    out = None
    for t in range(1, (upto or epochs) + 1):
        out = method.end_epoch(synthetic_view(t, epochs, info.n_train, info.num_labels))
    return out


def test_stages_fit_any_budget_and_weight_decay_starts_with_the_first_corrected_epoch():
    assert [make().warmup(e) for e in (30, 6, 2)] == [5, 5, 1]
    method = make(tiny_info(400, 5))
    assert drive(method, 30, upto=4) == {"stage": "warm-up"} and method.weight_decay(5) == 0.0
    assert method.corrections() is None
    summary = drive(make(tiny_info(400, 5)), 30, upto=5)
    assert summary["stage"] == "corrected" and summary["beta_next"] == 1.0
    method = make(tiny_info(400, 5), beta_schedule="reference")
    drive(method, 30, upto=5)
    assert method.weight_decay(6) == 1e-5 and method.capture_key(6) is True
    assert method.buffers["beta"].item() == pytest.approx(1 - 0.5 * 6 / 31)
    json.dumps(summary, allow_nan=False)


def test_correction_is_rebuilt_from_the_observed_labels_every_epoch():
    method = make(tiny_info(400, 5))
    drive(method, 8, upto=6)
    first = method.buffers["labels"].clone()
    method.buffers["labels"].fill_(0.123)  # whatever the last correction was ...
    method.end_epoch(synthetic_view(6, 8, 400, 5))
    torch.testing.assert_close(method.buffers["labels"], first)  # ... the same inputs give the same Y_corr


def test_corrected_entries_follow_the_equations_with_pstar_weights_1_0_0():
    method = make(tiny_info(400, 5), pstar_weights="1,0,0", tau=0.0)
    drive(method, 8, upto=6)
    view = synthetic_view(6, 8, 400, 5)
    p = torch.sigmoid(view.train_logits.double()).float()
    labels, part = method.corrections()["labels"], method.corrections()["partition"]
    noisy = part == 2
    assert noisy.any() and (part == 1).any() and (part == 0).any()
    torch.testing.assert_close(labels[noisy], p[noisy])
    torch.testing.assert_close(labels[part == 0], view.noisy_labels[part == 0])


@pytest.mark.parametrize("includes, expected", [(True, [5, 6]), (False, [4, 5])])
def test_switch_memorisation_includes_current_epoch_sets_the_history_length(monkeypatch, includes, expected):
    lengths = []
    real = miracl.difficulty
    monkeypatch.setattr(miracl, "difficulty", lambda h, *args: lengths.append(len(h)) or real(h, *args))
    drive(make(tiny_info(400, 5), memorisation_includes_current_epoch=includes), 8, upto=6)
    assert lengths == expected


@pytest.mark.parametrize("name, dtype", [("float64", torch.float64), ("float32", torch.float32)])
def test_switch_difficulty_dtype_reaches_the_difficulty(monkeypatch, name, dtype):
    dtypes = []
    real = miracl.difficulty
    monkeypatch.setattr(miracl, "difficulty", lambda h, w, d: dtypes.append(d) or real(h, w, d))
    drive(make(tiny_info(400, 5), difficulty_dtype=name), 8, upto=6)
    assert dtypes == [dtype, dtype]
    assert HP["difficulty_dtype"] == "float64"  # the manifest's default: the reference's arithmetic


def test_switch_gmm_backends_give_nearly_the_same_correction():
    a, b = make(tiny_info(400, 5), gmm="torch"), make(tiny_info(400, 5), gmm="sklearn")
    drive(a, 8, upto=6)
    drive(b, 8, upto=6)
    assert (a.buffers["partition"] == b.buffers["partition"]).float().mean() >= 0.99


def test_switch_structural_mask_reaches_the_backbone():
    _, _, info = smoke_task()
    assert make(info, structural_mask="blocking").build_model().backbone.structural_mask == "blocking"
    assert make(info).build_model().backbone.structural_mask == "additive"


# --- what the method can see, and the smoke run -------------------------------------------------------

def tensors_in(obj, seen=None, depth=0):
    """Every tensor reachable from ``obj`` through attributes, dicts, lists and dataclasses."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (str, bytes, int, float, bool, type(None))) or callable(obj) and not hasattr(obj, "__dict__"):
        return []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    return [t for item in items for t in tensors_in(item, seen, depth + 1)]


def test_the_method_never_holds_clean_training_or_test_labels():
    _, data, info = smoke_task()
    noisy = noisy_labels(data)
    received = []

    class Spy(miracl.MIRACL):
        def loss(self, logits, targets, index, epoch, output=None):
            received.append((targets, index, output))
            return super().loss(logits, targets, index, epoch, output=output)

        def end_epoch(self, view):
            received.append(view)
            return super().end_epoch(view)

    method = Spy(info, dict(HP))
    train(method, RunData(data.train, noisy, data.test), SMOKE.budget, 30,
          score_corrections=lambda c: {"scored": True})
    assert not any(f.name in ("labels", "train", "test") for f in dataclasses.fields(info))
    assert all(not isinstance(v, torch.Tensor) for v in vars(info).values())
    clean, test = data.train.labels.float(), data.test.labels.float()
    assert not torch.equal(noisy, clean)
    everything = tensors_in(received) + tensors_in(method)
    assert len(everything) > 20  # targets, rows, outputs and their extras, views, the buffers
    for t in everything:
        if t.shape == clean.shape:
            assert not torch.equal(t.float(), clean)
        assert t.shape != test.shape or not torch.equal(t.float(), test)
        if t.dim() >= 2 and t.shape[-2:] == clean.shape:  # the history, per epoch
            assert not any(torch.equal(slice_.float(), clean) for slice_ in t.reshape(-1, *clean.shape))


def test_smoke_run_corrects_and_the_harness_scores_the_corrections():
    from benchmark.diagnostics import scorer

    _, data, info = smoke_task()
    noisy = noisy_labels(data)
    budget = dataclasses.replace(SMOKE.budget, epochs=3)
    result = train(make(info), RunData(data.train, noisy, data.test), budget, 30, score_corrections=scorer(data.train.labels, noisy))
    assert [row["method"]["stage"] for row in result.curve] == ["warm-up", "corrected", "corrected"]
    assert "corrections" not in result.curve[0]
    scored = result.curve[-1]["corrections"]
    assert scored["agreement_before"] == pytest.approx(float((noisy == data.train.labels.float()).float().mean()), abs=1e-6)
    assert scored["share_clean"] + scored["share_uncertain"] + scored["share_noisy"] == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(result.curve[-1]["train_loss"])
    json.dumps(result.curve, allow_nan=False)
