import numpy as np
import pytest

from benchmark.noise import flip_labels, label_checksum, make_noisy, noise_seed_for
from benchmark.protocol import parse_noise


def reference_flip(y, rho_plus, rho_minus, seed=123):
    """The reference's literal rule: global legacy RNG, label-major loops, one choice() per entry."""
    np.random.seed(seed)
    out = y.copy()
    n, num_labels = y.shape
    for label in range(num_labels):
        for i in range(n):
            if y[i, label] == 1:
                out[i, label] = np.random.choice([1, 0], p=[1 - rho_plus, rho_plus])
            else:
                out[i, label] = np.random.choice([0, 1], p=[1 - rho_minus, rho_minus])
    return out


@pytest.mark.parametrize("rates", [(0.2, 0.2), (0.0, 0.4), (0.4, 0.0), (0.4, 0.2), (0.2, 0.0448)])
def test_noisy_matrix_equals_the_reference_draw_rule(rates):
    y = (np.random.default_rng(7).random((37, 6)) < 0.3).astype(np.int64)
    np.testing.assert_array_equal(flip_labels(y, *rates, seed=123), reference_flip(y, *rates))


def test_empirical_flip_rates_are_within_three_standard_errors():
    y = (np.random.default_rng(1).random((20000, 25)) < 0.18).astype(np.uint8)
    for rho_plus, rho_minus in [(0.2, 0.2), (0.4, 0.2), (0.0, 0.4)]:
        noisy = flip_labels(y, rho_plus, rho_minus, seed=123)
        for clean_value, rho in ((1, rho_plus), (0, rho_minus)):
            entries = y == clean_value
            rate = (noisy[entries] != clean_value).mean()
            se = np.sqrt(max(rho * (1 - rho), 1e-12) / entries.sum())
            assert abs(rate - rho) <= 3 * se, (clean_value, rate, rho)


def test_reference_noise_seed_is_fixed_and_per_seed_varies():
    assert {noise_seed_for("reference", s) for s in (30, 40, 100)} == {123}
    assert [noise_seed_for("per-seed", s) for s in (30, 40, 100)] == [30, 40, 100]
    with pytest.raises(ValueError, match="noise seed policy"):
        noise_seed_for("random", 30)


def test_make_noisy_checksums_and_reports_realised_rates():
    y = (np.random.default_rng(2).random((5000, 25)) < 0.2).astype(np.uint8)
    a = make_noisy(y, parse_noise("asym-40-20"), 123)
    b = make_noisy(y, parse_noise("asym-40-20"), 123)
    c = make_noisy(y, parse_noise("asym-40-20"), 124)
    assert a.checksum == b.checksum == label_checksum(a.labels) != c.checksum
    assert a.realised_rho_plus == pytest.approx(0.4, abs=0.02)
    assert a.realised_rho_minus == pytest.approx(0.2, abs=0.01)
    assert y.sum() == (y == 1).sum()  # the clean matrix is left untouched


def test_balanced_noise_equalises_expected_flips_per_sample():
    y = (np.random.default_rng(3).random((20000, 25)) < 0.183).astype(np.uint8)
    noisy = make_noisy(y, parse_noise("bal-40"), 123)
    lost = ((y == 1) & (noisy.labels == 0)).sum(1).mean()
    gained = ((y == 0) & (noisy.labels == 1)).sum(1).mean()
    assert lost == pytest.approx(gained, rel=0.03)


def test_non_binary_labels_are_refused():
    with pytest.raises(ValueError, match="binary"):
        flip_labels(np.array([[0, 2]]), 0.2, 0.2, 123)


def test_flips_are_nested_across_the_grid_for_one_draw():
    """One uniform per entry and 'flip iff u >= 1 - rho': for the same draw, the entries flipped at a
    lower rate of a direction are a subset of those flipped at any higher rate of that direction, for
    every label and every pair of the paper's settings (so mAP-vs-rho curves are paired within a seed)."""
    from benchmark.protocol import NOISE_SETTINGS

    rng = np.random.default_rng(0)
    clean = (rng.random((600, 25)) < 0.18).astype(np.int64)
    noisy = {s.name: make_noisy(clean, s, 123) for s in NOISE_SETTINGS}
    pairs = 0
    for a in noisy.values():
        for b in noisy.values():
            for rate, cls in (("rho_plus", 1), ("rho_minus", 0)):
                if getattr(a, rate) <= getattr(b, rate):
                    flipped_a = (a.labels != clean) & (clean == cls)
                    flipped_b = (b.labels != clean) & (clean == cls)
                    assert not (flipped_a & ~flipped_b).any(), (a.rho_plus, a.rho_minus, b.rho_plus, b.rho_minus)
                    pairs += 1
    assert pairs > len(NOISE_SETTINGS) ** 2  # both directions of most pairs were compared
