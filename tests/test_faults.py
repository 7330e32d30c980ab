"""Fault injection: a bench killed anywhere, a full disk, two benches at once, a run that goes NaN or
out of memory. What a user relies on: no finished run is ever lost, no broken run reports a number,
and rerunning the same command finishes the grid.

A bench is killed (SIGKILL) at named points by a forked child that kills itself when it reaches the
point (training, a record's write, the tensor cache's build, the generator's files), and at random
times by its parent. Children are forks of the test process: no interpreter start per kill.
"""
import errno
import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

import benchmark.data.cache
import benchmark.data.generator
import benchmark.records
import benchmark.runner
import benchmark.trainer
from benchmark.cli import main
from benchmark.records import RecordStore

GRID = ["bench", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--device", "cpu", "--jobs", "1",
        "--noise", "sym-20,sym-40,asym-0-20", "--seeds", "30,40"]
RUNS = 6
# The kill test's grid: 24 runs of the smoke track, so that every kill point finds work left.
BIG = GRID[:-4] + ["--noise", "sym-20,sym-40,asym-0-20,asym-20-0,bal-20,bal-40", "--seeds", "30,40,100,1"]
METHODS = Path(__file__).parent.parent / "methods"


def comparable(record):
    """What a record says about the run (timings, memory, time stamp and host aside)."""
    return {k: v for k, v in record.items() if k not in ("timings", "peak_memory_bytes", "created_utc", "environment")}


def records(results):
    return {p: p.read_bytes() for p in Path(results).rglob("*.json")}


def kill_at(target, name, nth, after=False):
    """Patch ``target.name`` (in this child only) to SIGKILL the process on its ``nth`` call."""
    original, calls = getattr(target, name), [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        out = original(*args, **kwargs)
        if calls[0] == nth and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(target, name, hooked)


def fork_bench(argv, setup=lambda: None, fresh_cache=None, quiet=True):
    """A bench in a forked child; returns its pid. ``setup`` runs in the child first (its patches)."""
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        torch.set_num_threads(1)
        if quiet:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1), os.dup2(null, 2)
        if fresh_cache:
            os.environ["EHRBENCH_CACHE"] = str(fresh_cache)
            benchmark.runner._load_task.cache_clear()
        setup()
        code = main(argv)
    finally:
        os._exit(code)


def wait(pid, timeout=120):
    """('killed', None) or ('exited', code). A child still running after ``timeout`` s is killed and fails the test."""
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked bench {pid} still running after {timeout} s")
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return "killed", None
    return "exited", os.WEXITSTATUS(status)


# (point, patch target, attribute, call that kills, kill after the call, needs an empty tensor cache)
KILL_POINTS = [
    ("training, first epoch", benchmark.trainer, "evaluate", 1, False, False),
    ("training, last epoch", benchmark.trainer, "evaluate", 2, False, False),
    ("record written, not yet renamed", os, "fsync", 1, False, False),
    ("tensor cache: first array", benchmark.data.cache.np, "save", 1, False, True),
    ("tensor cache: eighth array written", benchmark.data.cache.np, "save", 8, True, True),
    ("tensor cache: entry renamed into place", benchmark.data.cache.os, "replace", 2, False, True),
    ("generator's files", benchmark.data.generator, "write", 1, True, True),
    ("record renamed, not yet reported", os, "replace", 1, True, False),
    ("training, second run", benchmark.trainer, "evaluate", 3, False, False),
    ("second record, before its rename", os, "fsync", 2, False, False),
    ("record renamed, second run", os, "replace", 2, True, False),
    ("training, first epoch again", benchmark.trainer, "evaluate", 1, False, False),
    ("record written, not yet renamed, again", os, "fsync", 1, False, False),
]
RANDOM_POINTS = 10  # a random one of these hooks, killing at a random call
RANDOM_HOOKS = [(benchmark.trainer, "evaluate", 3, False), (os, "fsync", 2, False), (os, "replace", 2, True)]
TIMED_KILLS = 3  # the parent kills the child at a random time


def random_points(rng):
    for _ in range(RANDOM_POINTS):
        target, name, most, after = rng.choice(RANDOM_HOOKS)
        nth = rng.randint(1, most)
        yield f"random: {name} call {nth}", target, name, nth, after, False


@pytest.fixture
def one_thread():
    """As in the forked benches: a float sum's order (the epoch's train loss) depends on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_sigkill_anywhere_loses_no_finished_run_and_the_rerun_completes_the_grid(tmp_path):
    reference = tmp_path / "reference"
    assert main(BIG + ["--results", str(reference)]) == 0
    expected = {p.name: comparable(json.loads(b)) for p, b in records(reference).items()}
    assert len(expected) == 24

    results, rng, kills = tmp_path / "results", random.Random(0), 0
    timed = [("timed", None, None, None, None, False)] * TIMED_KILLS
    for i, (point, target, name, nth, after, fresh) in enumerate(KILL_POINTS + list(random_points(rng)) + timed):
        before = records(results)
        argv = BIG + ["--results", str(results)]
        if target is None:
            pid = fork_bench(argv)
            time.sleep(rng.uniform(0.01, 0.12))
            os.kill(pid, signal.SIGKILL)
        else:
            pid = fork_bench(argv, lambda: kill_at(target, name, nth, after), fresh_cache=fresh and tmp_path / f"cache{i}")
        outcome, code = wait(pid)
        assert outcome == "killed" or (target is None and code == 0), (point, code)  # every kill point is reached
        kills += outcome == "killed"
        after_kill = records(results)
        assert all(after_kill.get(p) == b for p, b in before.items()), f"a finished run was lost or changed ({point})"
        store = RecordStore(results)
        assert [e for _, _, e in store.scan()] == [""] * len(after_kill), f"corrupt record after kill at {point}"
    assert kills >= 20
    assert len(records(results)) < 24  # the rerun below has work left

    assert main(BIG + ["--results", str(results)]) == 0
    final = {p.name: comparable(json.loads(b)) for p, b in records(results).items()}
    assert final == expected  # every run, once, and the same numbers as a grid that was never killed
    assert not list(results.rglob("*.corrupt-*")) and not list(results.rglob("*.tmp"))


def test_a_full_disk_stops_the_grid_with_one_line_and_keeps_finished_runs(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    real_fsync, calls = os.fsync, []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", full_disk)
    argv = GRID[:-4] + ["--noise", "sym-20", "--seeds", "30,40,100", "--results", str(results)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ehrbench: error: " in err
    assert "cannot write the record (No space left on device); finished runs are kept" in err
    (kept,) = records(results)
    assert not list(results.rglob("*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(argv) == 0
    assert "3 runs, 1 already done, 2 to run" in capsys.readouterr().out
    assert len(records(results)) == 3 and kept in records(results)


def test_two_benches_on_one_results_folder_do_every_run_exactly_once(tmp_path):
    results, log = tmp_path / "results", tmp_path / "writes.log"
    real_write = RecordStore.write

    def logged(self, record):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()} {record['run_id']}\n".encode())
        os.close(fd)
        return real_write(self, record)

    argv = GRID[:-2] + ["--seeds", "30", "--results", str(results)]
    pids = [fork_bench(argv, lambda: setattr(RecordStore, "write", logged)) for _ in range(2)]
    assert [wait(pid) for pid in pids] == [("exited", 0)] * 2
    writes = log.read_text().split()
    run_ids = writes[1::2]
    assert len(run_ids) == 3 and len(set(run_ids)) == 3  # three runs, each written once
    assert len(records(results)) == 3 and not list(results.rglob(".*.lock"))


def test_a_claim_waits_for_a_live_holder_and_takes_its_record(tmp_path):
    from benchmark.options import Execution
    from benchmark.runner import plan, run_one

    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    store = RecordStore(tmp_path)
    ready = tmp_path / "ready"
    pid = os.fork()
    if pid == 0:  # the other bench: holds the run, then finishes it
        try:
            torch.set_num_threads(1)
            with store.claim(spec) as finished:
                assert finished is None
                ready.touch()
                run_one.__wrapped__(spec, str(tmp_path), Execution(device="cpu"))
        finally:
            os._exit(0)
    while not ready.exists():
        time.sleep(0.01)
    with store.claim(spec) as finished:
        assert finished is not None and finished["status"] == "done"  # not run a second time
    assert wait(pid) == ("exited", 0)


def test_a_lock_file_left_by_a_killed_process_is_not_stale(tmp_path):
    from benchmark.runner import plan

    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    store = RecordStore(tmp_path)
    lock = store.path(spec).parent / f".{store.path(spec).stem}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")  # as SIGKILL leaves it: the file, but no process holding it
    (lock.parent / f".{store.path(spec).stem}.abc123.tmp").write_text('{"half": ')
    start = time.perf_counter()
    with store.claim(spec) as finished:
        assert finished is None
    assert time.perf_counter() - start < 1
    assert not list(lock.parent.iterdir())  # the lock and the half-written temporary are gone


def _method(tmp_path, name, body):
    """A methods folder with bce and a method ``name`` whose loss is ``body``."""
    return _method_class(tmp_path, name, "    def loss(self, logits, targets, index, epoch):\n"
                                         f"        {body}\n")


def _method_class(tmp_path, name, code):
    """A methods folder with bce and a method ``name``: class ``NAME`` with ``code`` from line 4 of method.py."""
    methods = tmp_path / "methods"
    if not (methods / "bce").exists():
        shutil.copytree(METHODS / "bce", methods / "bce")
    (methods / name).mkdir()
    manifest = (METHODS / "bce" / "manifest.yaml").read_text()
    (methods / name / "manifest.yaml").write_text(manifest.replace("name: bce", f"name: {name}").replace("BCE", name.upper()))
    (methods / name / "method.py").write_text(
        "import sys, torch\nfrom benchmark.method import Method\n"
        f"class {name.upper()}(Method):\n" + code)
    return methods


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_loss_fails_the_run_with_its_epoch_and_the_grid_goes_on(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv("EHRBENCH_METHODS", str(_method(
        tmp_path, "diverge", f"return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets) * "
                             f"(float('{value}') if epoch == 2 else 1.0)")))
    argv = GRID[:2] + ["diverge,bce"] + GRID[3:-4] + ["--noise", "sym-20", "--seeds", "30", "--results", str(tmp_path / "r")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert f"diverge syn-phe sym-20     seed 30  FAILED: non-finite training loss ({value}) in epoch 2" in out
    assert "1 run(s) failed" in err
    by_method = {r["spec"]["method"]["name"]: r for r in map(json.loads, records(tmp_path / "r").values())}
    assert by_method["bce"]["status"] == "done"
    failed = by_method["diverge"]
    assert failed["status"] == "failed" and failed["metrics"]["final"] == {} and len(failed["metrics"]["curve"]) == 1
    assert failed["failure"].startswith(f"non-finite training loss ({value}) in epoch 2; first at step ")
    assert failed["failure"].endswith("in the forward: the loss was non-finite, the gradients before it finite")


def test_out_of_memory_names_the_run_and_the_batch_size_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EHRBENCH_METHODS", str(_method(
        tmp_path, "oom", "raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')")))
    argv = GRID[:2] + ["oom,bce"] + GRID[3:-4] + ["--noise", "sym-20", "--seeds", "30", "--results", str(tmp_path / "r")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    by_method = {r["spec"]["method"]["name"]: r for r in map(json.loads, records(tmp_path / "r").values())}
    assert by_method["bce"]["status"] == "done"
    failure = by_method["oom"]["failure"]
    assert failure == (f"out of memory on cpu in run {by_method['oom']['run_id']} (oom syn-phe sym-20 seed 30) at batch "
                       "size 128 (the protocol's, fixed): run fewer runs at once (--runs-per-gpu 1, --jobs 1), cut "
                       "batches by length (--length-chunks 4), or use a larger GPU")
    assert f"FAILED: {failure}" in out and "Traceback" not in err


def test_the_same_spec_twice_gives_identical_records_on_cpu(tmp_path):
    from benchmark.options import Execution
    from benchmark.runner import plan, run_one

    spec = plan("bce", "smoke", ["syn-phe"], ["bal-40"], [40]).specs[0]
    first = run_one(spec, str(tmp_path / "a"), Execution(device="cpu"))
    second = run_one(spec, str(tmp_path / "b"), Execution(device="cpu"))
    assert comparable(first) == comparable(second)  # every metric, every epoch, every fingerprint: bit for bit
    assert first["metrics"]["curve"][-1]["per_label_ap"] == second["metrics"]["curve"][-1]["per_label_ap"]


def test_two_benches_setting_aside_one_corrupt_record_both_go_on(tmp_path):
    from benchmark.runner import plan

    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    store = RecordStore(tmp_path)
    store.path(spec).parent.mkdir(parents=True)
    store.path(spec).write_text("{")
    assert store.status(spec)[0] == "corrupt"
    first = store.quarantine(spec)
    store.quarantine(spec)  # the other bench saw it corrupt too: it is gone already
    assert first.exists() and store.status(spec) == ("missing", "")


def _children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from /proc (Linux)")
def test_sigkill_of_a_bench_with_worker_processes_leaves_no_worker_and_the_rerun_completes(tmp_path):
    import subprocess
    import sys

    results = tmp_path / "results"
    argv = [a if a != "1" else "2" for a in GRID] + ["--results", str(results)]  # --jobs 2: worker processes
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    deadline = time.time() + 120
    while not list(results.rglob("*.json")) and time.time() < deadline:
        time.sleep(0.02)
    workers = _children(proc.pid)
    proc.kill()
    proc.wait()
    kept = records(results)
    deadline = time.time() + 30
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # only if the test fails: no process of ours left behind
        os.kill(w, signal.SIGKILL)
    assert len(workers) >= 2 and not left  # no worker outlives the bench
    assert all(records(results).get(p) == b for p, b in kept.items())
    assert main(argv) == 0
    assert len(records(results)) == RUNS and [e for _, _, e in RecordStore(results).scan()] == [""] * RUNS


# --- the machine a bench runs on: no Slurm, a closed pipe -------------------------------------

def test_executor_slurm_without_slurm_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch, no srun
    argv = GRID[:-4] + ["--noise", "sym-20", "--seeds", "30", "--executor", "slurm", "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == ("ehrbench: error: --executor slurm: Slurm is not installed here (no sbatch or srun on PATH); run "
                   "bench on a Slurm login node, or use --executor local (this machine) or submitit-local (Slurm's "
                   "code path, on this machine)\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [["tracks"], ["methods"]])
def test_a_reader_that_closes_the_pipe_gets_no_traceback(command):
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # as `| head -1` does once it has its line: every write of ours fails
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmark", *command], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, cwd=Path(__file__).parent.parent)
    finally:
        os.close(write)
    assert proc.stderr == "" and proc.returncode == 141  # 128 + SIGPIPE, as the shell reports a piped cat


# --- folders a bench writes to: results, a record's folder, the tensor cache --------------------

ONE_RUN = GRID[:-4] + ["--noise", "sym-20", "--seeds", "30"]


class ReadOnly:
    """``read_only(folder)``: the folder made, then mode 0o555; ``read_only.undo(folder)``. Root ignores
    modes, so for root ``os.access`` answers as it would for anyone else (the harness asks it before
    writing)."""

    def __init__(self):
        self.folders = []

    def __call__(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        self.folders.append(folder)
        return folder

    def undo(self, folder):
        folder.chmod(0o755)
        self.folders.remove(folder)

    def access(self, real):
        return lambda path, mode, **kw: not (mode & os.W_OK and Path(path) in self.folders) and real(path, mode, **kw)


@pytest.fixture
def read_only(monkeypatch):
    made = ReadOnly()
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", made.access(os.access))
    yield made
    for folder in list(made.folders):
        made.undo(folder)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty tensor cache for this test (the process's loaded tasks forgotten before and after)."""
    monkeypatch.setenv("EHRBENCH_CACHE", str(tmp_path / "cache"))
    benchmark.runner._load_task.cache_clear()
    yield tmp_path / "cache"
    benchmark.runner._load_task.cache_clear()


def _one_line_error(capsys, code=2):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ehrbench: error: ") and "Traceback" not in err, err
    return err.removeprefix("ehrbench: error: ").rstrip("\n")


def test_a_read_only_results_folder_is_refused_before_any_run(tmp_path, read_only, capsys):
    results = read_only(tmp_path / "r")
    with mock.patch("benchmark.runner.execute", side_effect=AssertionError("nothing may run")):
        assert main(ONE_RUN + ["--results", str(results)]) == 2
    assert _one_line_error(capsys) == f"--results {results}: the folder is not writable"


@pytest.mark.parametrize("in_the_way", ["smoke/syn-phe/bce", "smoke"])
def test_a_file_where_a_records_folder_must_be_is_named_before_any_run(tmp_path, capsys, in_the_way):
    blocker = tmp_path / "r" / in_the_way
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    with mock.patch("benchmark.runner.execute", side_effect=AssertionError("nothing may run")):
        assert main(ONE_RUN + ["--results", str(tmp_path / "r")]) == 2
    within = "" if in_the_way.endswith("bce") else f" (records go to {tmp_path / 'r/smoke/syn-phe/bce'})"
    assert _one_line_error(capsys) == (f"{blocker}: is a file, expected a folder of run records{within}; move it "
                                       f"aside and rerun the same command (finished runs are kept)")


def test_a_read_only_records_folder_is_named_before_any_run(tmp_path, read_only, capsys):
    folder = read_only(tmp_path / "r" / "smoke" / "syn-phe" / "bce")
    with mock.patch("benchmark.runner.execute", side_effect=AssertionError("nothing may run")):
        assert main(ONE_RUN + ["--results", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys) == (f"{folder}: the folder of run records is not writable; make it writable or "
                                       f"choose another --results")


def test_a_records_folder_turned_into_a_file_mid_grid_stops_the_run_with_one_line(tmp_path):
    from benchmark.errors import RecordError
    from benchmark.runner import plan

    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    store = RecordStore(tmp_path)
    store.path(spec).parent.parent.mkdir(parents=True)
    store.path(spec).parent.write_text("")  # after the bench's check: the claim is the first to see it
    with pytest.raises(RecordError) as e:
        with store.claim(spec):
            pass
    assert str(e.value).startswith(f"{store.path(spec).parent}: is a file, expected a folder of run records")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_cache_path_that_is_a_file_is_one_line(tmp_path, fresh_cache, capsys, jobs):
    fresh_cache.write_text("")
    argv = ONE_RUN[:-2] + ["--seeds", "30,40", "--jobs", jobs, "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    assert _one_line_error(capsys) == (f"tensor cache {fresh_cache} (EHRBENCH_CACHE): is a file, expected a folder; "
                                       f"point EHRBENCH_CACHE at a writable folder")
    assert not list((tmp_path / "r").rglob("*.json"))


def test_a_file_inside_the_cache_is_named(tmp_path, fresh_cache, capsys):
    fresh_cache.mkdir()
    (fresh_cache / "files").write_text("")  # where the generator's files go
    assert main(ONE_RUN + ["--results", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys) == (f"tensor cache {fresh_cache} (EHRBENCH_CACHE): {fresh_cache / 'files'} is a "
                                       f"file, expected a folder; point EHRBENCH_CACHE at a writable folder")


def test_a_read_only_cache_is_one_line_and_still_serves_what_it_holds(tmp_path, fresh_cache, read_only, capsys):
    read_only(fresh_cache)
    assert main(ONE_RUN + ["--results", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys) == (f"tensor cache {fresh_cache} (EHRBENCH_CACHE): {fresh_cache} is not "
                                       f"writable, and the task is not built there yet; point EHRBENCH_CACHE at a "
                                       f"writable folder")
    read_only.undo(fresh_cache)
    assert main(ONE_RUN + ["--results", str(tmp_path / "r")]) == 0  # builds the task
    benchmark.runner._load_task.cache_clear()
    for folder in [fresh_cache, *fresh_cache.iterdir()]:
        read_only(folder)
    assert main(ONE_RUN[:-1] + ["40", "--results", str(tmp_path / "r")]) == 0  # read from the cache


def test_a_full_disk_while_building_the_cache_is_one_line(tmp_path, fresh_cache, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(benchmark.data.cache.np, "save", full)
    assert main(ONE_RUN + ["--results", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys) == (f"tensor cache {fresh_cache} (EHRBENCH_CACHE): cannot write (No space left "
                                       f"on device); point EHRBENCH_CACHE at a writable folder with free space")
    assert not list((fresh_cache / "tasks").iterdir())  # no half-written entry


@pytest.mark.parametrize("command", [["status", "--method", "bce", "--track", "smoke"], ["results", "import", "."]])
def test_status_and_import_refuse_a_results_path_that_is_a_file(tmp_path, capsys, command):
    (tmp_path / "r").write_text("")
    assert main(command + ["--results", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys) == f"--results {tmp_path / 'r'}: is a file, expected a folder of run records"


# --- a method's own code: it does not parse, its __init__ raises, it exits ---------------------

BCE_LOSS = ("    def loss(self, logits, targets, index, epoch):\n"
            "        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)\n")


@pytest.mark.parametrize("name, code, reason", [
    ("syntax", "    def loss(self, logits:\n", "{file}:4: syntax error: '(' was never closed (method 'syntax' cannot be imported)"),
    ("initraise", "    def __init__(self, info, hparams):\n        raise ValueError('needs 80 GB')\n" + BCE_LOSS,
     "{file}:5: ValueError in INITRAISE.__init__: needs 80 GB"),
    ("initexit", "    def __init__(self, info, hparams):\n        sys.exit('no GPU')\n" + BCE_LOSS,
     "{file}:5: method 'initexit' called sys.exit('no GPU') in INITEXIT.__init__; a method must raise an "
     "exception, not end the process"),
    ("modelraise", "    def build_model(self):\n        raise KeyError('d_model')\n" + BCE_LOSS,
     "{file}:5: KeyError in MODELRAISE.build_model: 'd_model'"),
    ("importexit", "    pass\nsys.exit(4)\n", "{file}:5: method 'importexit' called sys.exit(4) while importing method.py; "
     "a method must raise an exception, not end the process"),
    ("trainexit", "    def loss(self, logits, targets, index, epoch):\n        sys.exit(3) if epoch == 2 else None\n"
     "        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)\n",
     "{file}:5: method 'trainexit' called sys.exit(3) during training; a method must raise an exception, not end "
     "the process"),
])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_broken_method_fails_its_runs_with_one_line_and_the_other_methods_go_on(tmp_path, monkeypatch, capsys,
                                                                                   name, code, reason, jobs):
    methods = _method_class(tmp_path, name, code)
    monkeypatch.setenv("EHRBENCH_METHODS", str(methods))
    argv = GRID[:2] + [f"{name},bce"] + GRID[3:-6] + ["--jobs", jobs, "--noise", "sym-20", "--seeds", "30,40",
                                                        "--results", str(tmp_path / "r")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == f"2 run(s) failed; their records under {tmp_path / 'r'}/ say why\n"  # no traceback
    reason = reason.format(file=methods / name / "method.py")
    by_method = {}
    for record in map(json.loads, records(tmp_path / "r").values()):
        by_method.setdefault(record["spec"]["method"]["name"], []).append(record)
    assert [r["status"] for r in by_method["bce"]] == ["done", "done"]
    assert [(r["status"], r["failure"]) for r in by_method[name]] == [("failed", reason)] * 2
    for seed in ("30", "40"):
        assert f"{name} syn-phe sym-20     seed {seed:<3} FAILED: {reason}  (" in out


# --- a worker process killed by the kernel mid-run ---------------------------------------------

KILLS_ITS_WORKER = ("    def loss(self, logits, targets, index, epoch):\n"
                    "        import multiprocessing, os, signal\n"
                    "        if multiprocessing.parent_process() is None:  # never the test's own process\n"
                    "            raise RuntimeError('expected to run in a worker process')\n"
                    "        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does\n")


@pytest.mark.slow
def test_a_worker_killed_mid_run_fails_that_run_with_the_signal_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EHRBENCH_METHODS", str(_method_class(tmp_path, "oomkill", KILLS_ITS_WORKER)))
    argv = GRID[:2] + ["oomkill,bce"] + GRID[3:-6] + ["--jobs", "2", "--packing", "processes", "--noise", "sym-20",
                                                     "--seeds", "30,40", "--results", str(tmp_path / "r")]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err == f"2 run(s) failed; their records under {tmp_path / 'r'}/ say why\n"
    by_method = {}
    for record in map(json.loads, records(tmp_path / "r").values()):
        by_method.setdefault(record["spec"]["method"]["name"], []).append(record)
    assert [r["status"] for r in by_method["bce"]] == ["done", "done"]  # the runs the break ended were run again
    for record in by_method["oomkill"]:
        assert record["status"] == "failed" and record["metrics"] == {"final": {}, "curve": []}
        assert re.fullmatch(r"the worker process running this run \(pid \d+\) was killed by signal 9 \(SIGKILL\); the "
                            r"kernel's out-of-memory killer sends it when memory runs out: rerun with fewer runs at "
                            r"once \(--jobs 1\) or with more memory", record["failure"]), record["failure"]
        assert f"FAILED: {record['failure']}  (" in out
    assert [e for _, _, e in RecordStore(tmp_path / "r").scan()] == [""] * 4
    assert not list((tmp_path / "r").rglob(".*.lock"))
    assert main(argv) == 1  # a rerun redoes the failed runs only
    assert "4 runs, 2 already done, 2 to run" in capsys.readouterr().out
