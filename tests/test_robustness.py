"""The robustness summary (leaderboard/robustness.py) against a NumPy computation written here."""
import numpy as np
import pytest

from leaderboard import Options, build
from leaderboard.aggregate import build_board
from leaderboard.report import run_row
from leaderboard.tables import render
from record_factory import SEEDS, make_record, write_records

# Per method and setting, the mAP of seeds 30, 40, 100. mllsc (no display name in the factory) has no asym-40-0: no asymmetric area.
MAPS = {
    "bce": {"sym-20": (0.44, 0.45, 0.46), "sym-40": (0.30, 0.31, 0.32), "asym-0-20": (0.47, 0.47, 0.47),
            "asym-0-40": (0.44, 0.43, 0.45), "asym-40-0": (0.40, 0.41, 0.42), "bal-20": (0.46, 0.46, 0.47)},
    "gce": {"sym-20": (0.36, 0.37, 0.38), "sym-40": (0.32, 0.31, 0.30), "asym-0-20": (0.40, 0.41, 0.39),
            "asym-0-40": (0.42, 0.42, 0.42), "asym-40-0": (0.22, 0.21, 0.23), "bal-20": (0.30, 0.29, 0.28)},
    "mllsc": {"sym-20": (0.29, 0.29, 0.30), "sym-40": (0.20, 0.21, 0.21), "asym-0-20": (0.30, 0.29, 0.28)},
}


def records():
    return [make_record(m, n, s, v) for m, cells in MAPS.items() for n, vs in cells.items() for s, v in zip(SEEDS, vs)]


def mean(method, noise):
    return float(np.mean(MAPS[method][noise]))


def test_areas_and_ratios_to_flexcare_bce_match_numpy():
    (table,) = build_board([run_row(r) for r in records()], Options())["tracks"][0]["tasks"]
    rb = table["robustness"]
    rows = {r["method"]: r for r in rb["rows"]}
    assert rb["baseline"] == "FlexCare (BCE)"
    for method, display in (("bce", "FlexCare (BCE)"), ("gce", "GCE")):
        sym = np.trapezoid([mean(method, "sym-20"), mean(method, "sym-40")], [20, 40]) / 20
        # asym (0,20) is rate 10; (0,40) and (40,0) are both rate 20: their mean is the point there.
        at20 = (mean(method, "asym-0-40") + mean(method, "asym-40-0")) / 2
        asym = np.trapezoid([mean(method, "asym-0-20"), at20], [10, 20]) / 10
        assert rows[display]["area"] == {"sym": pytest.approx(sym), "asym": pytest.approx(asym)}
        for noise in MAPS[method]:
            assert rows[display]["relative"][noise] == pytest.approx(mean(method, noise) / mean("bce", noise))
    assert rows["mllsc"]["area"]["asym"] is None and rows["mllsc"]["area"]["sym"] == pytest.approx(
        (mean("mllsc", "sym-20") + mean("mllsc", "sym-40")) / 2)
    assert rows["mllsc"]["relative"]["asym-40-0"] is None
    assert rb["settings"] == {"sym": ["sym-20", "sym-40"], "asym": ["asym-0-20", "asym-0-40", "asym-40-0"]}
    assert "robustness (areas; mAP relative to FlexCare (BCE))" in render(build_board([run_row(r) for r in records()], Options()))


def test_without_the_baseline_there_are_no_ratios_but_areas(tmp_path):
    no_bce = [r for r in records() if r["spec"]["method"]["name"] != "bce"]
    (table,) = build_board([run_row(r) for r in no_bce], Options())["tracks"][0]["tasks"]
    assert table["robustness"]["baseline"] is None
    assert all(v is None for r in table["robustness"]["rows"] for v in r["relative"].values())
    assert {r["method"]: r["area"]["sym"] is not None for r in table["robustness"]["rows"]} == {"GCE": True, "mllsc": True}


def test_the_page_shows_the_summary_and_its_plot(tmp_path):
    write_records(tmp_path / "r", records())
    build(tmp_path / "r", tmp_path / "site", Options())
    page = (tmp_path / "site" / "index.html").read_text()
    assert 'id="robustness-table-quick-syn-phe"' in page and "Area: the mean mAP over a family" in page
    assert 'id="relative-quick-syn-phe' in page  # the plot's ids carry its key
