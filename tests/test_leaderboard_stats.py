"""The leaderboard's statistics against SciPy, on synthetic records built in the test."""
import math

import numpy as np
import pytest
from scipy import stats as sp

from leaderboard import stats
from leaderboard.aggregate import Options, build_board
from leaderboard.report import run_row
from record_factory import DIA, MAPS, SEEDS, board_records


@pytest.fixture(scope="module")
def rows():
    return [run_row(r) for r in board_records()]


def cells_of(board, task="syn-phe"):
    table = next(t for t in board["tracks"][0]["tasks"] if t["task"] == task)
    return {(r["method"], c["noise"]): c for r in table["rows"] for c in r["cells"]}


def test_cell_means_and_ddof1_std_match_numpy(rows):
    cells = cells_of(build_board(rows, Options()))
    for method, display in (("bce", "FlexCare (BCE)"), ("focal", "Focal"), ("gce", "GCE")):
        for noise, values in MAPS[method].items():
            cell = cells[(display, noise)]
            assert cell["mean"] == pytest.approx(np.mean(values))
            assert cell["std"] == pytest.approx(np.std(values, ddof=1))
            assert cell["std"] == pytest.approx(sp.tstd(values))  # SciPy's sample std is ddof=1 too
            assert cell["n"] == 3 and [s for s, _ in cell["values"]] == sorted(SEEDS)


@pytest.mark.parametrize("test", ["paired", "welch"])
def test_best_against_second_best_p_values_match_scipy(rows, test):
    cells = cells_of(build_board(rows, Options(test=test)))
    # sym-20: BCE best, Focal second; bal-40: Focal best, GCE second.
    for noise, (best, second), (bm, sm) in [("sym-20", ("FlexCare (BCE)", "Focal"), ("bce", "focal")),
                                            ("bal-40", ("Focal", "GCE"), ("focal", "gce"))]:
        a, b = MAPS[bm][noise], MAPS[sm][noise]
        expected = (sp.ttest_rel(a, b, alternative="greater") if test == "paired"
                    else sp.ttest_ind(a, b, equal_var=False, alternative="greater")).pvalue
        cell = cells[(best, noise)]
        assert cell["best"] and cell["vs"] == second
        assert cell["p"] == pytest.approx(expected) and cell["p_adjusted"] == pytest.approx(expected)
        assert cell["stars"] == stats.stars(expected)
        assert not cells[(second, noise)]["best"]


def test_paired_test_uses_only_the_shared_seeds():
    best, other = {30: 0.5, 40: 0.52, 100: 0.55}, {30: 0.4, 40: 0.45, 7: 0.9}
    assert stats.one_sided_p(best, other) == pytest.approx(sp.ttest_rel([0.5, 0.52], [0.4, 0.45],
                                                                        alternative="greater").pvalue)
    assert math.isnan(stats.one_sided_p({30: 0.5}, {30: 0.4}))


def test_holm_and_benjamini_hochberg_adjustments():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # Holm by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max.
    holm = stats.adjust(p, "holm")
    assert holm[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(holm[4])
    bh = stats.adjust(p, "bh")
    assert bh[:4] == pytest.approx(sp.false_discovery_control(p[:4], method="bh")) and math.isnan(bh[4])
    assert stats.adjust(p, "none")[:4] == p[:4]


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_corrected_p_values_on_the_board_are_adjusted_over_the_tables_tests(rows, correction):
    raw = cells_of(build_board(rows, Options()))
    adjusted = cells_of(build_board(rows, Options(correction=correction)))
    keys = [k for k, c in raw.items() if c["p"] is not None and not c["best"]]
    expected = stats.adjust([raw[k]["p"] for k in keys], correction)
    assert len(keys) == 6  # 3 noise settings x (best vs 2 others); flagged cells are not tested
    assert [adjusted[k]["p_adjusted"] for k in keys] == pytest.approx(expected)
    if correction == "bh":
        assert expected == pytest.approx(sp.false_discovery_control([raw[k]["p"] for k in keys]))


def test_tie_group_is_the_methods_not_significantly_worse_than_the_best(rows):
    cells = cells_of(build_board(rows, Options()))
    for key, cell in cells.items():
        if cell["p_adjusted"] is not None and not cell["best"]:
            assert cell["tie"] == (cell["p_adjusted"] >= 0.05), key
    assert cells[("FlexCare (BCE)", "sym-20")]["tie"] and cells[("FlexCare (BCE)", "sym-20")]["best"]


def test_friedman_statistic_and_average_ranks_match_scipy(rows):
    summary = build_board(rows, Options())["tracks"][0]["summary"]
    methods = ["FlexCare (BCE)", "Focal", "GCE"]
    names = {"FlexCare (BCE)": "bce", "Focal": "focal", "GCE": "gce"}
    assert sorted(summary["methods"]) == methods
    # The cells every method has without flags (ASL's two seeds and the mixed cells are left out).
    assert summary["cell_names"] == ["syn-dia/sym-20", "syn-phe/asym-0-20", "syn-phe/bal-40", "syn-phe/sym-20"]
    assert summary["left_out"] == []
    noises = ["asym-0-20", "bal-40", "sym-20"]
    matrix = np.array([[np.mean(DIA[names[m]]) for m in methods]]
                      + [[np.mean(MAPS[names[m]][n]) for m in methods] for n in noises])
    ranks = sp.rankdata(-matrix, axis=1).mean(axis=0)
    assert [summary["ranks"][m] for m in methods] == pytest.approx(ranks)
    expected = sp.friedmanchisquare(*matrix.T)
    assert summary["friedman"]["statistic"] == pytest.approx(expected.statistic)
    assert summary["friedman"]["p"] == pytest.approx(expected.pvalue)


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demsar (2006), Table 5: q_0.05 = 2.343 (k=3), 2.569 (k=4), 2.850 (k=6).
    for k, q in ((3, 2.343), (4, 2.569), (6, 2.850)):
        assert stats.nemenyi_cd(k, 10) == pytest.approx(q * math.sqrt(k * (k + 1) / 60), abs=2e-3)


@pytest.mark.parametrize("n", [3, 5])
def test_at_the_mde_the_paired_test_rejects_with_power_08_by_simulation(n):
    """The MDE's definition, checked by brute force: per-seed differences drawn with mean MDE and the
    given std are rejected by the one-sided paired t-test (plain NumPy) in 80 % of 400,000 draws."""
    sd = 0.013
    mde = stats.paired_mde(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(400_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    critical = {3: 2.919985580355516, 5: 2.131846786326649}[n]  # t_{0.95, n-1} from tables
    assert (t > critical).mean() == pytest.approx(0.8, abs=0.003)
    assert stats.paired_mde(sd, 1) is None and stats.paired_mde(None, 3) is None


def test_a_columns_mde_pools_the_spread_of_its_pairs_with_the_best(rows):
    """sym-20 of syn-phe: FlexCare (BCE) is best; Focal and GCE are tested against it (ASL, 2 seeds,
    is flagged): the std of their per-seed differences pooled by NumPy, the MDE at 3 seeds."""
    board = build_board(rows, Options())
    table = next(t for t in board["tracks"][0]["tasks"] if t["task"] == "syn-phe")
    mde = next(n for n in table["noises"] if n["name"] == "sym-20")["mde"]
    best = np.array(MAPS["bce"]["sym-20"])
    diffs = [best - np.array(MAPS[m]["sym-20"]) for m in ("focal", "gce")]
    pooled = math.sqrt(sum(((d - d.mean()) ** 2).sum() for d in diffs) / sum(len(d) - 1 for d in diffs))
    assert mde["sd_diff"] == pytest.approx(pooled) and (mde["seeds"], mde["pairs"]) == (3, 2)
    assert mde["mde"] == pytest.approx(stats.paired_mde(pooled, 3)) and mde["mde"] == pytest.approx(
        pooled * 2.2972747673, rel=1e-6)  # the non-central t's multiplier at 3 seeds, power 0.8, alpha 0.05
    focal = cells_of(board)[("Focal", "sym-20")]
    assert focal["mde"] == pytest.approx(stats.paired_mde(np.std(diffs[0], ddof=1), 3))
    bal = next(n for n in table["noises"] if n["name"] == "asym-20-0")
    assert bal["mde"] is None  # no eligible cell: no test, no MDE
