"""MultiT: its transition estimator, its selection without clean labels, and its stages."""
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.method import EpochView
from benchmark.noise import flip_labels
from benchmark.protocol import SMOKE
from benchmark.trainer import RunData, train

from helpers import method_instance, method_module, noisy_labels, smoke_task

multit = method_module("multit")
# (rho_plus, rho_minus) = (P(1 -> 0), P(0 -> 1)), the benchmark's names.
RATES = [(0.2, 0.2), (0.4, 0.0), (0.0, 0.4), (0.2, 0.4), (0.4, 0.2), (0.3, 0.1)]


def correlated_labels(n, c, seed=0):
    """Binary labels driven by three shared latent factors, so that labels inform each other."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) @ (1.5 * rng.normal(size=(3, c))) + 0.7 * rng.normal(size=(n, c))
    return (z > rng.uniform(0.3, 1.5, size=c)).astype(np.int64)


@pytest.mark.parametrize("rho_plus, rho_minus", RATES)
def test_estimator_recovers_the_rates_from_the_truly_clean_samples(rho_plus, rho_minus):
    clean = correlated_labels(50_000, 10)
    noisy = flip_labels(clean, rho_plus, rho_minus, 123)
    estimates = np.array([multit.estimate_label(noisy, noisy == clean, i) for i in range(10)])
    assert np.abs(estimates[:, 1] - rho_plus).max() < 0.02
    assert np.abs(estimates[:, 0] - rho_minus).max() < 0.02


def test_an_uncorrelated_auxiliary_label_carries_no_information():
    rng = np.random.default_rng(1)
    clean = np.concatenate([correlated_labels(50_000, 2), rng.integers(0, 2, size=(50_000, 1))], axis=1)
    noisy = flip_labels(clean, 0.2, 0.2, 123)
    est = multit.pairwise(noisy, noisy == clean, 0)  # auxiliaries: label 1 (correlated), 2 (not)
    assert abs(est["det"][1]) < 1e-3 < abs(est["det"][0])


def test_dual_t_with_one_hot_predictions_of_the_clean_labels_gives_the_realised_flip_rates():
    clean = correlated_labels(20_000, 1)[:, 0]
    noisy = flip_labels(clean[:, None], 0.3, 0.1, 123)[:, 0]
    rho_minus, rho_plus = multit.dual_t(clean.astype(float), noisy)
    assert rho_plus == pytest.approx(np.mean(noisy[clean == 1] == 0))
    assert rho_minus == pytest.approx(np.mean(noisy[clean == 0] == 1))


def test_identity_transition_makes_the_reweighted_loss_plain_bce():
    z = torch.randn(64, 25, dtype=torch.float64) * 5
    y = (torch.rand(64, 25) < 0.3).double()
    zeros = torch.zeros(25, dtype=torch.float64)
    beta = multit.importance_weights(z, y, zeros, zeros)
    assert torch.equal(beta, torch.ones_like(beta))
    torch.testing.assert_close(multit.reweighted_bce(z, y, beta), F.binary_cross_entropy_with_logits(z, y))


# --- the full method's own selection: no clean labels ------------------------------------------------

def synthetic_task(n=20_000, d=16, c=8, seed=0):
    """Features that determine correlated labels through shared factors (a learnable task)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    weights = rng.normal(size=(d, 3)) @ rng.normal(size=(3, c)) + 0.5 * rng.normal(size=(d, c))
    z = x @ weights / np.sqrt(d) * 2 - rng.uniform(0.5, 1.5, size=c) + 0.3 * rng.normal(size=(n, c))
    return torch.from_numpy(x).float(), (z > 0).astype(np.int64)


def run_multit_warmup(rho_plus, rho_minus, epochs=30, seed=0):
    """MultiT's loss and end_epoch driving a small MLP through its warm-up: returns the estimate."""
    x, clean = synthetic_task(seed=seed)
    noisy = torch.from_numpy(flip_labels(clean, rho_plus, rho_minus, 123)).float()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, noisy.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    method = method_instance("multit", None)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        logits = torch.empty_like(noisy)
        for index in torch.randperm(len(x), generator=order).split(256):
            out = model(x[index])
            loss = method.loss(out, noisy[index], index, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            logits[index] = out.detach()
        diagnostics = method.end_epoch(EpochView(epoch, epochs, noisy, logits))
        if diagnostics["stage"] == "estimated":
            return diagnostics


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("rho_plus, rho_minus", [(0.2, 0.2), (0.4, 0.2)])
def test_own_selection_gets_close_to_the_true_rates(rho_plus, rho_minus, one_thread):
    """Measured (README): mean |error| 0.030 / 0.019 at (0.2, 0.2) and 0.039 / 0.028 at (0.4, 0.2)."""
    est = run_multit_warmup(rho_plus, rho_minus)
    err_plus = np.abs(np.array(est["rho_plus"]) - rho_plus)
    err_minus = np.abs(np.array(est["rho_minus"]) - rho_minus)
    assert est["estimator"] == ["pairwise"] * 8
    assert err_plus.mean() < 0.05 and err_minus.mean() < 0.05
    assert err_plus.max() < 0.1 and err_minus.max() < 0.1


# --- stages inside the harness's budget ---------------------------------------------------------------

@pytest.mark.parametrize("epochs, expected", [
    (30, (10, 8, [4, 5, 6, 7, 8])),
    (10, (9, 8, [4, 5, 6, 7, 8])),
    (6, (5, 5, [1, 2, 3, 4, 5])),
    (2, (1, 1, [1])),
])
def test_stages_fit_inside_any_budget(epochs, expected):
    warmup, sample, window = method_instance("multit", None).stages(epochs)
    assert (warmup, sample, list(window)) == expected
    assert warmup < epochs  # at least one reweighted epoch


def test_smoke_run_estimates_after_the_warm_up_and_records_json_transition_matrices():
    _, data, info = smoke_task()
    method = method_instance("multit", info)
    result = train(method, RunData(data.train, noisy_labels(data), data.test), dataclasses.replace(SMOKE.budget, epochs=3), 30)
    stages = [row["method"]["stage"] for row in result.curve]
    assert stages == ["warm-up", "estimated", "reweighted"]
    est = result.curve[1]["method"]
    assert np.array(est["transition"]).shape == (25, 2, 2)
    np.testing.assert_allclose(np.array(est["transition"]).sum(axis=2), 1.0, atol=1e-4)
    assert set(est["estimator"]) <= {"pairwise", "dual-t", "identity"}
    json.dumps(result.curve, allow_nan=False)  # what the record store writes


def test_small_loss_scores_are_normalised_within_each_label_and_noisy_value():
    rng = np.random.default_rng(0)
    noisy = (rng.random((50, 3)) < 0.3).astype(np.int64)
    probs = rng.uniform(0.01, 0.99, size=(4, 50, 3))
    score = multit.small_loss_scores(probs, noisy)
    for j in range(3):
        for value in (0, 1):
            rows = noisy[:, j] == value
            loss = -np.log(probs[:, rows, j] if value else 1 - probs[:, rows, j])
            lo, hi = loss.min(1, keepdims=True), loss.max(1, keepdims=True)
            np.testing.assert_allclose(score[rows, j], ((loss - lo) / (hi - lo)).mean(0))
