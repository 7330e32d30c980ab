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


# --- instance-dependent under-coding ----------------------------------------------------------------

from benchmark.noise import standardised, under_code  # noqa: E402
from benchmark.protocol import QUICK, SMOKE  # noqa: E402


def _random_task(n=4000, labels=6, seed=0):
    rng = np.random.default_rng(seed)
    clean = (rng.random((n, labels)) < 0.25).astype(np.uint8)
    evidence = rng.normal(size=(n, labels)) + 1.5 * clean  # positives carry more evidence, unevenly
    return clean, evidence


@pytest.fixture(scope="module")
def quick_task():
    """The quick track's synthetic phenotyping task, its clean training labels and the generator's evidence."""
    from benchmark.data.evidence import train_evidence
    from benchmark.runner import load_task

    spec = QUICK.task("syn-phe")
    data = load_task(spec)
    return spec, data, train_evidence(spec, data)


def test_under_40_realises_0_40_per_label_within_3_se_and_its_twin_the_same_rates(quick_task):
    spec, data, evidence = quick_task
    clean = data.train.labels.numpy()
    under = make_noisy(clean, parse_noise("under-40"), 123, evidence)
    twin = make_noisy(clean, parse_noise("under-40").twin(), 123)
    assert parse_noise("under-40").twin().name == "asym-40-0"
    positives = clean.sum(0)
    for label, (rate, twin_rate) in enumerate(zip(under.realised_rho_plus_per_label, twin.realised_rho_plus_per_label)):
        assert abs(rate - 0.4) <= 3 * np.sqrt(0.4 * 0.6 / positives[label]), (label, rate)
        assert rate == twin_rate  # the same count of positives dropped, label by label
    assert under.realised_rho_minus == 0.0 and not ((clean == 0) & (under.labels == 1)).any()
    # Same counts, other entries: the gap between the two settings is instance dependence alone.
    assert ((under.labels != clean) != (twin.labels != clean)).any()
    assert under.summary()["under_coding"] == {"strength": 2.0, "twin": "asym-40-0", "evidence": evidence.summary()}
    assert under.checksum == label_checksum(under.labels) != twin.checksum


def test_under_coding_drops_the_least_evident_positives_most_often(quick_task):
    """By evidence decile within each label (pooled), the share of positives dropped falls at every step."""
    from benchmark.noise_report import Report

    spec, data, evidence = quick_task
    clean = data.train.labels.numpy()
    setting = parse_noise("under-40")
    report = Report(spec.name, "quick", setting, make_noisy(clean, setting, 123, evidence), data.label_names, clean,
                    setting.twin(), make_noisy(clean, setting.twin(), 123), evidence)
    rates = [row["flip_rate"] for row in report.curve()]
    assert len(rates) == 10 and all(a > b for a, b in zip(rates, rates[1:])), rates
    assert rates[0] > 0.75 and rates[-1] < 0.1
    twin = [row["twin_flip_rate"] for row in report.curve()]
    assert max(twin) - min(twin) < 0.1  # the class-conditional twin is flat in the evidence
    for row in report.curve():  # the law's limit describes the draw
        assert abs(row["flip_rate"] - row["law"]) < 0.05, row


def test_the_miss_probability_follows_the_logistic_law_of_the_evidence():
    """Many positives: P(dropped | z) is sigmoid(tau - 2 z), falling in z, with tau set by the rate."""
    from benchmark.noise_report import expected_miss

    clean, evidence = _random_task(n=60000, labels=2)
    noisy = under_code(clean, 0.3, evidence, 5)
    expected = expected_miss(clean, evidence, [0.3, 0.3])
    for label in range(2):
        pos = clean[:, label] == 1
        z = standardised(evidence[pos, label])
        dropped = noisy[pos, label] == 0
        edges = np.quantile(z, np.linspace(0, 1, 11))
        bins = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, 9)
        got = np.array([dropped[bins == b].mean() for b in range(10)])
        law = np.array([expected[pos, label][bins == b].mean() for b in range(10)])
        assert np.all(np.diff(got) < 0), got
        assert np.abs(got - law).max() < 0.03, (got, law)


@pytest.mark.parametrize("seed", [123, 7])
def test_under_coding_is_nested_across_rates_for_one_draw(seed):
    """The counts are the twin's (nested across rates) and the propensities do not depend on the rate:
    the positives dropped at a lower rate are a subset of those dropped at any higher rate, per label."""
    clean, evidence = _random_task(n=800, labels=25, seed=seed)
    rates = [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.95]
    dropped = {r: (clean == 1) & (under_code(clean, r, evidence, seed) == 0) for r in rates}
    for low in rates:
        for high in rates:
            if low <= high:
                assert not (dropped[low] & ~dropped[high]).any(), (low, high)
    # The settings by name: under-20 within under-40, and neither flips a negative.
    a = make_noisy(clean, parse_noise("under-20"), seed, evidence)
    b = make_noisy(clean, parse_noise("under-40"), seed, evidence)
    assert not ((a.labels != clean) & (b.labels == clean)).any()
    assert a.realised_rho_minus == b.realised_rho_minus == 0.0


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.125])
def test_under_coding_drops_exactly_the_twins_count_per_label(rate):
    clean, evidence = _random_task(n=500, labels=25, seed=3)
    under = under_code(clean, rate, evidence, 123)
    twin = flip_labels(clean, rate, 0.0, 123)
    np.testing.assert_array_equal(((clean == 1) & (under == 0)).sum(0), ((clean == 1) & (twin == 0)).sum(0))


def test_without_varying_evidence_under_coding_has_no_instance_dependence():
    """Evidence equal for every positive of a label: z = 0, the coder's choice is the logistic noise alone."""
    clean, _ = _random_task(n=20000, labels=2, seed=4)
    flat = np.ones(clean.shape)
    a, b = under_code(clean, 0.4, flat, 123), under_code(clean, 0.4, 5 * flat - 2, 123)
    np.testing.assert_array_equal(a, b)  # only the evidence's variation within a label matters
    shifted = under_code(clean, 0.4, 3 * _random_task(n=20000, labels=2, seed=4)[1] + 7, 123)
    np.testing.assert_array_equal(shifted, under_code(clean, 0.4, _random_task(n=20000, labels=2, seed=4)[1], 123))


def test_under_coding_refuses_missing_or_misshapen_evidence():
    clean, evidence = _random_task(n=50, labels=3)
    with pytest.raises(ValueError, match="under-40 \\(under-coding\\) needs the task's evidence"):
        make_noisy(clean, parse_noise("under-40"), 123)
    with pytest.raises(ValueError, match="evidence has shape \\(50, 2\\), the labels \\(50, 3\\)"):
        under_code(clean, 0.4, evidence[:, :2], 123)
    bad = evidence.copy()
    bad[np.argmax(clean[:, 0]), 0] = np.nan
    with pytest.raises(ValueError, match="evidence must be finite for every positive"):
        under_code(clean, 0.4, bad, 123)


# Pinned: the class-conditional families' noisy matrices are the bytes they were before under-coding.
PINNED_CHECKSUMS = {"sym-20": "c5dcbad4859a712c", "sym-40": "77f7d19780a47d6f", "asym-0-20": "f2ba134c957af5af",
                    "asym-0-40": "366a7e9e9ee39444", "asym-20-0": "6ef076a536e2efb1", "asym-20-40": "430900158f11f7e2",
                    "asym-40-0": "bdee9dc7500b5613", "asym-40-20": "6dc669bf793c41cb", "bal-20": "6b81c83ad0aa3074",
                    "bal-40": "4dfd6c62fefb90e8"}


def test_the_class_conditional_draws_are_unchanged():
    y = (np.random.default_rng(11).random((300, 25)) < 0.18).astype(np.uint8)
    assert {name: make_noisy(y, parse_noise(name), 123).checksum[:16] for name in PINNED_CHECKSUMS} == PINNED_CHECKSUMS


def test_per_label_realised_rates_are_reported_for_every_family():
    clean, _ = _random_task(n=400, labels=4)
    clean[:, 3] = 0  # a label without positives
    summary = make_noisy(clean, parse_noise("sym-20"), 123).summary()
    assert len(summary["realised_rho_plus_per_label"]) == 4 and summary["realised_rho_plus_per_label"][3] is None
    assert "under_coding" not in summary
    flipped = make_noisy(clean, parse_noise("sym-20"), 123).labels != clean
    assert summary["realised_rho_minus_per_label"][0] == flipped[clean[:, 0] == 0, 0].mean()


# --- ehrbench noise show --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["under-"], "malformed noise setting 'under-': expected sym-R, asym-RPLUS-RMINUS, bal-RPLUS or under-RPLUS"),
    (["under-100"], "malformed noise setting 'under-100': rate 100 is not in [0, 100)"),
    (["under-40-0"], "malformed noise setting 'under-40-0': expected"),
    (["under-4O"], "malformed noise setting 'under-4O'"),
    (["undr-40"], "unknown noise setting 'undr-40'; did you mean 'under-40'?"),
    (["under-40", "--task", "syn-ph"], "unknown task 'syn-ph' in track 'smoke'; did you mean 'syn-phe'?"),
    (["under-40", "--track", "smok"], "unknown track 'smok'; did you mean 'smoke'?"),
    (["under-40", "--seed", "-3"], "--seed: seed -3 is not in [0, 2**32)"),
])
def test_noise_show_refuses_malformed_input_in_one_line(argv, message, capsys, tmp_path, monkeypatch):
    from benchmark.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["noise", "show", argv[0], "--task", "syn-phe", "--track", "smoke", *argv[1:]]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("ehrbench: error: ")
    assert message in err
    assert not any(tmp_path.iterdir())  # refused before any work


def test_noise_show_prints_rates_checksums_and_the_evidence_curve_and_draws_it(capsys, tmp_path):
    from benchmark.cli import main
    from benchmark.data.evidence import train_evidence
    from benchmark.runner import load_task

    png = tmp_path / "fig" / "under.png"
    assert main(["noise", "show", "under-40", "--task", "syn-phe", "--track", "smoke", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    spec = SMOKE.task("syn-phe")
    data = load_task(spec)
    clean = data.train.labels.numpy()
    evidence = train_evidence(spec, data)
    under = make_noisy(clean, parse_noise("under-40"), 123, evidence)
    twin = make_noisy(clean, parse_noise("asym-40-0"), 123)
    assert f"noisy-label checksum {under.checksum}" in out and f"twin asym-40-0: checksum {twin.checksum}" in out
    assert f"evidence: generator (version 1), checksum {evidence.checksum}" in out
    assert "flip rate of clean positives by evidence decile" in out and "asym-40-0 rho+" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A class-conditional setting: both directions per label, no evidence, no twin.
    assert main(["noise", "show", "sym-20", "--task", "syn-phe", "--track", "smoke", "--png", "none",
                 "--seed", "40", "--noise-seed", "per-seed"]) == 0
    out = capsys.readouterr().out
    assert f"noisy-label checksum {make_noisy(clean, parse_noise('sym-20'), 40).checksum}" in out
    assert "noise seed 40" in out and "rho- realised" in out and "evidence" not in out and "figure" not in out


def test_an_under_coded_runs_command_plans_its_spec_again():
    """The leaderboard's command behind an under-coding run names only --noise; planning it gives the
    spec with the law's and the evidence's versions again."""
    import shlex

    from benchmark.cli import _grids, build_parser
    from benchmark.runner import plan
    from leaderboard.reproduce import command, gaps

    for spec in plan("bce", "smoke", ["syn-phe"], ["under-40", "under-12.5"], [30]).specs:
        line = command(spec)
        assert f"--noise {spec['noise']['name']}" in line and gaps(spec) == []
        assert _grids(build_parser().parse_args(shlex.split(line)[1:]))[0].specs == [spec]
