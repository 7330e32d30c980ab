"""Executors: a small grid through submitit's local backend (real submitit, real subprocesses, Slurm's
code path), a worker killed with SIGKILL whose run is resubmitted on the next call while the finished
ones are not redone, ``ehrbench status``, and ``local-gpus``'s split of a grid over GPUs (a fake device
count: this CI has no GPU).
"""
import json
import os
import signal
import time
from pathlib import Path

import pytest

import benchmark.executors as executors
from benchmark.cli import main
from benchmark.options import Execution
from benchmark.records import RecordStore

pytestmark = pytest.mark.slow
GRID = ["--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--noise", "sym-20,asym-0-20", "--seeds", "30,40"]
BENCH = ["bench", *GRID, "--device", "cpu", "--executor", "submitit-local", "--time", "5"]


def records(results):
    return {p: p.read_bytes() for p in Path(results).rglob("*.json")}


def status_counts(results, capsys):
    capsys.readouterr()
    assert main(["status", *GRID, "--results", str(results), "--summary"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_grid_through_submitit_local(tmp_path, capsys):
    results = tmp_path / "results"
    assert main([*BENCH, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "submitted 4 runs as 4 local job(s)" in out and "[4/4]" in out
    found = records(results)
    assert len(found) == 4
    store, jobs = RecordStore(results), executors.submissions(str(results))
    for path in found:
        record = store.read(path)
        assert record["status"] == "done"
        where = record["environment"]["executor"]
        assert where["name"] == "submitit-local" and where["node"] and where["job_id"]
        assert jobs[record["run_id"]]["job_id"] == where["job_id"]  # the log names the job that ran it
    assert status_counts(results, capsys) == "4 done, 0 failed, 0 running, 0 pending"
    assert main([*BENCH, "--results", str(results)]) == 0  # nothing left: nothing submitted
    assert "4 already done, 0 to run" in capsys.readouterr().out
    assert records(results) == found


def holder_of(lock: Path) -> int | None:
    """The pid of a process with ``lock`` open (the run's worker: it holds the claim)."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) == str(lock):
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


def test_killed_worker_is_resubmitted_and_finished_runs_are_not_redone(tmp_path, capsys):
    results = tmp_path / "results"
    assert main([*BENCH, "--results", str(results), "--no-wait"]) == 0
    # SIGKILL the worker of the first run seen running (holding its claim), mid-way through the run.
    deadline, victim = time.monotonic() + 90, None
    while victim is None:
        assert time.monotonic() < deadline, "no run started within 90 s"
        for lock in results.rglob(".*.lock"):
            pid = holder_of(lock.resolve())
            if pid and pid != os.getpid():
                victim, killed_id = pid, lock.name[1:-len(".lock")]
                break
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    # The three other runs finish; the killed one is left without a record (pending).
    deadline = time.monotonic() + 120
    while status_counts(results, capsys) != "3 done, 0 failed, 0 running, 1 pending":
        assert time.monotonic() < deadline, status_counts(results, capsys)
        time.sleep(0.5)
    before = records(results)
    assert killed_id not in {p.stem for p in before}
    assert main([*BENCH, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "3 already done, 1 to run" in out and "submitted 1 runs" in out
    after = records(results)
    assert len(after) == 4 and {p: after[p] for p in before} == before  # the finished runs untouched
    (resumed,) = set(after) - set(before)
    assert resumed.stem == killed_id and json.loads(after[resumed])["status"] == "done"
    assert status_counts(results, capsys) == "4 done, 0 failed, 0 running, 0 pending"


def test_status_reports_a_claimed_run_as_running(tmp_path, capsys):
    from benchmark.runner import plan

    results = tmp_path / "results"
    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    with RecordStore(results).claim(spec) as finished:
        assert finished is None
        assert executors.run_state(RecordStore(results), spec) == "running"
    assert executors.run_state(RecordStore(results), spec) == "pending"


def test_local_gpus_splits_the_grid_one_job_per_gpu(tmp_path, monkeypatch):
    """No GPU here: a fake count of 3 checks the split and the settings; each job's CUDA_VISIBLE_DEVICES
    comes from submitit's local backend (gpus_per_node=1), not exercised without GPUs."""
    from benchmark.runner import plan

    monkeypatch.setattr(executors, "visible_gpus", lambda: 3)
    specs = plan("bce", "smoke", ["syn-phe"], ["sym-20", "sym-40"], [30, 40, 100, 1]).specs
    ex = executors.make_executor(Execution(executor="local-gpus", jobs=4), str(tmp_path))
    assert ex.gpus == 3 and ex.execution.device == "cuda" and ex.execution.jobs == 4
    assert ex.executor._executor.parameters["gpus_per_node"] == 1
    submitted = []

    class FakeJob:
        job_id = "fake"

    monkeypatch.setattr(ex, "submit", lambda group: submitted.append(group) or FakeJob())
    with pytest.warns(Warning):  # no real submission inside the batch
        groups = ex.submit_all(specs)
    assert [len(g) for g, _ in groups] == [3, 3, 2]
    assert sorted(s["seed"] for g in submitted for s in g) == sorted(s["seed"] for s in specs)
    monkeypatch.setattr(executors, "visible_gpus", lambda: 0)
    with pytest.raises(Exception, match="no CUDA device"):
        executors.make_executor(Execution(executor="local-gpus", jobs=1), str(tmp_path))


def test_profile_is_checked(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("partition: gpu\ntime: 30\naccount: lab\n")
    assert executors.load_profile(str(profile)) == {"partition": "gpu", "time": 30, "account": "lab"}
    profile.write_text("partiton: gpu\n")
    with pytest.raises(Exception, match="unknown setting 'partiton'"):
        executors.load_profile(str(profile))


def test_slurm_asks_one_gpu_per_run_unless_on_cpu(tmp_path, monkeypatch):
    import submitit

    seen = []
    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", lambda self, **kw: seen.append(kw))
    monkeypatch.setattr(submitit.AutoExecutor, "__init__", lambda self, folder, cluster=None: None)
    monkeypatch.setattr(executors, "require_slurm", lambda name: None)  # the parameters, not the installation
    executors.make_executor(Execution(executor="slurm"), str(tmp_path), {"partition": "gpu", "time": 30})
    executors.make_executor(Execution(executor="slurm", device="cpu"), str(tmp_path), {"partition": "cpu"})
    assert seen == [{"slurm_partition": "gpu", "timeout_min": 30, "gpus_per_task": 1},
                    {"slurm_partition": "cpu", "timeout_min": 60}]
