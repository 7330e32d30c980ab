"""Each loss against a plain float64 NumPy evaluation of its paper formula, written here from the
formula (not from the method's code), on random logits and labels including |z| = 50; plus
gradcheck and the sanity identities of the spec's unit-test checklist."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.method import EpochView
from benchmark.protocol import SMOKE
from benchmark.registry import get_method
from benchmark.trainer import RunData, train

from helpers import method_instance, method_module, noisy_labels, smoke_task

focal, asl, gce, mllsc, multit = (method_module(n) for n in ("focal", "asl", "gce", "mllsc", "multit"))


# --- the reference side: NumPy, float64, straight from the formulas -------------------------------

def log_sigmoid(z):
    return -np.logaddexp(0.0, -z)  # log(1 / (1 + e^-z)) without overflow


def sigmoid(z):
    return np.exp(log_sigmoid(z))


def ref_bce(z, y):
    return -(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))


def ref_focal(z, y, gamma=2.0, alpha=0.25):
    log_pt = np.where(y == 1, log_sigmoid(z), log_sigmoid(-z))
    one_minus_pt = np.where(y == 1, sigmoid(-z), sigmoid(z))
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return -alpha_t * one_minus_pt**gamma * log_pt


def ref_asl(z, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05):
    p = sigmoid(z)
    p_m = np.maximum(p - clip, 0.0)
    loss_pos = (1 - p) ** gamma_pos * log_sigmoid(z)
    loss_neg = p_m**gamma_neg * np.log(np.minimum(sigmoid(-z) + clip, 1.0))  # log(1 - p_m)
    return -(y * loss_pos + (1 - y) * loss_neg)


def ref_asl_official(z, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    """The official ``AsymmetricLoss.forward`` (Ridnik et al.), transcribed from its formula
    (baselines spec, section 3) line by line, elementwise and without the sum: probabilities first,
    the negative's shifted probability by the clip, logs of arguments clamped at eps, one-sided
    focusing weight (1 - pt)^gamma."""
    xs_pos = 1 / (1 + np.exp(-z))
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1)
    los_pos = y * np.log(np.maximum(xs_pos, eps))
    los_neg = (1 - y) * np.log(np.maximum(xs_neg, eps))
    loss = los_pos + los_neg
    pt = xs_pos * y + xs_neg * (1 - y)
    one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
    loss = loss * np.power(1 - pt, one_sided_gamma)
    return -loss


def ref_gce(z, y, q=0.7):
    p_t = np.where(y == 1, sigmoid(z), sigmoid(-z))
    return (1 - p_t**q) / q


def ref_focal_margin(z, y, margin=1.0, gamma=2.0):
    pos = -((1 - sigmoid(z - margin)) ** gamma) * log_sigmoid(z - margin)
    neg = -(sigmoid(z) ** gamma) * log_sigmoid(-z)
    return np.where(y == 1, pos, neg)


def ref_reweighted_bce(z, y, rho_minus, rho_plus):
    p = np.clip(sigmoid(z), 1e-6, 1 - 1e-6)
    noisy1 = (1 - p) * rho_minus + p * (1 - rho_plus)  # [1-p, p] @ T, second entry
    beta = np.where(y == 1, p / noisy1, (1 - p) / (1 - noisy1))
    return beta * ref_bce(z, y)


# --- shared fixtures --------------------------------------------------------------------------------

def random_batch(seed=0, b=16, c=8):
    """float64 logits ~ N(0, 3^2) with a column of +-50 and random 0/1 labels."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(b, c))
    z[:, 0] = np.where(np.arange(b) % 2 == 0, 50.0, -50.0)
    y = rng.integers(0, 2, size=(b, c)).astype(float)
    y[:4, 0] = [1, 1, 0, 0]  # all four (sign of z, label) pairs at |z| = 50
    return z, y


def per_element(loss_fn, z, y):
    """The torch loss of each entry alone: a mean over one element is that element's loss."""
    zt, yt = torch.tensor(z), torch.tensor(y)
    return np.array([[float(loss_fn(zt[i:i + 1, j:j + 1], yt[i:i + 1, j:j + 1])) for j in range(z.shape[1])]
                     for i in range(z.shape[0])])


LOSSES = {
    "focal": (lambda z, y: focal.focal_loss(z, y, 2.0, 0.25), ref_focal),
    "asl": (lambda z, y: asl.asl_loss(z, y, 4.0, 1.0, 0.05, True), ref_asl_official),
    "asl-undetached": (lambda z, y: asl.asl_loss(z, y, 4.0, 1.0, 0.05, False), ref_asl_official),
    "asl-exact": (lambda z, y: asl.asl_loss(z, y, 4.0, 1.0, 0.05, True, log_clamp=0.0), ref_asl),
    "gce": (lambda z, y: gce.gce_loss(z, y, 0.7), ref_gce),
    "mllsc": (lambda z, y: mllsc.focal_margin_loss(z, y, 1.0, 2.0), ref_focal_margin),
    "multit": (lambda z, y: multit.reweighted_bce(z, y, multit.importance_weights(z, y, 0.1, 0.3)),
               lambda z, y: ref_reweighted_bce(z, y, 0.1, 0.3)),
}
# Differentiable as written: ASL's detached focusing weights and MultiT's detached beta are not the
# derivative of the value by design, so gradcheck runs with the weights as fixed inputs instead.
GRADCHECKED = {
    "focal": LOSSES["focal"][0],
    "asl-undetached": LOSSES["asl-undetached"][0],
    "asl-exact-undetached": lambda z, y: asl.asl_loss(z, y, 4.0, 1.0, 0.05, False, log_clamp=0.0),
    "gce": LOSSES["gce"][0],
    "mllsc": LOSSES["mllsc"][0],
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_the_formula_elementwise_and_as_a_mean(name, seed):
    loss_fn, ref = LOSSES[name]
    z, y = random_batch(seed)
    expected = ref(z, y)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(per_element(loss_fn, z, y), expected, rtol=0, atol=1e-6)
    mean = loss_fn(torch.tensor(z), torch.tensor(y))
    assert mean.dtype == torch.float64
    assert abs(float(mean) - expected.mean()) < 1e-6


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_extreme_logits_give_finite_loss_and_gradient(name, dtype):
    z = torch.tensor([[50.0, -50.0, 50.0, -50.0, 0.0, 200.0, -200.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    loss = LOSSES[name][0](z, y)
    loss.backward()
    assert loss.dtype in (torch.float32, torch.float64)  # never computed in half precision
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", GRADCHECKED)
def test_gradcheck(name):
    z, y = random_batch(3, b=6, c=5)
    z[:, 0] = z[:, 0] / 50 * 20  # +-20: saturated yet with a gradient finite differences can see
    zt = torch.tensor(z, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: GRADCHECKED[name](x, torch.tensor(y)), (zt,))


def test_gradcheck_of_the_weighted_losses_with_their_weights_as_inputs():
    z, y = random_batch(4, b=6, c=5)
    zt, yt = torch.tensor(z / 5, requires_grad=True), torch.tensor(y)
    beta = multit.importance_weights(zt, yt, 0.2, 0.1)
    assert torch.autograd.gradcheck(lambda x: multit.reweighted_bce(x, yt, beta), (zt,))


# --- focal ----------------------------------------------------------------------------------------

def test_focal_with_gamma_0_and_alpha_half_is_half_bce():
    z, y = random_batch(5)
    zt, yt = torch.tensor(z), torch.tensor(y)
    torch.testing.assert_close(focal.focal_loss(zt, yt, 0.0, 0.5), 0.5 * F.binary_cross_entropy_with_logits(zt, yt))


# --- ASL ------------------------------------------------------------------------------------------

def test_asl_without_focusing_or_clip_is_bce():
    z, y = random_batch(6)
    zt, yt = torch.tensor(z), torch.tensor(y)
    torch.testing.assert_close(asl.asl_loss(zt, yt, 0.0, 0.0, 0.0, log_clamp=0.0), F.binary_cross_entropy_with_logits(zt, yt))
    # With the default clamp: BCE with each log floored at log(1e-8), i.e. each entry capped at 18.42.
    capped = np.minimum(ref_bce(z, y), -np.log(1e-8)).mean()
    assert abs(float(asl.asl_loss(zt, yt, 0.0, 0.0, 0.0)) - capped) < 1e-12


def test_asl_discards_negatives_below_the_margin():
    z = torch.tensor([[np.log(0.04 / 0.96), np.log(0.05 / 0.95) - 1e-3, -50.0]], dtype=torch.float64,
                     requires_grad=True)  # p = 0.04, just under 0.05, ~0
    loss = asl.asl_loss(z, torch.zeros_like(z), 4.0, 1.0, 0.05, False)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_asl_detached_gradient_is_the_weight_times_the_ce_gradient():
    z, y = random_batch(7)
    zt = torch.tensor(z, requires_grad=True)
    asl.asl_loss(zt, torch.tensor(y), 4.0, 1.0, 0.05, True, log_clamp=0.0).backward()
    p = sigmoid(z)
    p_m = np.maximum(p - 0.05, 0)
    grad_pos = -((1 - p) ** 1.0) * (1 - p)  # w+ * d/dz[-log p]
    grad_neg = p_m**4.0 * p * (1 - p) / np.minimum(1 - p + 0.05, 1.0)  # w- * d/dz[-log(1 - p_m)]
    expected = np.where(y == 1, grad_pos, np.where(p > 0.05, grad_neg, 0.0)) / z.size
    np.testing.assert_allclose(zt.grad.numpy(), expected, rtol=0, atol=1e-9)
    # The default clamp changes exactly the positives with p < 1e-8: there the gradient is 0.
    zt.grad = None
    asl.asl_loss(zt, torch.tensor(y), 4.0, 1.0, 0.05, True).backward()
    clamped = (y == 1) & (p < 1e-8)
    assert clamped.sum() >= 2
    np.testing.assert_allclose(zt.grad.numpy(), np.where(clamped, 0.0, expected), rtol=0, atol=1e-9)


# The official clamp at its edge: -18.4207 = log(1e-8); -18.42 keeps p just above 1e-8.
ASL_EDGE_Z = np.array([-50.0, -30.0, -19.0, -18.43, -18.42, -18.0, -10.0, -3.0, -2.944, -0.5, 0.0, 0.7, 3.0,
                       10.0, 18.0, 18.43, 30.0, 50.0])


@pytest.mark.parametrize("gammas, clip", [((4.0, 1.0), 0.05), ((4.0, 1.0), 0.0), ((0.0, 0.0), 0.0), ((2.0, 0.0), 0.2)])
def test_asl_default_equals_the_official_clamped_formula_at_extreme_and_mid_logits(gammas, clip):
    z = np.concatenate([ASL_EDGE_Z, np.random.default_rng(0).normal(0, 8, 40)])
    for label in (0.0, 1.0):
        y = np.full_like(z, label)
        expected = ref_asl_official(z, y, *gammas, clip)
        assert np.isfinite(expected).all()
        for detach in (True, False):
            ours = per_element(lambda a, b: asl.asl_loss(a, b, *gammas, clip, detach), z[None], y[None])[0]
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
        # float32 logits: the same to float32 rounding (the clamped losses are ~18.4).
        ours32 = [float(asl.asl_loss(torch.tensor([[v]], dtype=torch.float32), torch.tensor([[label]]), *gammas, clip))
                  for v in z]
        np.testing.assert_allclose(ours32, expected, rtol=2e-6, atol=1e-6)


def test_asl_official_clamp_saturates_a_positive_and_log_clamp_0_keeps_the_exact_form():
    z = torch.tensor([[-50.0]], dtype=torch.float64)
    y = torch.ones_like(z)
    official = float(asl.asl_loss(z, y))
    exact = float(asl.asl_loss(z, y, log_clamp=0.0))
    assert abs(official - -np.log(1e-8)) < 1e-9 and abs(official - ref_asl_official(-50.0, 1.0)) < 1e-9
    assert abs(exact - 50.0) < 1e-9 and abs(exact - ref_asl(np.array(-50.0), np.array(1.0))) < 1e-9
    # A larger eps floors sooner: eps = 1e-4 caps the positive at 9.21.
    assert abs(float(asl.asl_loss(z, y, log_clamp=1e-4)) - -np.log(1e-4)) < 1e-9


@pytest.mark.parametrize("detach", [True, False])
def test_asl_gradient_is_zero_where_the_clamp_binds(detach):
    # Positives with p < 1e-8 (z < -18.42) under the default: no gradient through the clamped log; the
    # (undetached) focusing weight (1 - p) still moves, by p log(1e-8) ~ 1e-7 at most.
    z = torch.tensor([[-50.0, -30.0, -19.0, -18.0]], dtype=torch.float64, requires_grad=True)
    asl.asl_loss(z, torch.ones_like(z), detach_focusing=detach).backward()
    grad = z.grad[0] * z.numel()
    if detach:
        assert torch.equal(grad[:3], torch.zeros(3, dtype=torch.float64))
    else:
        p = torch.sigmoid(z.detach()[0, :3])
        torch.testing.assert_close(grad[:3], p * (1 - p) * np.log(1e-8), rtol=1e-9, atol=0)
    assert float(grad[3]) < -0.99  # p = 1.5e-8 > 1e-8: the clamp is off, the gradient ~ -(1 - p)^2
    z.grad = None
    asl.asl_loss(z, torch.ones_like(z), detach_focusing=detach, log_clamp=0.0).backward()
    assert (z.grad[0] * z.numel() < -0.99).all()  # the exact form keeps a gradient everywhere


def test_asl_under_bf16_autocast_is_finite_and_computed_in_float32():
    z = torch.tensor([[50.0, -50.0, 50.0, -50.0, 18.0, -18.0]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = z @ torch.eye(z.shape[1])  # a matmul under autocast: bf16 logits, as the model gives them
        assert logits.dtype == torch.bfloat16
        loss = asl.asl_loss(logits, y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(z.grad).all()
    expected = ref_asl_official(logits.detach().double().numpy(), y.double().numpy()).mean()
    assert abs(float(loss) - expected) < 1e-5


# --- GCE ------------------------------------------------------------------------------------------

def test_gce_gradient_is_bce_gradient_scaled_by_p_t_to_the_q():
    z, y = random_batch(8)
    zt = torch.tensor(z, requires_grad=True)
    gce.gce_loss(zt, torch.tensor(y), 0.7).backward()
    p_t = np.where(y == 1, sigmoid(z), sigmoid(-z))
    np.testing.assert_allclose(zt.grad.numpy(), p_t**0.7 * (sigmoid(z) - y) / z.size, rtol=0, atol=1e-9)


def test_gce_approaches_bce_as_q_goes_to_0_and_is_bounded_by_1_over_q():
    z, y = random_batch(9)
    z[:, 0] = z[:, 0] / 10  # keep log p_t moderate so that the q -> 0 expansion holds
    zt, yt = torch.tensor(z), torch.tensor(y)
    torch.testing.assert_close(gce.gce_loss(zt, yt, 1e-4), F.binary_cross_entropy_with_logits(zt, yt), rtol=1e-3, atol=0)
    worst = gce.gce_loss(torch.full((1, 1), -50.0, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), 0.7)
    assert float(worst) <= 1 / 0.7


# --- MLLSC ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke():
    return smoke_task()


def mllsc_after_warmup(info, epochs=30):
    method = method_instance("mllsc", info)
    labels = torch.zeros(4, info.num_labels)
    method.end_epoch(EpochView(1, epochs, labels, None))
    return method


def test_mllsc_does_not_correct_in_epoch_1_so_positives_survive_initialisation(smoke):
    _, _, info = smoke
    method = method_instance("mllsc", info)
    z = torch.full((3, 2), -4.0, dtype=torch.float64)  # p ~ 0.02: every positive would be flipped
    y = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert float(method.loss(z, y, torch.arange(3), 1)) == pytest.approx(ref_focal_margin(z.numpy(), y.numpy()).mean(), abs=1e-12)
    assert method.flips is None  # nothing was corrected


def test_mllsc_correction_rule_after_the_warm_up(smoke):
    _, _, info = smoke
    method = mllsc_after_warmup(info)
    assert method.start == 11
    p = np.array([0.7, 0.3, 0.5, 0.7, 0.3, 0.5])
    z = torch.tensor(np.log(p / (1 - p)))[None, :]
    y = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    expected_targets = np.array([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]])  # neg p=.7 -> pos, pos p=.3 -> neg
    for epoch, targets in ((10, y.numpy()), (11, expected_targets)):
        got = float(method.loss(z, y, torch.arange(1), epoch))
        assert got == pytest.approx(ref_focal_margin(z.numpy(), targets).mean(), abs=1e-12)
    assert method.flips.tolist() == [1, 1]


def test_mllsc_start_fits_any_budget_and_never_is_epoch_1(smoke):
    _, _, info = smoke
    for epochs, start in ((30, 11), (11, 11), (5, 5), (2, 2)):
        assert mllsc_after_warmup(info, epochs).start == start


def test_mllsc_gradcheck_with_correction_active(smoke):
    _, _, info = smoke
    method = mllsc_after_warmup(info)
    z, y = random_batch(10, b=6, c=5)
    zt = torch.tensor(z / 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: method.loss(x, torch.tensor(y), torch.arange(6), 20), (zt,))


def test_mllsc_in_training_records_no_correction_in_epoch_1(smoke):
    _, data, info = smoke
    method = method_instance("mllsc", info)
    result = train(method, RunData(data.train, noisy_labels(data), data.test), dataclasses.replace(SMOKE.budget, epochs=2), 30)
    first, second = (row["method"] for row in result.curve)
    assert not first["corrected"] and first["pos_to_neg"] == first["neg_to_pos"] == 0
    assert second["corrected"] and second["correction_starts"] == 2


# --- every method through the harness ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["focal", "asl", "gce", "mllsc", "multit"])
def test_method_trains_on_the_smoke_task_with_finite_loss(name, smoke):
    _, data, info = smoke
    entry = get_method(name)
    method = entry.load_class()(info, entry.hparams)
    result = train(method, RunData(data.train, noisy_labels(data), data.test), SMOKE.budget, 30)
    assert all(np.isfinite(row["train_loss"]) for row in result.curve)
    assert 0 < result.final["map"] <= 1
