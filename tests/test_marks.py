"""Marks beside a number: collapsed runs (benchmark.marks.collapse) and FlexCare's fusion layout
(benchmark.marks.fusion_layout), from the record to the terminal table and the leaderboard."""
import copy
import csv
import io
import json
import math
from pathlib import Path

import pytest

from benchmark.errors import RecordError
from benchmark.marks import COLLAPSE_AUC, collapse, fusion_layout, record_collapse
from benchmark.records import run_id, validate
from leaderboard import Options, build
from leaderboard.aggregate import build_board
from leaderboard.report import cell_flags, collect, format_cell, render, run_row
from leaderboard.site import runs_csv
from leaderboard.tables import render as render_board
from record_factory import make_record, write_records

DOCS_RECORDS = Path(__file__).resolve().parents[1] / "docs" / "records"
FLEXCARE = {"structural_mask": "additive"}  # a FlexCare method of harness < 0.3.0
RELEASED = {**FLEXCARE, "fusion_layout": "released"}


def curve(aucs, first=1):
    return [{"epoch": first + i, "macro_auc": a, "map": 0.1} for i, a in enumerate(aucs)]


# --- collapse: when a run fell ------------------------------------------------------------------

def test_a_run_that_fell_after_peaking_is_collapsed_from_the_first_epoch_of_its_final_fall():
    # Learns, dips below 0.55 at epoch 4 and recovers, peaks at epoch 12, falls for good at epoch 21.
    aucs = [0.70, 0.78, 0.80, 0.52, 0.71] + [0.80] * 6 + [0.83] + [0.81] * 8 + [0.50, 0.49, 0.51] + [0.50] * 7
    assert len(aucs) == 30 and aucs[20] == 0.50
    assert collapse(curve(aucs)) == {"epoch": 21, "macro_auc": 0.50, "peak_macro_auc": 0.83, "peak_epoch": 12,
                                     "never_learned": False}


def test_a_run_that_never_reached_the_threshold_falls_at_its_first_epoch_and_says_so():
    assert collapse(curve([0.50, 0.53, 0.549, 0.52])) == {"epoch": 1, "macro_auc": 0.52, "peak_macro_auc": 0.549,
                                                           "peak_epoch": 3, "never_learned": True}


def test_epochs_are_numbered_as_the_curve_numbers_them():
    assert collapse(curve([0.7, 0.5, 0.5], first=0))["epoch"] == 1
    assert collapse([{"macro_auc": 0.7}, {"macro_auc": 0.5}])["epoch"] == 2  # no epoch key: position from 1


@pytest.mark.parametrize("aucs", [
    [0.80, 0.50, 0.50, 0.60],  # fell and recovered by the last epoch
    [0.80, 0.50, 0.55],  # exactly the threshold: not below it
    [0.55],
    [],
])
def test_a_run_whose_last_epoch_is_not_below_the_threshold_is_not_collapsed(aucs):
    assert collapse(curve(aucs)) is None


def test_an_epoch_at_exactly_the_threshold_ends_a_fall_and_rows_without_an_auc_are_left_out():
    assert COLLAPSE_AUC == 0.55
    assert collapse(curve([0.80, 0.50, 0.55, 0.50, 0.50]))["epoch"] == 4
    rows = curve([0.80, 0.50, 0.50])
    rows.insert(2, {"epoch": 99, "macro_auc": math.nan})
    rows.insert(1, {"epoch": 98})
    assert collapse(rows) == {"epoch": 2, "macro_auc": 0.5, "peak_macro_auc": 0.8, "peak_epoch": 1,
                              "never_learned": False}
    assert collapse(curve([0.80, 0.50]) + [{"epoch": 3, "macro_auc": math.nan}])["epoch"] == 2


# --- reading it from a record, written or derived -------------------------------------------------

@pytest.mark.parametrize("path, epoch, peak_epoch", [
    ("full-track-h100/full/mimic4-phe/focal/c2fb61e485c83cad.json", 21, 18),
    ("full-track-h100/full/mimic4-phe/asl/c5c9b6c3fd5b1bb6.json", 20, 12),
])
def test_old_committed_records_without_the_field_are_read_from_their_curve(path, epoch, peak_epoch):
    """The full-track Focal and ASL runs of docs/quick-track-results.md ("collapsed at epoch 21/20")."""
    record = json.loads((DOCS_RECORDS / path).read_text())
    assert "collapsed" not in record["metrics"]
    fell = record_collapse(record)
    assert fell["epoch"] == epoch and fell["peak_epoch"] == peak_epoch and not fell["never_learned"]
    assert fell["macro_auc"] == record["metrics"]["final"]["macro_auc"] < COLLAPSE_AUC < fell["peak_macro_auc"]
    assert run_row(record)["collapsed"] and run_row(record)["collapsed_epoch"] == epoch


def test_a_committed_record_that_learned_is_not_collapsed():
    path = next((DOCS_RECORDS / "full-track-h100" / "full" / "mimic4-phe" / "miracl").glob("*.json"))
    record = json.loads(path.read_text())
    assert record_collapse(record) is None and run_row(record)["collapsed"] is False


def test_the_written_field_is_read_as_written_and_a_failed_run_is_never_collapsed():
    written = {"epoch": 7, "macro_auc": 0.5, "peak_macro_auc": 0.9, "peak_epoch": 3, "never_learned": False}
    assert record_collapse(make_record(aucs=(0.9, 0.5), collapsed=written)) == written
    assert record_collapse(make_record(aucs=(0.9, 0.5), collapsed=None)) is None  # the writer's word stands
    assert record_collapse(make_record(aucs=(0.9, 0.5)))["epoch"] == 2  # no field: from the curve
    no_curve = make_record(aucs=(0.52,))
    no_curve["metrics"]["curve"] = []  # no curve at all: the final metrics are the one epoch there is
    assert record_collapse(no_curve)["never_learned"]
    failed = make_record(status="failed")
    assert record_collapse(failed) is None and run_row(failed)["collapsed"] is None


def test_validation_accepts_the_field_and_names_it_when_it_has_the_wrong_type():
    written = {"epoch": 2, "macro_auc": 0.5, "peak_macro_auc": 0.9, "peak_epoch": 1, "never_learned": False}
    validate(make_record(aucs=(0.9, 0.5), collapsed=written))
    validate(make_record(collapsed=None))
    for value, message in [
        ("yes", "field 'metrics.collapsed' is 'yes', expected dict or null"),
        ({**written, "epoch": "2"}, "field 'metrics.collapsed.epoch' is '2', expected int"),
        ({**written, "epoch": True}, "field 'metrics.collapsed.epoch' is True, expected int"),
        ({**written, "macro_auc": None}, "field 'metrics.collapsed.macro_auc' is None, expected int or float"),
        ({k: v for k, v in written.items() if k != "never_learned"},
         "field 'metrics.collapsed.never_learned' is None, expected bool"),
    ]:
        record = make_record()
        record["metrics"]["collapsed"] = value
        with pytest.raises(RecordError) as e:
            validate(record, "r.json")
        assert str(e.value) == f"r.json: {message}"
    record = make_record()
    record["metrics"]["curve"] = {"1": 0.5}
    with pytest.raises(RecordError, match="field 'metrics.curve' is"):
        validate(record, "r.json")


# --- the marks in the tables and on the leaderboard -------------------------------------------

def collapsed_board():
    """FlexCare (BCE) on sym-20, seeds 30, 40, 100: seed 40 fell at epoch 3 (peak 0.81 at epoch 2)."""
    aucs = {30: (0.7, 0.8, 0.8), 40: (0.7, 0.81, 0.50), 100: (0.7, 0.8, 0.8)}
    maps = {30: 0.40, 40: 0.18, 100: 0.41}
    records = [make_record("bce", "sym-20", s, maps[s], aucs=aucs[s]) for s in (30, 40, 100)]
    records += [make_record("gce", "sym-20", s, 0.3) for s in (30, 40, 100)]
    records += [make_record("focal", "sym-20", s, 0.1, aucs=(0.52, 0.51)) for s in (30, 40)]  # never learned
    return records


def test_the_terminal_table_flags_collapsed_runs_and_still_averages_them():
    text = render(collapsed_board())
    assert "0.330 (0.130) [collapsed 1/3]" in text  # (0.40 + 0.18 + 0.41) / 3: in the mean
    assert "0.100 (0.000) [n=2] [collapsed 2/2]" in text
    assert next(line for line in text.splitlines() if line.startswith("GCE")).rstrip().endswith("0.300 (0.000)")
    assert "'[collapsed k/n]': k of the cell's n runs collapsed, their last-epoch macro AUC below 0.55" in text


def test_leaderboard_cells_carry_the_mark_rank_as_before_and_name_each_collapsed_run(tmp_path):
    write_records(tmp_path / "results", collapsed_board())
    result = build(tmp_path / "results", tmp_path / "site", Options())
    cells = {r["method"]: r["cells"][0] for r in result.board["tracks"][0]["tasks"][0]["rows"]}
    bce = cells["FlexCare (BCE)"]
    assert bce["marks"] == ["collapsed 1/3"] and bce["flags"] == [] and bce["eligible"] and bce["best"]
    assert bce["mean"] == pytest.approx(0.33)
    assert bce["collapsed"] == [{"seed": 40, "run_id": bce["collapsed"][0]["run_id"], "epoch": 3, "macro_auc": 0.5,
                                 "peak_macro_auc": 0.81, "peak_epoch": 2, "never_learned": False}]
    assert [c["seed"] for c in cells["Focal"]["collapsed"]] == [30, 40]
    assert cells["Focal"]["collapsed"][0]["never_learned"]
    assert cells["GCE"]["marks"] == [] and cells["GCE"]["collapsed"] == []
    assert "0.330 (0.130) <" in render_board(result.board) and "[collapsed 1/3]" in render_board(result.board)
    html = (tmp_path / "site" / "index.html").read_text()
    tooltip = ("seed 40 collapsed: fell below macro AUC 0.55 at epoch 3 (peak 0.810 at epoch 2), last-epoch macro "
               "AUC 0.500 (still averaged in)")
    assert f'<span class="mark" title="{tooltip}">[collapsed 1/3]</span>' in html
    assert f"; {tooltip}" in html  # in the cell's own tooltip too
    assert "seed 30 collapsed: never reached macro AUC 0.55 (peak 0.520 at epoch 1)" in html
    assert "[collapsed k/n]: k of the cell&#39;s n runs collapsed" in html  # the legend (escaped: a quote)
    board = json.loads((tmp_path / "site" / "board.json").read_text())
    assert board["collapse_auc"] == 0.55
    assert board["tracks"][0]["tasks"][0]["rows"][0]["cells"][0]["collapsed"][0]["epoch"] == 3
    runs = {(r["method"], int(r["seed"])): r for r in csv.DictReader((tmp_path / "site" / "runs.csv").open())}
    assert {"macro_auc", "collapsed", "collapsed_epoch", "collapsed_peak_macro_auc", "collapsed_peak_epoch",
            "never_learned", "fusion_layout", "label"} <= set(runs[("bce", 30)])
    assert runs[("bce", 40)]["collapsed"] == "True" and runs[("bce", 40)]["collapsed_epoch"] == "3"
    assert runs[("bce", 40)]["collapsed_peak_macro_auc"] == "0.81" and runs[("bce", 40)]["never_learned"] == "False"
    assert runs[("bce", 30)]["collapsed"] == "False" and runs[("bce", 30)]["collapsed_epoch"] == ""
    assert runs[("focal", 30)]["never_learned"] == "True" and runs[("focal", 30)]["collapsed_epoch"] == "1"


# --- FlexCare's fusion layout ------------------------------------------------------------------

def test_the_fusion_layout_of_a_record():
    assert fusion_layout(make_record(hparams=RELEASED)["spec"]) == "released"
    assert fusion_layout(make_record(hparams={**FLEXCARE, "fusion_layout": "two_modality"})["spec"]) == "two_modality"
    assert fusion_layout(make_record(hparams=FLEXCARE)["spec"]) == "two_modality"  # harness < 0.3.0
    assert fusion_layout(make_record("m3care", hparams={"dropout": 0.1})["spec"]) is None  # not FlexCare
    assert fusion_layout({"method": {"name": "x"}}) is None
    committed = {json.loads(p.read_text())["spec"]["method"]["name"]: fusion_layout(json.loads(p.read_text())["spec"])
                 for p in (DOCS_RECORDS / "full-track-h100").rglob("*.json")}
    assert committed == {"bce": "two_modality", "focal": "two_modality", "asl": "two_modality", "gce": "two_modality",
                         "mllsc": "two_modality", "multit": "two_modality", "miracl": "two_modality",
                         "m3care": None, "medfuse": None}
    record = make_record(hparams=FLEXCARE)
    record["spec"]["method"]["hparams"]["fusion_layout"] = 2
    record["run_id"] = run_id(record["spec"])
    with pytest.raises(RecordError, match="field 'spec.method.hparams.fusion_layout' is 2, expected str"):
        validate(record, "r.json")


def layout_board():
    """BCE on sym-20 in both layouts (seeds 30, 40, 100 each), M3Care beside them."""
    return ([make_record("bce", "sym-20", s, 0.40, hparams=FLEXCARE) for s in (30, 40, 100)]
            + [make_record("bce", "sym-20", s, 0.50, hparams=RELEASED, harness="0.3.0") for s in (30, 40, 100)]
            + [make_record("m3care", "sym-20", s, 0.30, hparams={"dropout": 0.1}) for s in (30, 40, 100)])


def test_old_and_new_layout_runs_are_separate_labelled_rows_and_the_old_ones_are_marked(tmp_path):
    text = render(layout_board())
    lines = {line.split("  ")[0]: line for line in text.splitlines() if line.startswith(("FlexCare", "m3care"))}
    assert set(lines) == {"FlexCare (BCE) [two_modality]", "FlexCare (BCE)", "m3care"}
    assert lines["FlexCare (BCE) [two_modality]"].endswith("0.400 (0.000) \u2020")
    assert lines["FlexCare (BCE)"].endswith("0.500 (0.000)") and lines["m3care"].endswith("0.300 (0.000)")
    assert "FlexCare two-modality layout of harness < 0.3.0, not the released function" in text
    write_records(tmp_path / "results", layout_board())
    result = build(tmp_path / "results", tmp_path / "site", Options())
    rows = {r["method"]: r["cells"][0] for r in result.board["tracks"][0]["tasks"][0]["rows"]}
    old, new = rows["FlexCare (BCE) [two_modality]"], rows["FlexCare (BCE)"]
    assert old["old_layout"] and old["fusion_layouts"] == ["two_modality"] and old["mean"] == pytest.approx(0.4)
    assert not new["old_layout"] and new["fusion_layouts"] == ["released"] and new["best"] and not new["flags"]
    assert rows["m3care"]["fusion_layouts"] == [] and not rows["m3care"]["old_layout"]
    assert "0.400 (0.000) \u2020" in render_board(result.board)
    assert r"$^\dagger$" in (tmp_path / "site" / "board.tex").read_text()
    html = (tmp_path / "site" / "index.html").read_text()
    assert ('<span class="mark" title="\u2020 FlexCare two-modality layout of harness &lt; 0.3.0, not the released '
            'function (fusion layout: two_modality)">&dagger;</span>') in html
    assert html.count("&dagger;</span>") == 1
    compute = {r["method"]: r for r in result.board["tracks"][0]["compute"][0]["rows"]}
    assert set(compute) == set(rows) and compute["FlexCare (BCE)"]["ratio"] == 1.0  # the released BCE
    runs = list(csv.DictReader(io.StringIO(runs_csv(result.rows))))
    assert {(r["seed"], r["fusion_layout"]) for r in runs if r["method"] == "bce"} == {
        (s, layout) for s in ("30", "40", "100") for layout in ("two_modality", "released")}
    assert {r["fusion_layout"] for r in runs if r["method"] == "m3care"} == {""}
    meta = {m["name"]: m for m in result.board["tracks"][0]["methods"]}
    assert meta["bce"]["fusion_layouts"] == ["released", "two_modality"]


def test_a_cell_that_mixes_layouts_is_flagged_loudly_and_not_averaged():
    rows = [run_row(r) for r in layout_board()]
    cell = {"runs": [r for r in rows if r["method"] == "bce"], "maps": [r["map"] for r in rows if r["method"] == "bce"],
            "failed": 0}
    assert cell_flags(cell) == ["mixed harness", "mixed layout"]
    assert format_cell(cell) == "- [mixed harness] [mixed layout] \u2020"
    same_harness = copy.deepcopy(cell)
    for r in same_harness["runs"]:
        r["harness_version"] = "0.3.0"
    assert cell_flags(same_harness) == ["mixed layout"]
    # collect never builds such a cell: the layout is part of its row key.
    grouped = collect(rows)[("quick", "syn-phe")]
    assert all("mixed layout" not in cell_flags(c) for cells in grouped.values() for c in cells.values())
    board = build_board(rows, Options())
    assert "mixed layout" not in json.dumps(board["tracks"])


def test_the_layout_read_from_a_spec_is_the_one_its_model_builds_for_every_method():
    """The reading rule holds for the records this harness writes: a FlexCare method whose manifest does
    not name ``fusion_layout`` must build the two-modality layout (so a new default needs the key in the
    manifests), and a method on another backbone has none (MIRACL wraps its FlexCare: any submodule counts)."""
    from benchmark.method_card import shape_info
    from benchmark.protocol import get_track
    from benchmark.registry import available_methods, get_method
    from benchmark.runner import plan

    track, seen = get_track("smoke"), {}
    for name in available_methods():
        spec, entry = plan(name, "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0], get_method(name)
        model = entry.load_class()(shape_info(track, "syn-phe"), spec["method"]["hparams"]).build_model()
        seen[name] = next((m.fusion_layout for m in model.modules() if hasattr(m, "fusion_layout")), None)
        assert seen[name] == fusion_layout(spec), name
    assert {n for n, layout in seen.items() if layout} >= {"bce", "focal", "asl", "gce", "mllsc", "multit", "miracl"}
    assert seen["m3care"] is None and seen["medfuse"] is None


def test_compiled_runs_are_a_row_of_their_own():
    """``--compile on`` is the same function with other random draws: its runs never share a cell with
    the default eager runs of the same spec."""
    from leaderboard.report import collect, run_row

    eager = make_record("bce", "sym-40", 30, 0.45)
    fast = copy.deepcopy(eager)
    fast["environment"]["compile"] = "on"
    labels = {run_row(r)["label"] for r in (eager, fast)}
    assert labels == {eager["method"]["display_name"], eager["method"]["display_name"] + " [compiled]"}
    fallen_back = copy.deepcopy(fast)
    fallen_back["environment"].update(compile="off", compile_fallback="BackendCompilerFailed")
    assert run_row(fallen_back)["label"] == eager["method"]["display_name"]
