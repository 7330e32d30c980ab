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
