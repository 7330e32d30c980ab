import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cli import main

SMOKE = ["bench", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--jobs", "1", "--device", "cpu"]


def ehrbench(*args, **kw):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, **kw)


@pytest.mark.parametrize("argv, message", [
    (["bench", "--method", "foo"], "unknown method 'foo'; valid choices: asl, bce, focal, gce, m3care, medfuse, miracl, mllsc, multit"),
    (["bench", "--method", "bcee"], "unknown method 'bcee'; did you mean 'bce'?; valid choices: asl, bce, focal,"),
    (["bench", "--method", ""], "no method given (e.g. METHOD=bce); available: asl, bce, focal, gce, m3care, medfuse, miracl, mllsc, multit"),
    (["bench", "--method", "bce", "--track", "fast"], "unknown track 'fast'; valid choices: demo, full, paper, quick, smoke"),
    (["bench", "--method", "bce", "--track", "paper"], "data/mimic4/phenotyping: folder not found; point --root (or EHRBENCH_DATA)"),
    (["bench", "--method", "bce", "--tasks", "mimic4-phe"], "unknown task 'mimic4-phe' in track 'quick'; valid choices: syn-phe"),
    (["bench", "--method", "bce", "--noise", "sym-20,sym20x"], "unknown noise setting 'sym20x'"),
    (["bench", "--method", "bce", "--noise", "asym-20"], "malformed noise setting 'asym-20'"),
    (["bench", "--method", "bce", "--seeds", "30,forty"], "--seeds: expected comma-separated integers"),
    (["bench", "--method", "bce", "--set", "nokey"], "--set: expected KEY=VALUE, got 'nokey'"),
    (["bench", "--method", "bce", "--set", "depth=3"], "method 'bce' has no hyper-parameter 'depth'; its hyper-parameters: fusion_layout, modalities, structural_mask"),
    (["bench", "--method", "bce", "--set", "modalities=text"], "method 'bce': hyper-parameter 'modalities' = 'text' is not allowed; allowed: one of both, ehr, note"),
    (["table", "--track", "nope"], "unknown track 'nope'"),
    (["methods", "describe", "m3car"], "unknown method 'm3car'; did you mean 'm3care'?"),
    (["methods", "describe", "--task", "syn-phe"], "unknown task 'syn-phe' in track 'full'"),
])
def test_bad_input_is_one_line_naming_the_thing_and_the_choices(argv, message, capsys, tmp_path):
    code = main(argv + (["--results", str(tmp_path)] if argv[0] == "bench" else []))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ehrbench: error: ")
    assert message in err
    assert not any(tmp_path.iterdir())  # refused before any work


def test_a_planned_method_says_not_available_yet_without_traceback(tmp_path):
    # A methods folder without the paper's m3care: it is planned, not unknown.
    (tmp_path / "bce").mkdir()
    (tmp_path / "bce" / "manifest.yaml").write_text((Path(__file__).parent.parent / "methods" / "bce" / "manifest.yaml").read_text())
    proc = ehrbench("bench", "--method", "m3care", env={**os.environ, "EHRBENCH_METHODS": str(tmp_path)})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "method 'm3care' is not available yet" in proc.stderr


def test_miracl_runs_on_the_smoke_track_and_records_its_scored_corrections(tmp_path):
    results = str(tmp_path / "results")
    proc = ehrbench("bench", "--method", "miracl", "--track", "smoke", "--jobs", "1", "--device", "cpu",
                    "--noise", "sym-40", "--seeds", "30", "--results", results)
    assert proc.returncode == 0, proc.stderr
    assert "track smoke / task syn-phe" in proc.stdout and "track smoke / task syn-dia" in proc.stdout
    assert proc.stdout.count("MIRACL") >= 2
    for path in Path(results).rglob("*.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "done"
        first, last = record["metrics"]["curve"]
        assert first["method"]["stage"] == "corrected"  # the 2-epoch budget: t_w = 1
        assert 0 <= last["corrections"]["flagged_noisy_precision"] <= 1
        assert "corrections" not in record["metrics"]["final"]


def test_bench_runs_the_grid_prints_the_table_and_reruns_nothing(tmp_path):
    results = str(tmp_path / "results")
    first = ehrbench(*SMOKE, "--noise", "sym-20,bal-40", "--seeds", "30,40", "--results", results)
    assert first.returncode == 0, first.stderr
    assert "4 runs, 0 already done, 4 to run" in first.stdout
    assert len(re.findall(r"\] bce syn-phe .* mAP 0\.\d{4} .*ETA", first.stdout)) == 4
    assert "track smoke / task syn-phe" in first.stdout and "FlexCare (BCE)" in first.stdout
    assert "ddof=1" in first.stdout and "[n=2]" in first.stdout
    records = sorted(Path(results).rglob("*.json"))
    assert len(records) == 4
    stamps = [p.stat().st_mtime_ns for p in records]

    again = ehrbench(*SMOKE, "--noise", "sym-20,bal-40", "--seeds", "30,40", "--results", results)
    assert again.returncode == 0
    assert "4 runs, 4 already done, 0 to run" in again.stdout
    assert [p.stat().st_mtime_ns for p in records] == stamps
    table = ehrbench("table", "--track", "smoke", "--results", results)
    row = next(line for line in again.stdout.splitlines() if line.startswith("FlexCare (BCE)"))
    assert row in table.stdout.splitlines()


def test_a_corrupt_record_is_set_aside_and_redone_without_stopping_other_runs(tmp_path):
    results = str(tmp_path / "results")
    assert ehrbench(*SMOKE, "--noise", "sym-20", "--seeds", "30,40", "--results", results).returncode == 0
    victim = sorted(Path(results).rglob("*.json"))[0]
    victim.write_text('{"schema_version": 1, "run_id": "trunc')
    table = ehrbench("table", "--track", "smoke", "--results", results)
    assert table.returncode == 0 and f"warning: skipping {victim}: not valid JSON" in table.stderr
    rerun = ehrbench(*SMOKE, "--noise", "sym-20", "--seeds", "30,40", "--results", results)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 runs, 1 already done, 1 to run" in rerun.stdout
    assert f"warning: {victim}: not valid JSON" in rerun.stderr
    assert json.loads(victim.read_text())["status"] == "done"
    assert len(list(Path(results).rglob("*.corrupt-*"))) == 1


def test_interrupted_grid_resumes_with_only_the_missing_runs(tmp_path):
    results = tmp_path / "results"
    args = [sys.executable, "-m", "benchmark", *SMOKE, "--noise", "sym-20,sym-40,asym-0-20", "--seeds", "30,40,100",
            "--results", str(results)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    deadline = time.time() + 120
    while len(list(results.rglob("*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    finished = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "rerun the same command" in err
    assert 2 <= len(finished) < 9
    assert not list(results.rglob("*.tmp"))

    rerun = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert rerun.returncode == 0, rerun.stderr
    assert f"9 runs, {len(finished)} already done, {9 - len(finished)} to run" in rerun.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert len(list(results.rglob("*.json"))) == 9


def test_methods_and_tracks_are_listed(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("asl ") and "\nbce        FlexCare (BCE)" in out
    assert "\nm3care     M3Care" in out and "\nmedfuse    MedFuse" in out and "\nmiracl     MIRACL" in out
    assert "planned, not available yet" not in out
    assert main(["tracks"]) == 0
    assert "quick  tasks: syn-phe" in capsys.readouterr().out


def test_failed_runs_are_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    methods = tmp_path / "methods"
    (methods / "nan").mkdir(parents=True)
    manifest = (Path(__file__).parent.parent / "methods" / "bce" / "manifest.yaml").read_text()
    (methods / "nan" / "manifest.yaml").write_text(manifest.replace("name: bce", "name: nan").replace("BCE", "Nan"))
    (methods / "nan" / "method.py").write_text(
        "from benchmark.method import Method\n"
        "class Nan(Method):\n"
        "    def loss(self, logits, targets, index, epoch):\n"
        "        return logits.mean() * (float('nan') if epoch == 2 else 1.0)\n")
    env = {**os.environ, "EHRBENCH_METHODS": str(methods)}
    proc = ehrbench("bench", "--method", "nan", "--track", "smoke", "--tasks", "syn-phe", "--noise", "sym-20",
                    "--seeds", "30,40", "--jobs", "1", "--results", str(tmp_path / "r"), env=env)
    assert proc.returncode == 1
    assert proc.stdout.count("FAILED: non-finite training loss (nan) in epoch 2") == 2
    assert "2 run(s) failed" in proc.stderr
    recs = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    assert [r["status"] for r in recs] == ["failed", "failed"]
    assert "failed" in proc.stdout  # the table shows the cell as failed, not a number


def test_runs_packed_as_threads_all_finish_and_say_they_were_packed(tmp_path):
    # On a GPU, --runs-per-gpu K runs K runs at once as threads of one process (each on its own
    # stream); the same code path runs here on the CPU.
    results = tmp_path / "results"
    argv = [a for a in SMOKE if a not in ("--jobs", "1")]
    proc = ehrbench(*argv, "--noise", "sym-20", "--seeds", "30,40,100", "--runs-per-gpu", "3",
                    "--packing", "threads", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "3 runs, 0 already done, 3 to run (3 workers" in proc.stdout
    records = [json.loads(p.read_text()) for p in results.rglob("*.json")]
    assert sorted(r["spec"]["seed"] for r in records) == [30, 40, 100]
    assert all(r["status"] == "done" and r["environment"]["packed_runs"] == 3 for r in records)


def test_ctrl_c_stops_runs_packed_as_threads_and_keeps_finished_ones(tmp_path):
    results = tmp_path / "results"
    argv = [a for a in SMOKE if a not in ("--jobs", "1")]
    args = [sys.executable, "-m", "benchmark", *argv, "--noise", "sym-20,sym-40,asym-0-20", "--seeds", "30,40,100",
            "--runs-per-gpu", "2", "--packing", "threads", "--results", str(results)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    deadline = time.time() + 120
    while not list(results.rglob("*.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in err
    assert 1 <= len(list(results.rglob("*.json"))) < 9
    assert not list(results.rglob("*.tmp"))


def test_several_methods_make_one_grid_and_one_table(tmp_path):
    argv = [a if a != "bce" else "bce,focal" for a in SMOKE]
    proc = ehrbench(*argv, "--noise", "sym-40", "--seeds", "30", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "bce,focal on track 'smoke': 2 runs, 0 already done, 2 to run" in proc.stdout
    assert re.search(r"\] bce syn-phe", proc.stdout) and re.search(r"\] focal syn-phe", proc.stdout)
    assert "FlexCare (BCE)" in proc.stdout and "Focal" in proc.stdout
    bad = ehrbench(*[a if a != "bce" else "bce,nope" for a in SMOKE], "--results", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown method 'nope'" in bad.stderr


def test_the_eta_counts_the_runs_in_flight_on_parallel_workers():
    from benchmark.cli import _eta

    run = {"timings": {"total": 60.0}}
    # Four 60 s runs on two workers: when the first ends, the second is ending too, two more run together.
    assert _eta([run], [60.0], 3, 60.0, workers=2) == 60.0
    assert _eta([run, run], [60.0, 61.0], 2, 61.0, workers=2) == 60.0
    # One worker: the runs left one after another; a scheduler's queue: the observed rate.
    assert _eta([run], [60.0], 3, 60.0, workers=1) == 180.0
    assert _eta([run], [60.0], 3, 60.0, workers=0) == 180.0
    assert _eta([run] * 4, [60.0] * 4, 0, 60.0, workers=2) == 0.0
