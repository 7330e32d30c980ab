"""The published set (leaderboard/published/, benchmark/baselines.py, leaderboard/sources.py): the committed
tree is every shipped method's grid at this harness version; `ehrbench publish-baselines` writes it and
resumes; the leaderboard shows it beside the user's records, marked, and compares a run id both hold."""
import csv
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmark import __version__, baselines, records
from benchmark.records import RecordStore
from leaderboard import Options, build
from leaderboard.aggregate import build_board
from leaderboard.report import run_row
from leaderboard.sources import BOTH_AGREE, BOTH_DIFFER, CPU_MAP_TOLERANCE, PUBLISHED_ROOT
from leaderboard.tables import render
from record_factory import SEEDS, make_record

REPO = Path(__file__).resolve().parent.parent
# The reduced grid the behaviour tests publish on the smoke track: 2 methods x 1 task x 1 setting x 2 seeds.
GRID = {"methods": ["bce", "focal"], "tasks": ["syn-phe"], "noises": ["sym-20"], "seeds": [30, 40]}
FILTERS = ["--methods", "bce,focal", "--tasks", "syn-phe", "--noise", "sym-20", "--seeds", "30,40"]


def ehrbench(*args, env=None):
    import os

    proc = subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600, env={**os.environ, **(env or {})})
    return proc


def publish(out):
    proc = ehrbench("publish-baselines", "--track", "smoke", "--out", str(out), *FILTERS, "--jobs", "1",
                    "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def snapshot(folder: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def rewrite(path: Path, edit) -> None:
    """Edit a record in place, keeping it valid (``edit(record)``)."""
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record, indent=1, sort_keys=True))


def shift_map(by: float):
    def edit(record):
        for row in (record["metrics"]["final"], record["metrics"]["curve"][-1]):
            row["map"] += by
    return edit


# --- the committed set ---------------------------------------------------------------------------

def committed_tracks() -> list[str]:
    return sorted(p.name for p in PUBLISHED_ROOT.iterdir() if p.is_dir()) if PUBLISHED_ROOT.is_dir() else []


@pytest.mark.parametrize("track", sorted({"quick", *committed_tracks()}))
def test_the_committed_published_set_is_every_shipped_methods_grid_at_this_harness_version(track):
    """Complete (every shipped method x task x noise setting x seed of the track, as `bench` plans them),
    each record valid, done, eager, aggregates only and of benchmark.__version__, and nothing else: fails,
    naming each run, when the harness version or a method's spec moves on until the set is published again."""
    if track == "quick" and not (PUBLISHED_ROOT / "quick").exists():
        pytest.skip("no published quick set: run make publish-baselines TRACK=quick")
    problems = baselines.problems(PUBLISHED_ROOT, track)
    assert not problems, (f"the published set of track {track} is not this checkout's ({len(problems)} problem(s)); "
                          f"`make publish-baselines TRACK={track}` regenerates what is missing or stale:\n"
                          + "\n".join(problems))


# --- publish-baselines ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A published set of the reduced smoke grid, made by `ehrbench publish-baselines`."""
    out = tmp_path_factory.mktemp("published")
    proc = publish(out)
    return out, proc


@pytest.mark.slow  # runs `ehrbench` on the smoke track
def test_publish_baselines_writes_each_run_of_the_grid_as_bench_does_and_a_second_call_runs_nothing(published):
    out, first = published
    specs = baselines.grid("smoke", **GRID)
    store = RecordStore(out)
    assert "bce,focal on track 'smoke': 4 runs, 0 already done, 4 to run" in first.stdout
    assert sorted(out.rglob("*.json")) == sorted(store.path(spec) for spec in specs)
    for spec in specs:
        record = store.read(store.path(spec))  # valid, at the place and under the name its spec gives
        assert record["spec"] == spec and record["status"] == "done"
        assert record["environment"]["harness_version"] == __version__ and baselines.per_stay_lists(record) == []
    assert f"published set {out / 'smoke'}: complete, 4 record(s) of harness {__version__}" in first.stdout
    assert baselines.problems(out, "smoke", specs) == []

    before = snapshot(out)
    again = publish(out)
    assert "4 runs, 4 already done, 0 to run" in again.stdout and "removed" not in again.stdout
    assert snapshot(out) == before  # no record rewritten, no lock or temporary file left


@pytest.mark.slow  # runs `ehrbench` on the smoke track
def test_the_check_names_a_stale_a_missing_and_a_stray_record_and_passes_once_published_again(published, tmp_path):
    out = tmp_path / "published"
    shutil.copytree(published[0], out)
    specs = baselines.grid("smoke", **GRID)
    store = RecordStore(out)
    stale, gone = store.path(specs[0]), store.path(specs[3])
    rewrite(stale, lambda r: r["environment"].update(harness_version="0.0.1"))
    gone.unlink()
    stray = stale.parent / "0123456789abcdef.json"
    shutil.copyfile(store.path(specs[1]), stray)
    where = lambda p: str(p.relative_to(out))  # noqa: E731
    assert baselines.problems(out, "smoke", specs) == [
        f"stale: bce syn-phe sym-20 seed 30 ({where(stale)}): harness version '0.0.1', this harness is {__version__}",
        f"missing: focal syn-phe sym-20 seed 40 ({where(gone)})",
        f"not in the grid: {where(stray)}: the file name is not the record's run id {store.path(specs[1]).stem} (a copy or a renamed file)",
    ]

    again = publish(out)  # part of the grid: the stale record is redone, the stray file left to the whole grid
    assert f"removed {where(stale)}: harness version '0.0.1'" in again.stdout
    assert "4 runs, 2 already done, 2 to run" in again.stdout
    assert baselines.problems(out, "smoke", specs, whole=False) == []
    assert baselines.prune(out, "smoke", specs, whole=True) == [f"{where(stray)}: not a record of this checkout's grid"]
    assert baselines.problems(out, "smoke", specs) == []


@pytest.mark.slow  # runs `ehrbench` on the smoke track
def test_a_new_harness_version_makes_every_record_stale_by_name(published, monkeypatch):
    specs = baselines.grid("smoke", **GRID)
    assert baselines.problems(published[0], "smoke", specs) == []
    monkeypatch.setattr(records, "__version__", "9.9.9")
    problems = baselines.problems(published[0], "smoke", specs)
    assert len(problems) == 4 and all(p.startswith("stale: ") and p.endswith(
        f"harness version '{__version__}', this harness is 9.9.9") for p in problems)
    assert {p.split(" (")[0] for p in problems} == {f"stale: {m} syn-phe sym-20 seed {s}" for m in ("bce", "focal")
                                                    for s in (30, 40)}


def test_a_list_longer_than_any_per_label_or_per_epoch_one_is_per_stay_output():
    record = make_record(aucs=(0.6, 0.7, 0.8))  # three epochs, one label
    record["spec"].update(task_spec={"num_labels": 1}, budget={"epochs": 3})
    assert baselines.per_stay_lists(record) == []
    record["spec"]["budget"]["epochs"] = 2
    assert baselines.per_stay_lists(record) == ["metrics.curve (3 entries)"]
    record["spec"]["budget"]["epochs"] = 3
    record["metrics"]["final"]["scores"] = [0.5] * 160
    assert baselines.per_stay_lists(record) == ["metrics.final.scores (160 entries)"]


# --- the leaderboard ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def yours(published, tmp_path_factory):
    """The user's results: bce at sym-20 seed 30 (a published run id) and at sym-40 seed 30 (not published)."""
    results = tmp_path_factory.mktemp("results")
    proc = ehrbench("bench", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--noise", "sym-20,sym-40",
                    "--seeds", "30", "--jobs", "1", "--device", "cpu", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    return results


def cells(board, rows=False):
    table = board["tracks"][0]["tasks"][0]
    if rows:
        return {r["method"]: r for r in table["rows"]}
    return {(r["method"], c["noise"]): c for r in table["rows"] for c in r["cells"]}


@pytest.mark.slow  # runs `ehrbench` on the smoke track
def test_the_board_shows_published_and_your_runs_marked_and_a_shared_run_id_once(published, yours, tmp_path):
    result = build(yours, tmp_path / "site", Options(), tracks=["smoke"], published_root=published[0])
    board = result.board
    rows, c = cells(board, rows=True), cells(board)
    assert {m: r["source"] for m, r in rows.items()} == {"FlexCare (BCE)": "published + yours", "Focal": "published"}
    shared = c[("FlexCare (BCE)", "sym-20")]
    # The user's rerun of published run seed 30 on this CPU gives its number again: counted once, marked.
    assert [(t["seed"], t["agree"], t["difference"]) for t in shared["twins"]] == [(30, True, 0.0)]
    assert shared["n"] == 2 and [s for s, _ in shared["values"]] == [30, 40] and BOTH_DIFFER not in shared["flags"]
    assert shared["source_marks"] == [BOTH_AGREE] and shared["sources"] == ["published", "yours"]
    assert c[("FlexCare (BCE)", "sym-40")]["source_marks"] == ["yours"]  # your run only, in a row of both
    assert c[("Focal", "sym-20")]["source_marks"] == [] and c[("Focal", "sym-20")]["sources"] == ["published"]
    assert board["tracks"][0]["published"] == {"folder": str(published[0] / "smoke"), "present": True, "records": 4}

    site = tmp_path / "site"
    text = (site / "board.md").read_text()
    assert "FlexCare (BCE) [published + yours]" in text and "Focal [published]" in text
    assert f"[{BOTH_AGREE}]" in text and "4 published record(s)" in text
    assert json.loads((site / "board.json").read_text())["map_tolerance"] == CPU_MAP_TOLERANCE
    runs = list(csv.DictReader((site / "runs.csv").open()))
    assert sorted(r["source"] for r in runs) == ["published"] * 4 + ["yours"] * 2
    page = (site / "index.html").read_text()
    assert '<span class="source published yours">[published + yours]</span>' in page
    assert '<span class="source published">[published]</span>' in page and "Published set: 4 record(s)" in page
    assert "within the CPU determinism tolerance 1e-06" in page


@pytest.mark.slow  # runs `ehrbench` on the smoke track
@pytest.mark.parametrize("by, flagged", [(0.01, True), (2 * CPU_MAP_TOLERANCE, True), (CPU_MAP_TOLERANCE / 2, False)])
def test_your_run_of_a_published_run_id_is_flagged_when_its_map_differs_beyond_the_tolerance(
        published, yours, tmp_path, by, flagged):
    mine = tmp_path / "results"
    shutil.copytree(yours, mine)
    spec = baselines.grid("smoke", ["bce"], ["syn-phe"], ["sym-20"], [30])[0]
    rewrite(RecordStore(mine).path(spec), shift_map(by))
    board = build(mine, None, Options(), tracks=["smoke"], published_root=published[0]).board
    cell = cells(board)[("FlexCare (BCE)", "sym-20")]
    (twin,) = cell["twins"]
    assert twin["difference"] == pytest.approx(by) and twin["agree"] is not flagged
    assert (BOTH_DIFFER in cell["flags"]) is flagged
    assert cell["source_marks"] == ([] if flagged else [BOTH_AGREE])
    published_map = json.loads(RecordStore(published[0]).path(spec).read_text())["metrics"]["final"]["map"]
    assert dict(map(tuple, cell["values"]))[30] == published_map  # the published run is the one counted
    line = next(line for line in render(board).splitlines() if line.startswith("FlexCare (BCE)"))
    assert (f"[{BOTH_DIFFER}]" in line) is flagged and (f"[{BOTH_AGREE}]" in line) is not flagged


def test_the_tolerance_is_the_boundary_of_a_mismatch_for_records_built_in_the_test():
    def rows(maps, source):
        return [{**run_row(make_record("bce", "sym-20", s, m)), "source": source} for s, m in zip(SEEDS, maps)]

    base = [0.40, 0.41, 0.42]
    for shift, flagged in ((0.0, False), (0.9 * CPU_MAP_TOLERANCE, False), (1.1 * CPU_MAP_TOLERANCE, True)):
        board = build_board(rows(base, "published") + rows([m + shift for m in base], "yours"), Options())
        cell = cells(board)[("FlexCare (BCE)", "sym-20")]
        assert len(cell["twins"]) == 3 and cell["n"] == 3
        assert (BOTH_DIFFER in cell["flags"]) is flagged, shift
        assert cell["eligible"] is not flagged and cell["mean"] == pytest.approx(0.41)  # flagged: neither ranked nor tested


@pytest.mark.slow  # runs `ehrbench` on the smoke track
def test_cli_reads_the_published_set_by_default_and_no_published_leaves_it_out(published, yours, tmp_path):
    env = {"EHRBENCH_PUBLISHED": str(published[0])}
    args = ["leaderboard", "--results", str(yours), "--tracks", "smoke"]
    both = ehrbench(*args, "--out", str(tmp_path / "both"), env=env)
    assert both.returncode == 0, both.stderr
    assert "FlexCare (BCE) [published + yours]" in both.stdout and "6 run records, 0 skipped" in both.stdout
    alone = ehrbench(*args, "--out", str(tmp_path / "alone"), "--no-published", env=env)
    assert alone.returncode == 0, alone.stderr
    assert "[published" not in alone.stdout and "published record" not in alone.stdout
    assert "2 run records, 0 skipped" in alone.stdout
    runs = list(csv.DictReader((tmp_path / "alone" / "runs.csv").open()))
    assert [r["source"] for r in runs] == ["yours", "yours"]

    # No published set for the track: the board is the one of your records, and one line says so.
    missing = ehrbench(*args, "--out", str(tmp_path / "missing"), "--published", str(tmp_path / "none"), env=env)
    assert missing.returncode == 0, missing.stderr
    said = [line for line in missing.stdout.splitlines() if "published set" in line.lower()]
    assert said == [f"No published set for track smoke ({tmp_path / 'none' / 'smoke'}): the tables hold your "
                    f"records only."]
    assert (tmp_path / "missing" / "runs.csv").read_bytes() == (tmp_path / "alone" / "runs.csv").read_bytes()
    assert "No published set for track smoke" in (tmp_path / "missing" / "index.html").read_text()
    assert "No published set for track smoke" not in (tmp_path / "alone" / "index.html").read_text()
    quiet = ehrbench(*args, "--out", str(tmp_path / "quiet"), "--published", str(tmp_path / "none"), "--format",
                     "none", env=env)
    assert [line for line in quiet.stdout.splitlines() if "published set" in line.lower()] == said


@pytest.mark.slow  # runs `ehrbench` on the smoke track
def test_a_release_archives_the_published_records_it_read_under_published(published, yours, tmp_path):
    build(yours, tmp_path / "site", Options(), tracks=["smoke"], published_root=published[0], release="v1.0")
    with tarfile.open(tmp_path / "site" / "releases" / "v1.0" / "records.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    mine = {n for n in members if not n.startswith("published/")}
    assert mine == {str(p.relative_to(yours)) for p in yours.rglob("*.json")}
    theirs = {n: data for n, data in members.items() if n.startswith("published/")}
    assert theirs == {f"published/{p.relative_to(published[0])}": p.read_bytes() for p in published[0].rglob("*.json")}


@pytest.mark.parametrize("argv, message", [
    (["--track", "smoke"], "--track smoke: the smoke track is for tests and never on a leaderboard; give --out DIR"),
    (["--track", "smoke", "--out", "{tmp}", "--methods", "bcee"], "unknown method 'bcee'; did you mean 'bce'?"),
    (["--track", "quik"], "unknown track 'quik'; did you mean 'quick'?"),
    (["--track", "smoke", "--out", "{tmp}/file"], "--out {tmp}/file: is a file, expected a folder of published sets"),
])
def test_publish_baselines_refuses_bad_input_in_one_line_before_anything_runs(tmp_path, capsys, argv, message):
    from benchmark.cli import main

    (tmp_path / "file").write_text("")
    assert main(["publish-baselines", *(a.format(tmp=tmp_path) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ehrbench: error: {message.format(tmp=tmp_path)}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_page_says_which_published_sets_exist_and_which_are_not_made_yet(tmp_path):
    """Every synthetic leaderboard track is listed, shown or not: quick with its record files, full as none yet."""
    root = tmp_path / "published"
    write_one = root / "quick" / "syn-phe" / "bce" / "0123456789abcdef.json"
    write_one.parent.mkdir(parents=True)
    write_one.write_text("{}")
    (tmp_path / "results").mkdir()
    result = build(tmp_path / "results", tmp_path / "site", Options(), published_root=root)
    assert result.board["published_sets"] == [
        {"track": "quick", "folder": str(root / "quick"), "files": 1},
        {"track": "full", "folder": str(root / "full"), "files": 0}]
    page = (tmp_path / "site" / "index.html").read_text()
    assert "track quick: 1 record file(s)" in page
    assert "track full: none yet (<code>make publish-baselines TRACK=full</code> makes it)" in page
    assert "track paper" not in page.split("published-sets")[1].split("</p>")[0]
