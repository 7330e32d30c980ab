"""The leaderboard site and its text tables, built from synthetic records made in the test."""
import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmark import __version__
from leaderboard import Options, build
from leaderboard.aggregate import build_board
from leaderboard.report import run_row
from leaderboard.tables import render
from record_factory import SEEDS, board_records, make_record, write_records


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_records(root, board_records())
    write_records(root, [make_record("bce", "sym-20", 30, 0.9, track="smoke")])  # never on a board
    return root


@pytest.fixture(scope="module")
def site(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    return build(results, out, Options()), out


def table(board, task):
    return next(t for t in board["tracks"][0]["tasks"] if t["task"] == task)


def cells(board, task="syn-phe"):
    return {(r["method"], c["noise"]): c for r in table(board, task)["rows"] for c in r["cells"]}


def test_the_site_and_its_downloads_are_written_next_to_each_other(site):
    result, out = site
    assert sorted(p.name for p in out.iterdir()) == ["board.json", "board.md", "board.tex", "index.html", "runs.csv"]
    assert [t["track"] for t in result.board["tracks"]] == ["quick"]  # the smoke track is left out
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == len(board_records()) and {"seed", "map", "data_fingerprint", "hardware"} <= set(runs[0])
    board = json.loads((out / "board.json").read_text())
    assert board["options"] == {"test": "paired", "correction": "none", "alpha": 0.05, "baseline": "bce",
                                "timing_encoders": False}
    tex = (out / "board.tex").read_text()
    assert "ddof=1" in board["caption"] and r"\textbf{0.410 (0.010)}$^{**}$" in tex and r"\% train" in tex
    assert "| FlexCare (BCE) |" in (out / "board.md").read_text()


def test_rows_are_methods_and_columns_the_noise_settings_grouped_by_family(site):
    syn_phe = table(site[0].board, "syn-phe")
    assert [n["name"] for n in syn_phe["noises"]] == ["sym-20", "asym-0-20", "asym-20-0", "bal-40"]
    assert [(f["family"], f["span"]) for f in syn_phe["families"]] == [("sym", 1), ("asym", 2), ("bal", 1)]
    assert {r["method"] for r in syn_phe["rows"]} == {"FlexCare (BCE)", "Focal", "GCE", "ASL"}


def test_few_seeds_mixed_data_and_mixed_harness_cells_are_flagged_and_never_averaged(site):
    c = cells(site[0].board)
    asl = c[("ASL", "sym-20")]
    assert asl["flags"] == ["n=2"] and asl["mean"] == pytest.approx(0.51) and not asl["best"]
    assert c[("FlexCare (BCE)", "sym-20")]["best"]  # ASL's higher mean does not win the column
    for key, flag in ((("GCE", "asym-20-0"), "mixed data"), (("FlexCare (BCE)", "asym-20-0"), "mixed harness")):
        assert c[key]["flags"] == [flag] and c[key]["mean"] is None and c[key]["std"] is None
    assert c[("Focal", "asym-20-0")]["failed"] == 1 and c[("Focal", "asym-20-0")]["n"] == 0
    text = render(site[0].board)
    assert "- [mixed data]" in text and "- [mixed harness]" in text and "0.510 (0.014) [n=2]" in text
    html = (site[1] / "index.html").read_text()
    assert 'title="no finished run (1 failed)">failed <span class="flag">!</span>' in html


def test_compute_tables_compare_like_with_like_only(site):
    """A block per hardware class, task and execution setting; ratios and mean mAP within a block only,
    over the cells every method of the block has; preparing the task is a column of its own."""
    blocks = {(b["hardware"], b["task"]): b for b in site[0].board["tracks"][0]["compute"]}
    assert set(blocks) == {("CPU: Test CPU 2-core", "syn-phe"), ("NVIDIA H100", "syn-dia")}
    gpu = {r["method"]: r for r in blocks[("NVIDIA H100", "syn-dia")]["rows"]}
    # The factory's runs spend 10 % of their total preparing data: the wall per run is the other 90 %.
    assert gpu["FlexCare (BCE)"]["ratio"] == 1.0 and gpu["GCE"]["ratio"] == pytest.approx(4.0)
    assert gpu["GCE"]["median_s"] == pytest.approx(0.9 * 8.0) and gpu["GCE"]["data_s"] == pytest.approx(3 * 0.8)
    assert gpu["GCE"]["hours"] == pytest.approx(3 * 0.9 * 8.0 / 3600) and blocks[("NVIDIA H100", "syn-dia")]["gpu"]
    assert gpu["GCE"]["mean_map"] == pytest.approx(0.45) and gpu["GCE"]["cells"] == 1
    cpu = {r["method"]: r for r in blocks[("CPU: Test CPU 2-core", "syn-phe")]["rows"]}
    # ASL ran only sym-20: every method's mean mAP is over that one shared cell, not over its own cells.
    assert {r["cells"] for r in cpu.values()} == {1} and cpu["GCE"]["own_cells"] == 3  # its mixed cell left out
    assert cpu["GCE"]["ratio"] == pytest.approx(2.0) and cpu["ASL"]["runs"] == 2
    assert cpu["GCE"]["phases"] == pytest.approx({"noise": 0.0, "train": 0.8 / 0.9, "method_hooks": 0.0, "eval": 0.1 / 0.9})
    text = render(site[0].board)
    assert "GPU-h" in text and "CPU-h" in text and "data prep s" in text


def test_a_method_run_on_another_task_gets_no_ratio_to_the_baseline_of_this_one():
    rows = [run_row(make_record("bce", "sym-20", s, 0.4, gpu="NVIDIA H100", total=10.0, task="syn-phe")) for s in SEEDS]
    rows += [run_row(make_record("gce", "sym-20", s, 0.3, gpu="NVIDIA H100", total=30.0, task="syn-dia")) for s in SEEDS]
    blocks = {b["task"]: b for b in build_board(rows, Options())["tracks"][0]["compute"]}
    assert blocks["syn-dia"]["baseline"] is None and blocks["syn-dia"]["rows"][0]["ratio"] is None
    assert blocks["syn-phe"]["rows"][0]["ratio"] == 1.0


def test_the_page_is_self_contained_with_relative_links_only(site):
    html = (site[1] / "index.html").read_text()
    assert html.count("<svg") == 2 + 2 + 2 + 1  # mAP and relative mAP per task, cost per hardware, critical difference
    # Every link of the site is relative; only a method's paper link (class "paper") leaves it.
    links = re.findall(r'<[a-z]+(?![^>]*class="paper")[^>]*\b(?:href|src)="([^"]*)"', html)
    assert links and all(not re.match(r"^[a-z]+:|^/", link) for link in links), links
    assert "<script src" not in html and "<link" not in html
    assert "Test CPU 2-core" in html and "ddof=1" in html and "Friedman" in html


def test_the_build_is_byte_stable(results, site, tmp_path):
    build(results, tmp_path, Options())
    for name in ("index.html", "board.json", "runs.csv", "board.tex", "board.md"):
        assert (tmp_path / name).read_bytes() == (site[1] / name).read_bytes(), name


def test_corrupt_truncated_and_schema_invalid_records_are_named_and_skipped(results, tmp_path):
    bad = tmp_path / "results"
    write_records(bad, board_records()[:9])
    folder = next(bad.rglob("*.json")).parent
    (folder / "truncated.json").write_text(next(bad.rglob("*.json")).read_text()[:200])
    (folder / "garbage.json").write_bytes(b"\xff\xfe not json")
    invalid = make_record("bce", "bal-40", 7, 0.3)
    invalid.pop("timings")
    (folder / "invalid.json").write_text(json.dumps(invalid))
    result = build(bad, tmp_path / "site", Options())
    skipped = dict(result.skipped)
    assert {p.rsplit("/", 1)[-1] for p in skipped} == {"truncated.json", "garbage.json", "invalid.json"}
    assert "not valid JSON" in skipped[str((folder / "truncated.json").relative_to(bad))]
    assert "missing field 'timings'" in skipped[str((folder / "invalid.json").relative_to(bad))]
    html = (tmp_path / "site" / "index.html").read_text()
    assert "3 record file(s) skipped" in html and "truncated.json" in html and "<table" in html
    assert len(result.rows) == 9


def test_publish_stamps_version_and_date_and_serves_from_a_plain_folder(results, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01
    build(results, tmp_path, Options(), published=True)
    html = (tmp_path / "index.html").read_text()
    assert "published 2026-01-01 00:00 UTC" in html and f"harness version {__version__}" in html
    assert (tmp_path / ".nojekyll").exists()


def ehrbench(*args):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, timeout=300)


def test_cli_leaderboard_prints_the_tables_writes_the_site_and_reports_bad_files(results, tmp_path):
    (tmp_path / "r").mkdir()
    write_records(tmp_path / "r", board_records())
    (tmp_path / "r" / "broken.json").write_text("{")
    proc = ehrbench("leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "s"),
                    "--correction", "holm", "--test", "welch")
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipping broken.json: not valid JSON" in proc.stderr
    assert "Track quick, task syn-phe: last-epoch test mAP" in proc.stdout and "Holm-adjusted" in proc.stdout
    assert "Welch" in proc.stdout and (tmp_path / "s" / "index.html").exists()
    refused = ehrbench("leaderboard", "--results", str(results), "--out", str(tmp_path / "x"), "--alpha", "2")
    assert refused.returncode == 2 and refused.stderr == "ehrbench: error: alpha must be in (0, 1), got 2.0\n"
    table = ehrbench("table", "--track", "quick", "--results", str(results))
    assert table.returncode == 0 and "FlexCare (BCE)" in table.stdout and "[mixed data]" in table.stdout


def test_method_metadata_names_paper_licence_parameters_and_harness(tmp_path):
    from leaderboard.aggregate import build_board
    from leaderboard.report import run_row
    from leaderboard.site import write

    rows = [run_row(r) for r in board_records()]
    manifests = {"bce": {"citation": "Xu et al.\n  FlexCare. KDD 2024.", "license": "MIT", "version": "1.0",
                         "paper_url": "https://example.org/flexcare"}}
    board = build_board(rows, Options(), manifests)
    meta = {m["name"]: m for m in board["tracks"][0]["methods"]}
    assert meta["bce"]["citation"] == "Xu et al. FlexCare. KDD 2024." and meta["bce"]["license"] == "MIT"
    assert meta["bce"]["parameters"] == [1000] and meta["bce"]["harness_versions"] == ["0.1.0", "0.2.0"]
    assert meta["gce"]["citation"] is None  # no manifest in this checkout: the page says "-"
    write(tmp_path, board, rows, [], {"harness_version": "0.1.0", "commit": None, "date": None})
    assert '<a class="paper" href="https://example.org/flexcare">Xu et al. FlexCare. KDD 2024.</a>' in \
        (tmp_path / "index.html").read_text()


def test_a_cell_whose_method_code_changed_between_seeds_is_not_averaged():
    from leaderboard.aggregate import build_board
    from leaderboard.report import run_row

    edited = [make_record("asl", "bal-40", s, 0.3, code=("c" if s < 100 else "e") * 64) for s in (30, 40, 100)]
    cell = cells(build_board([run_row(r) for r in board_records() + edited], Options()))[("ASL", "bal-40")]
    assert cell["flags"] == ["mixed code"] and cell["mean"] is None and not cell["eligible"]


def test_a_cell_on_other_data_than_its_column_is_flagged_not_compared():
    from leaderboard.aggregate import build_board
    from leaderboard.report import run_row

    other = [make_record("asl", "bal-40", s, 0.9, data="f" * 64) for s in (30, 40, 100)]
    board = build_board([run_row(r) for r in board_records() + other], Options())
    c = cells(board)
    assert c[("ASL", "bal-40")]["flags"] == ["other data"] and c[("ASL", "bal-40")]["mean"] == pytest.approx(0.9)
    assert not c[("ASL", "bal-40")]["best"] and c[("Focal", "bal-40")]["best"]
    assert "[other data]" in render(board)


def test_an_empty_results_folder_still_gives_a_page(tmp_path):
    result = build(tmp_path / "no-results", tmp_path / "site", Options())
    assert result.rows == [] and render(result.board) == "no run records yet\n"
    assert "No run records yet" in result.page.read_text()


def test_the_compute_table_says_which_runs_packed_their_tokens():
    """The packed token layout makes FlexCare's steps 1.47x faster: compute times of runs with and
    without it are not like for like, so the setting column names it (records from before the
    switch ran padded)."""
    from leaderboard.aggregate import compute_line
    from leaderboard.report import run_row as row

    padded = make_record(gpu="NVIDIA H100")
    packed = make_record(gpu="NVIDIA H100", seed=40)
    packed["environment"]["token_layout"] = "packed"
    assert compute_line("bce", [row(padded)])["setting"] == "bf16, 1 packed"
    assert compute_line("bce", [row(padded), row(packed)])["setting"] == "bf16, 1 packed; bf16, 1 packed, tokens packed"
    varlen = make_record(gpu="NVIDIA H100", seed=100)
    varlen["environment"]["token_layout"] = "varlen"
    assert compute_line("bce", [row(varlen)])["setting"] == "bf16, 1 packed, tokens packed, varlen attention"
    varlen["environment"]["compile"] = "on"
    assert compute_line("bce", [row(varlen)])["setting"] == "bf16, 1 packed, tokens packed, varlen attention, compiled"


def test_runs_of_a_timing_only_encoder_stay_out_of_the_result_tables_but_not_out_of_compute(tmp_path):
    from benchmark.marks import TIMING_ENCODERS

    timing = next(iter(TIMING_ENCODERS))
    real = [make_record(m, "sym-20", s, 0.4, gpu="NVIDIA H100", encoder="minilm", realised=(0.19 + s / 1e4, 0.2))
            for m in ("bce", "gce") for s in SEEDS]
    random_notes = [make_record("focal", "sym-20", s, 0.6, gpu="NVIDIA H100", encoder=timing) for s in SEEDS]
    write_records(tmp_path / "r" / "real", real)
    write_records(tmp_path / "r" / "random", random_notes)
    shown = build(tmp_path / "r", tmp_path / "site", Options())
    track = shown.board["tracks"][0]
    assert {r["method"] for r in track["tasks"][0]["rows"]} == {"FlexCare (BCE)", "GCE"}
    assert {r["method"] for b in track["compute"] for r in b["rows"]} == {"FlexCare (BCE)", "GCE", f"Focal [encoder={timing}]"}
    assert [(e["record_set"], e["encoder"], e["runs"], e["in_results"]) for e in track["encoders"]] == [
        ("random", timing, 3, False), ("real", "minilm", 6, True)]
    noise = track["tasks"][0]["noises"][0]
    assert noise["realised_rho_plus"] == [0.193, 0.2] and noise["realised_rho_minus"] == [0.2, 0.2]
    html = (tmp_path / "site" / "index.html").read_text()
    assert "random-weight BERT-base (timing only)" in html and "left out of the result tables" in html
    assert "0.193-0.200 / 0.200" in html and f"read from <code>{tmp_path / 'r'}</code>" in html
    everything = build(tmp_path / "r", None, Options(timing_encoders=True)).board["tracks"][0]
    assert f"Focal [encoder={timing}]" in {r["method"] for r in everything["tasks"][0]["rows"]}


def test_the_second_tab_holds_each_runs_secondary_metrics_and_older_records_show_a_dash(site):
    """syn-dia's records carry metrics.secondary and metrics.bootstrap, syn-phe's (an older harness) do not."""
    from record_factory import DIA, DIA_ECE

    result, out = site
    dia = cells(result.board, "syn-dia")
    for method, display in (("bce", "FlexCare (BCE)"), ("focal", "Focal"), ("gce", "GCE")):
        metrics = dia[(display, "sym-20")]["secondary"]["metrics"]
        assert metrics["ece"]["mean"] == pytest.approx(np.mean(DIA_ECE[method]))
        assert metrics["ece"]["std"] == pytest.approx(np.std(DIA_ECE[method], ddof=1))
        assert metrics["map_one_missing"]["mean"] == pytest.approx(np.mean(DIA[method]) - 0.1)
        assert metrics["boot_half_width"]["mean"] == pytest.approx(0.02) and metrics["ap_medium"]["n"] == 0
        intervals = dia[(display, "sym-20")]["secondary"]["intervals"]
        assert intervals == [[s, pytest.approx(v - 0.02), pytest.approx(v + 0.02)] for s, v in zip(SEEDS, DIA[method])]
    assert cells(result.board)[("GCE", "sym-20")]["secondary"]["metrics"]["ece"]["n"] == 0
    page = (out / "index.html").read_text()
    ece = 'id="secondary-quick-syn-dia-ece"'
    table_html = page[page.index(ece):page.index("</table>", page.index(ece))]
    assert "<td>FlexCare (BCE)</td><td" in table_html and ">0.060 (0.010)</td>" in table_html
    phe = page[page.index('id="secondary-quick-syn-phe-ece"'):]
    assert ">-</td>" in phe[:phe.index("</table>")]
    assert "test-set 95 % bootstrap interval of each run&#39;s mAP (patients resampled, B=1000, RNG seed 20240517)" in page
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert {"ece", "brier", "ap_rare", "map_both", "map_one_missing", "boot_low", "boot_high", "boot_b"} <= set(runs[0])


def test_an_under_coding_column_is_headed_by_its_family_name_after_the_paper_families():
    records = [make_record(m, noise, s, 0.4 + 0.01 * s / 100) for m in ("bce", "focal")
               for noise in ("under-40", "asym-40-0", "sym-20") for s in SEEDS]
    syn_phe = table(build_board([run_row(r) for r in records], Options()), "syn-phe")
    assert [n["name"] for n in syn_phe["noises"]] == ["sym-20", "asym-40-0", "under-40"]
    assert [(f["family"], f["name"]) for f in syn_phe["families"]] == [
        ("sym", "symmetric"), ("asym", "asymmetric"), ("under", "under-coding")]
