"""Where a grid's runs execute: this process (``local``), one worker per local GPU (``local-gpus``) or a
Slurm cluster (``slurm``), the last two through submitit (its local backend runs the same code path
as Slurm, in subprocesses of this machine).

Nothing but the run id and the atomic record coordinates runs (``runner.run_one`` under its claim):
a job killed by the scheduler leaves no record, so the next ``bench`` submits its run again, and a
finished run is never redone. ``results/.submitit/`` keeps submitit's job folders and
``submissions.jsonl`` (one line per submitted run: run id, executor, job id), read by ``ehrbench status``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .environment import ENV_EXECUTOR
from .errors import UsageError
from .options import EXECUTORS, Execution
from .records import RecordStore, now_utc, run_id

# Slurm settings a profile (YAML) or the CLI may give, and submitit's names for them.
SLURM_KEYS = {"partition": "slurm_partition", "time": "timeout_min", "gpus_per_task": "gpus_per_task",
              "array_parallelism": "slurm_array_parallelism", "account": "slurm_account",
              "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb"}

def load_profile(path: str | None) -> dict:
    if not path:
        return {}
    from .yamlfile import read_yaml

    data = read_yaml(Path(path), where=f"--profile {path}") or {}
    if not isinstance(data, dict):
        raise UsageError(f"--profile {path}: expected a mapping of settings")
    unknown = sorted(set(data) - set(SLURM_KEYS))
    if unknown:
        raise UsageError(f"--profile {path}: unknown setting '{unknown[0]}'; known: {', '.join(SLURM_KEYS)}")
    return data


def run_specs(executor: str, specs: list[dict], results: str, execution: Execution) -> list[str]:
    """The job function: runs ``specs`` in a submitted job (its records are the output), resolving
    ``execution`` on the node that runs them. Returns their statuses."""
    os.environ[ENV_EXECUTOR] = executor  # worker processes inherit it; run_one records it
    from .runner import execute

    return [r["status"] for r in execute(specs, results, execution, lambda s, r: None)]


class LocalExecutor:
    """``runner.execute`` in this process (``--jobs``/``--runs-per-gpu`` packing)."""
    name = "local"

    def __init__(self, execution: Execution):
        self.execution = execution

    def run(self, specs: list[dict], results: str, report: Callable[[dict, dict], None], wait: bool = True) -> int:
        from .runner import execute

        execute(specs, results, self.execution, report)
        return 0


class SubmititExecutor:
    """``submit(specs) -> job`` (a future: ``done()``, ``result()``, ``job_id``) through submitit.

    ``cluster="slurm"``: one array task per run (``map_array`` semantics through ``executor.batch()``).
    ``cluster="local"`` with ``gpus``: one local job per GPU (``CUDA_VISIBLE_DEVICES`` set by submitit),
    each running its share of the grid with ``execution.jobs`` runs packed on its GPU.
    ``cluster="local"`` without ``gpus``: one local subprocess job per run (the CI's stand-in for Slurm).
    """

    def __init__(self, name: str, cluster: str, results: str, execution: Execution, params: dict | None = None,
                 gpus: int = 0):
        import submitit

        if cluster == "slurm":
            require_slurm(name)
        self.name, self.cluster, self.results, self.execution, self.gpus = name, cluster, results, execution, gpus
        self.folder = Path(results) / ".submitit"
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params = dict(params or {})
        converted = {SLURM_KEYS.get(k, k): v for k, v in params.items() if v is not None}
        converted.setdefault("timeout_min", 60)
        if cluster == "local":  # submitit's local backend knows only these
            converted = {k: v for k, v in converted.items() if k in ("timeout_min",)}
            if gpus:
                converted["gpus_per_node"] = 1
        self.executor.update_parameters(**converted)

    def submit(self, specs: list[dict]):
        return self.executor.submit(run_specs, self.name, specs, self.results, self.execution)

    def submit_all(self, specs: list[dict]) -> list[tuple[list[dict], object]]:
        if self.gpus:  # a share of the grid per GPU, round robin
            groups = [specs[i::self.gpus] for i in range(self.gpus)]
            groups = [g for g in groups if g]
        else:
            groups = [[s] for s in specs]
        with self.executor.batch():  # one Slurm job array
            jobs = [self.submit(g) for g in groups]
        self._log(list(zip(groups, jobs)))
        return list(zip(groups, jobs))

    def _log(self, submitted) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "submissions.jsonl", "a") as f:
            for group, job in submitted:
                for spec in group:
                    f.write(json.dumps({"run_id": run_id(spec), "executor": self.name, "job_id": str(job.job_id),
                                        "submitted_utc": now_utc()}) + "\n")

    def run(self, specs: list[dict], results: str, report: Callable[[dict, dict], None], wait: bool = True,
            poll: float = 1.0) -> int:
        """Submit ``specs``; with ``wait``, report each run as its job ends. Returns the number of jobs
        that ended without records for all their runs (killed, timed out, preempted)."""
        submitted = self.submit_all(specs)
        ids = ", ".join(str(job.job_id) for _, job in submitted[:4]) + (" ..." if len(submitted) > 4 else "")
        print(f"submitted {len(specs)} runs as {len(submitted)} {self.cluster} job(s) [{ids}] to {self.name}", flush=True)
        if not wait:
            return 0
        store, lost, pending = RecordStore(results), 0, list(submitted)
        while pending:
            still = []
            for group, job in pending:
                if not job.done():
                    still.append((group, job))
                    continue
                try:
                    job.result()
                except Exception as e:  # noqa: BLE001 - killed or failed job: its runs have no record
                    lost += 1
                    first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    print(f"job {job.job_id} ended without finishing its runs ({first[:200]}); rerun the same "
                          f"command to resubmit them", flush=True)
                for spec in group:
                    status, _ = store.status(spec)
                    if status in ("done", "failed"):
                        report(spec, store.read(store.path(spec)))
            pending = still
            if pending:
                time.sleep(poll)
        return lost


def require_slurm(name: str) -> None:
    """Slurm's commands must be on PATH (submitit submits with sbatch and its jobs start with srun):
    without them, one line saying so, not submitit's RuntimeError from deep inside."""
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise UsageError(f"--executor {name}: Slurm is not installed here (no {' or '.join(missing)} on PATH); run "
                         f"bench on a Slurm login node, or use --executor local (this machine) or submitit-local "
                         f"(Slurm's code path, on this machine)")


def make_executor(execution: Execution, results: str, params: dict | None = None):
    """The executor ``execution.executor`` names. Its runs resolve ``execution`` where they execute: a
    login node's ``auto`` says nothing about the GPU node that runs the job."""
    name = execution.executor
    if name == "local":
        return LocalExecutor(execution)
    if name == "local-gpus":
        gpus = visible_gpus()
        if not gpus:
            raise UsageError("--executor local-gpus: no CUDA device is visible")
        packed = execution.runs_per_gpu or execution.jobs or 1
        return SubmititExecutor(name, "local", results, execution.replace(device="cuda", jobs=packed), params, gpus=gpus)
    execution = execution.replace(jobs=1, runs_per_gpu=0)  # one run per array task
    params = dict(params or {})
    if name == "slurm" and execution.device != "cpu" and params.get("gpus_per_task") is None:
        params["gpus_per_task"] = 1  # a run is one GPU unless told otherwise
    if not params.get("gpus_per_task"):
        params.pop("gpus_per_task", None)
    if name == "submitit-local":  # Slurm's code path on this machine: one subprocess job per run
        return SubmititExecutor(name, "local", results, execution, params)
    return SubmititExecutor(name, "slurm", results, execution, params)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def run_state(store: RecordStore, spec: dict) -> str:
    """'done' | 'failed' from the record; 'running' while a process holds the run's claim; else 'pending'."""
    status, _ = store.status(spec)
    if status in ("done", "failed"):
        return status
    path = store.path(spec)
    lock = path.parent / f".{path.stem}.lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):  # no claim, or no folder for one (a file in its way)
        return "pending"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return "running"
        raise
    finally:
        os.close(fd)  # closing drops a lock we took
    return "pending"


def submissions(results: str) -> dict[str, dict]:
    """run id -> its latest submission (executor, job id), from ``results/.submitit/submissions.jsonl``."""
    log = Path(results) / ".submitit" / "submissions.jsonl"
    out: dict[str, dict] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
                out[entry["run_id"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a killed bench
    return out
