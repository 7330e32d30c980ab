"""The command behind a run or a cell (leaderboard/reproduce.py): planning it gives the run's spec
again, and on the smoke track running a cell's command gives the cell's numbers again."""
import csv
import html
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import _grids, build_parser
from benchmark.records import RecordStore, run_id
from benchmark.runner import plan
from leaderboard import Options, build
from leaderboard.reproduce import command, gaps, with_seeds

REPO = Path(__file__).resolve().parent.parent


def planned_again(line: str) -> list[dict]:
    """The specs ``ehrbench`` plans from a command line, as ``bench`` would (without running them)."""
    words = shlex.split(line)
    assert words[:2] == ["ehrbench", "bench"]
    return [spec for spec in _grids(build_parser().parse_args(words[1:]))[0].specs]


@pytest.mark.parametrize("method, track, kwargs", [
    ("bce", "quick", {}),
    ("bce", "smoke", {"overrides": {"modalities": "ehr", "structural_mask": "blocking"}, "noise_seed_policy": "per-seed"}),
    ("miracl", "smoke", {"overrides": {"weight_decay": 2.0e-5, "pstar_weights": "1,0,0", "rank_only_selection": True,
                                       "warmup_epochs": 1}}),
    ("bce", "smoke", {"encoder": "random-bert-base", "normaliser": "reference"}),
    ("gce", "full", {"overrides": {"q": 0.5}}),
    # The full track at generator 3's short notes (its records before generator 4), and longer smoke notes.
    ("bce", "full", {"note_scale": 0.0}),
    ("bce", "smoke", {"note_scale": 1.0}),
])
def test_planning_a_runs_command_gives_its_spec_again(method, track, kwargs):
    for spec in plan(method, track, noises=["sym-20", "asym-40-0"], seeds=[30, 100], **kwargs).specs:
        line = command(spec)
        assert gaps(spec) == [] and planned_again(line) == [spec], line


def test_the_command_names_only_what_differs_from_the_defaults():
    spec = plan("miracl", "smoke", noises=["bal-40"], seeds=[7], noise_seed_policy="per-seed",
                overrides={"weight_decay": 1.0e-4, "pstar_weights": "1,0,0"}).specs[0]
    assert command(spec) == ("ehrbench bench --method miracl --track smoke --tasks syn-phe --noise bal-40 "
                             "--noise-seed per-seed --set pstar_weights=1,0,0 --set weight_decay=0.0001 --seeds 7")
    assert command(spec, compiled=True).endswith("--compile on --seeds 7")
    assert with_seeds(command(spec), [100, 30]).endswith("--seeds 30,100")


def test_a_full_track_record_of_generator_3_is_planned_again_with_short_notes():
    spec = plan("bce", "full", ["mimic3-phe"], ["sym-20"], [30], note_scale=0.0).specs[0]
    assert "note_scale" not in spec["task_spec"] and spec["data_generator"] == "3"  # as such records hold it
    assert command(spec).endswith("--note-scale 0.0 --seeds 30")
    assert "--note-scale" not in command(plan("bce", "full", ["mimic3-phe"], ["sym-20"], [30]).specs[0])


def test_what_no_flag_sets_is_named_as_a_gap():
    spec = plan("bce", "smoke", noises=["sym-20"], seeds=[30]).specs[0]
    spec["budget"] = {**spec["budget"], "epochs": 3}
    spec["method"]["version"] = "0.9"
    del spec["method"]["hparams"]["modalities"]
    said = gaps(spec)
    assert any("budget field(s) epochs" in g for g in said) and any("method version 0.9" in g for g in said)
    assert any("modalities added since" in g for g in said)
    assert gaps({**spec, "method": {"name": "nobody", "hparams": {}}}) == ["method 'nobody' is not in this checkout"]


def ehrbench(*args, results):
    proc = subprocess.run([sys.executable, "-m", "benchmark", *args, "--jobs", "1", "--device", "cpu",
                           "--results", str(results)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def maps(results) -> dict:
    return {r["run_id"]: (r["spec"]["seed"], r["metrics"]["final"]["map"]) for _, r, _ in RecordStore(results).scan()}


def test_a_cells_command_run_on_the_smoke_track_gives_the_cells_numbers_again(tmp_path):
    """CPU runs are deterministic: the command of the board's cell, run into an empty results folder,
    plans the same run ids and gets the same mAP per seed, to the last bit."""
    ehrbench("bench", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--noise", "asym-0-20",
              "--seeds", "30,40", "--set", "modalities=ehr", "--noise-seed", "per-seed", results=tmp_path / "a")
    built = build(tmp_path / "a", tmp_path / "site", Options(), tracks=["smoke"])
    board = json.loads((tmp_path / "site" / "board.json").read_text())
    (row,) = board["tracks"][0]["tasks"][0]["rows"]
    (cell,) = row["cells"]
    assert cell["command"] == ("ehrbench bench --method bce --track smoke --tasks syn-phe --noise asym-0-20 "
                               "--noise-seed per-seed --set modalities=ehr --seeds 30,40")
    assert cell["command_gaps"] == "" and cell["harness_versions"] == [built.rows[0]["harness_version"]]
    assert cell["commits"] == [built.rows[0]["git_sha"] or "?"] and len(cell["run_ids"]) == 2
    page = (tmp_path / "site" / "index.html").read_text()
    assert html.escape(f"reproduce: {cell['command']}") in page and " ".join(cell["run_ids"]) in page
    runs = list(csv.DictReader((tmp_path / "site" / "runs.csv").open()))
    assert sorted(r["command"] for r in runs) == [cell["command"].replace("30,40", s) for s in ("30", "40")]

    ehrbench(*shlex.split(cell["command"])[1:], results=tmp_path / "b")
    again = maps(tmp_path / "b")
    assert sorted(again) == cell["run_ids"] and again == maps(tmp_path / "a")
    assert sorted(again.values()) == [tuple(v) for v in cell["values"]]
    assert all(run_id(spec) in again for spec in planned_again(cell["command"]))
