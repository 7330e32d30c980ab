"""The board's detection tables and the variance split of noise draws, from small synthetic records."""
import json

import numpy as np
import pytest

from leaderboard import build
from leaderboard.tables import render
from leaderboard.variance import complete_block, split

from record_factory import SEEDS, detection_row, make_record, write_records


# --- the split on its own -----------------------------------------------------------------------------

def test_an_additive_grid_splits_into_the_sample_variances_of_its_effects():
    a = {30: -0.02, 40: 0.0, 100: 0.03}  # training seeds
    b = {0: 0.01, 1: -0.015, 2: 0.0, 3: 0.005}  # noise draws
    values = {(s, d): 0.4 + a[s] + b[d] for s in a for d in b}
    out = split(values)
    assert out["seeds"] == [30, 40, 100] and out["draws"] == [0, 1, 2, 3] and out["runs"] == 12
    assert out["var"]["seed"] == pytest.approx(np.var(list(a.values()), ddof=1), abs=1e-12)
    assert out["var"]["draw"] == pytest.approx(np.var(list(b.values()), ddof=1), abs=1e-12)
    assert out["var"]["residual"] == pytest.approx(0, abs=1e-12)
    assert out["mean"] == pytest.approx(0.4 + np.mean(list(a.values())) + np.mean(list(b.values())))
    total = out["var"]["seed"] + out["var"]["draw"]
    assert out["share"]["draw"] == pytest.approx(out["var"]["draw"] / total)
    assert out["df"] == {"seed": 2, "draw": 3, "residual": 6}
    # The protocol's std: over seeds at draw 0 only, where b is a constant.
    assert out["protocol_std"] == pytest.approx(np.std(list(a.values()), ddof=1))


def test_the_split_recovers_known_components_of_a_simulated_random_effects_grid():
    rng = np.random.default_rng(0)
    s_seed, s_draw, s_res = 0.02, 0.01, 0.005
    estimates = []
    for _ in range(20):
        a, b = rng.normal(0, s_seed, 40), rng.normal(0, s_draw, 40)
        y = 0.3 + a[:, None] + b[None, :] + rng.normal(0, s_res, (40, 40))
        out = split({(s, d): y[s, d] for s in range(40) for d in range(40)})
        estimates.append([out["var"]["seed"], out["var"]["draw"], out["var"]["residual"]])
    mean = np.mean(estimates, axis=0)
    assert mean[0] == pytest.approx(s_seed ** 2, rel=0.15)
    assert mean[1] == pytest.approx(s_draw ** 2, rel=0.15)
    assert mean[2] == pytest.approx(s_res ** 2, rel=0.05)


def test_the_mean_squares_are_those_of_the_two_way_anova():
    rng = np.random.default_rng(3)
    y = rng.normal(0.5, 0.05, (3, 4))
    out = split({(s, d): y[s, d] for s in range(3) for d in range(4)})
    grand = y.mean()
    ss_total = ((y - grand) ** 2).sum()
    ss_seed, ss_draw = 4 * ((y.mean(1) - grand) ** 2).sum(), 3 * ((y.mean(0) - grand) ** 2).sum()
    assert out["ms"]["seed"] * 2 + out["ms"]["draw"] * 3 + out["ms"]["residual"] * 6 == pytest.approx(ss_total)
    assert out["ms"]["seed"] == pytest.approx(ss_seed / 2) and out["ms"]["draw"] == pytest.approx(ss_draw / 3)
    assert out["var"]["seed"] == pytest.approx(max(0.0, (out["ms"]["seed"] - out["ms"]["residual"]) / 4))


def test_a_negative_estimate_is_zero_and_a_missing_run_shrinks_the_block():
    values = {(s, d): 0.4 + 0.01 * ((s * 7 + d * 3) % 5) for s in (1, 2, 3) for d in (0, 1, 2)}
    out = split(values)
    assert min(out["var"].values()) >= 0
    del values[(3, 2)]
    assert complete_block(values) == ([1, 2, 3], [0, 1])  # seed 3 and draw 2 each miss one: the draw goes
    out = split(values)
    assert out["runs"] == 6 and out["left_out"] == 2
    assert split({(1, 0): 0.1, (2, 0): 0.2}) is None  # one draw: no split
    assert split({(1, 0): 0.1, (1, 1): 0.2}) is None  # one seed: no split


# --- on the board -------------------------------------------------------------------------------------

A = {30: -0.02, 40: 0.0, 100: 0.02}  # seed effects
B = {0: 0.0, 1: 0.03, 2: -0.03}  # draw effects


def draw_records():
    records = [make_record("bce", "sym-40", s, 0.3 + A[s] + B[d], noise_draw=d) for s in SEEDS for d in B]
    records += [make_record("focal", "sym-40", s, 0.25 + A[s]) for s in SEEDS]  # the protocol's draw only
    return records


def detection_records():
    out = []
    values = {"miracl": ((0.5, 0.4, 0.44, 0.30), (0.6, 0.5, 0.55, 0.40)),
              "multit": ((0.2, 0.1, 0.13, 0.15), (0.7, 0.1, 0.18, 0.35))}
    for method, (missed, spurious) in values.items():
        for i, s in enumerate(SEEDS):
            bump = 0.01 * (i - 1)  # -0.01, 0, +0.01 over the seeds: std 0.01
            out.append(make_record(method, "asym-20-40", s, 0.3, detection=detection_row(
                tuple(v + bump for v in missed), tuple(v + bump for v in spurious), base=(0.2, 0.3))))
    out += [make_record("bce", "asym-20-40", s, 0.3) for s in SEEDS]  # no suspicion: no row
    # A setting without missed positives to detect.
    out += [make_record("miracl", "asym-0-40", s, 0.3, detection=detection_row(None, (0.5, 0.5, 0.5, 0.5)))
            for s in SEEDS]
    return out


@pytest.fixture
def board(tmp_path):
    write_records(tmp_path / "results", draw_records() + detection_records())
    return build(tmp_path / "results", tmp_path / "site")


def test_the_variance_split_of_a_cell_with_draws_is_on_the_board(board):
    table = board.board["tracks"][0]["tasks"][0]
    [entry] = table["variance"]  # focal has one draw: no split
    assert entry["method"] == "FlexCare (BCE)" and entry["noise"] == "sym-40"
    sp = entry["split"]
    assert (len(sp["seeds"]), len(sp["draws"]), sp["left_out"]) == (3, 3, 0)
    assert sp["var"]["seed"] == pytest.approx(np.var(list(A.values()), ddof=1), abs=1e-12)
    assert sp["var"]["draw"] == pytest.approx(np.var(list(B.values()), ddof=1), abs=1e-12)
    assert sp["share"]["draw"] == pytest.approx(0.0009 / (0.0009 + 0.0004), abs=1e-9)
    assert [d for _, d, _ in entry["values"]].count(2) == 3
    assert entry["noise_seeds"] == [[0, 123], [1, 1123], [2, 2123]]


def test_result_cells_hold_the_protocols_draw_only(board):
    table = board.board["tracks"][0]["tasks"][0]
    bce = next(r for r in table["rows"] if r["method"] == "FlexCare (BCE)")
    cell = next(c for c in bce["cells"] if c["noise"] == "sym-40")
    assert cell["n"] == 3 and sorted(s for s, _ in cell["values"]) == sorted(SEEDS)
    assert cell["mean"] == pytest.approx(0.3 + np.mean(list(A.values())))  # draw 0: B[0] = 0
    assert "noise draw (draw 0) only" in board.board["caption"]


def test_the_detection_table_has_the_methods_that_scored_mean_and_std_over_seeds(board):
    table = board.board["tracks"][0]["tasks"][0]
    by_noise = {d["noise"]: d for d in table["detection"]}
    assert set(by_noise) == {"asym-20-40", "asym-0-40"}  # sym-40 has no scored run
    det = by_noise["asym-20-40"]
    assert [r["method"] for r in det["rows"]] == ["miracl", "multit"]  # best mean F1 first; BCE has no row
    miracl = det["rows"][0]["directions"]
    assert miracl["missed_positive"]["precision"]["mean"] == pytest.approx(0.5)
    assert miracl["missed_positive"]["precision"]["std"] == pytest.approx(0.01)
    assert miracl["spurious_positive"]["auprc"]["mean"] == pytest.approx(0.40)
    assert det["base_rate"] == {"missed_positive": pytest.approx([0.2, 0.2]), "spurious_positive": pytest.approx([0.3, 0.3])}
    nothing = by_noise["asym-0-40"]["rows"][0]["directions"]["missed_positive"]
    assert nothing["f1"]["n"] == 0 and nothing["f1"]["mean"] is None


def test_board_json_the_text_tables_and_the_page_carry_both(board, tmp_path):
    saved = json.loads((tmp_path / "site" / "board.json").read_text())
    task = saved["tracks"][0]["tasks"][0]
    assert task["variance"][0]["split"]["draws"] == [0, 1, 2] and task["detection"]
    text = render(board.board)
    assert "detection of the wrong training labels at the last epoch" in text
    assert "variance of mAP over training seeds and noise draws" in text
    assert "0.500 (0.010)" in text  # MIRACL's missed-positive precision
    line = next(ln for ln in text.splitlines() if ln.startswith("FlexCare (BCE)") and "3 x 3" in ln)
    assert "0.0200" in line and "0.0300" in line  # std seed, std draw
    md = (tmp_path / "site" / "board.md").read_text()
    assert "## Track quick, task syn-phe: variance of mAP" in md
    page = (tmp_path / "site" / "index.html").read_text()
    assert 'id="tab-detection"' in page and 'id="variance-quick-syn-phe"' in page
    assert 'id="detection-quick-syn-phe-asym-20-40"' in page
    runs = (tmp_path / "site" / "runs.csv").read_text().splitlines()
    header = runs[0].split(",")
    assert "noise_draw" in header and "det_missed_positive_f1" in header


def test_a_board_without_draws_or_detection_says_so_and_keeps_its_caption(tmp_path):
    write_records(tmp_path / "results", [make_record("bce", "sym-20", s, 0.4) for s in SEEDS])
    result = build(tmp_path / "results", tmp_path / "site")
    task = result.board["tracks"][0]["tasks"][0]
    assert task["variance"] == [] and task["detection"] == []
    assert "noise draw (draw 0) only" not in result.board["caption"]
    text = render(result.board)
    assert "detection of the wrong" not in text and "variance of mAP" not in text
    page = (tmp_path / "site" / "index.html").read_text()
    assert "No cell of this task has runs on more than one noise draw" in page


# --- the committed quick-track records behind docs/detection-and-noise-draws.md ------------------------

def test_the_committed_quick_records_give_the_documents_tables():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "records" / "draws-quick-0.4.0"
    result = build(folder, None)
    assert not result.skipped and len(result.rows) == 36
    [task] = result.board["tracks"][0]["tasks"]
    [det] = task["detection"]
    rows = {r["method"]: r["directions"] for r in det["rows"]}
    assert set(rows) == {"MIRACL", "MultiT", "MLLSC"}
    assert rows["MultiT"]["missed_positive"]["auprc"]["mean"] == pytest.approx(0.143, abs=5e-4)
    assert rows["MLLSC"]["missed_positive"]["recall"]["mean"] == 1.0
    assert rows["MIRACL"]["spurious_positive"]["precision"]["mean"] == pytest.approx(0.783, abs=5e-4)
    split = {e["method"]: e["split"] for e in task["variance"]}
    assert set(split) == {"FlexCare (BCE)", "MIRACL", "MultiT", "MLLSC"}
    assert all((len(s["seeds"]), len(s["draws"])) == (3, 3) for s in split.values())
    assert split["FlexCare (BCE)"]["protocol_std"] == pytest.approx(0.0081, abs=5e-5)
    assert split["MLLSC"]["std"]["seed"] == pytest.approx(0.0125, abs=5e-5)
    # MLLSC flags exactly what its loss flipped, in every corrected epoch of every run.
    for row in result.rows:
        if row["method"] == "mllsc":
            record = json.loads((folder / row["record_file"]).read_text())
            for epoch in record["metrics"]["curve"]:
                if "detection" in epoch:
                    assert epoch["detection"]["spurious_positive"]["flagged"] == epoch["method"]["pos_to_neg"]
                    assert epoch["detection"]["missed_positive"]["flagged"] == epoch["method"]["neg_to_pos"]


def test_ehrbench_table_averages_the_protocols_draw_and_says_so():
    from leaderboard.report import render as table

    text = table(draw_records())
    line = next(ln for ln in text.splitlines() if ln.startswith("FlexCare (BCE)"))
    assert f"{0.3 + np.mean(list(A.values())):.3f} ({np.std(list(A.values()), ddof=1):.3f})" in line
    assert "noise draw (draw 0) only" in text
    assert "noise draw (draw 0) only" not in table([make_record("bce", "sym-20", s, 0.4) for s in SEEDS])
