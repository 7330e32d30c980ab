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
import socket
import time
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .records import RecordStore, now_utc, run_id

EXECUTORS = ("local", "local-gpus", "slurm", "submitit-local")
# Slurm settings a profile (YAML) or the CLI may give, and submitit's names for them.
SLURM_KEYS = {"partition": "slurm_partition", "time": "timeout_min", "gpus_per_task": "gpus_per_task",
              "array_parallelism": "slurm_array_parallelism", "account": "slurm_account",
              "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb"}
ENV_EXECUTOR = "EHRBENCH_EXECUTOR"


def describe() -> dict:
    """What a record states about where it ran: executor, node, scheduler job id (None when local)."""
    job = None
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    elif os.environ.get("SLURM_JOB_ID"):
        job = os.environ["SLURM_JOB_ID"]
    elif os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        job = os.environ["SUBMITIT_LOCAL_JOB_ID"]
    return {"name": os.environ.get(ENV_EXECUTOR, "local"), "node": socket.gethostname(), "job_id": job}


def load_profile(path: str | None) -> dict:
    if not path:
        return {}
    from .registry import read_yaml

    data = read_yaml(Path(path), where=f"--profile {path}") or {}
    if not isinstance(data, dict):
        raise UsageError(f"--profile {path}: expected a mapping of settings")
    unknown = sorted(set(data) - set(SLURM_KEYS))
    if unknown:
        raise UsageError(f"--profile {path}: unknown setting '{unknown[0]}'; known: {', '.join(SLURM_KEYS)}")
    return data


def run_specs(executor: str, specs: list[dict], results: str, options: dict) -> list[str]:
    """The job function: runs ``specs`` in a submitted job (its records are the output). Returns their
    statuses. ``options``: device, jobs, precision, cuda_graphs, length_chunks, packing, token_layout,
    compile."""
    os.environ[ENV_EXECUTOR] = executor  # worker processes inherit it; run_one records it
    from .runner import execute

    records = execute(specs, results, options.get("device", "auto"), options.get("jobs", 1), lambda s, r: None,
                      options.get("precision", "auto"), options.get("cuda_graphs", "auto"),
                      options.get("length_chunks"), options.get("packing", "auto"), options.get("token_layout", "auto"),
                      options.get("compile", "auto"))
    return [r["status"] for r in records]


class LocalExecutor:
    """Today's behaviour: ``runner.execute`` in this process (``--jobs``/``--runs-per-gpu`` packing)."""
    name = "local"

    def __init__(self, options: dict):
        self.options = options

    def run(self, specs: list[dict], results: str, report: Callable[[dict, dict], None], wait: bool = True) -> int:
        from .runner import execute

        o = self.options
        execute(specs, results, o["device"], o["jobs"], report, o["precision"], o["cuda_graphs"], o["length_chunks"],
                o["packing"], o.get("token_layout", "auto"), o.get("compile", "auto"))
        return 0


class SubmititExecutor:
    """``submit(specs) -> job`` (a future: ``done()``, ``result()``, ``job_id``) through submitit.

    ``cluster="slurm"``: one array task per run (``map_array`` semantics through ``executor.batch()``).
    ``cluster="local"`` with ``gpus``: one local job per GPU (``CUDA_VISIBLE_DEVICES`` set by submitit),
    each running its share of the grid with ``options["jobs"]`` runs packed on its GPU.
    ``cluster="local"`` without ``gpus``: one local subprocess job per run (the CI's stand-in for Slurm).
    """

    def __init__(self, name: str, cluster: str, results: str, options: dict, params: dict | None = None,
                 gpus: int = 0):
        import submitit

        self.name, self.cluster, self.results, self.options, self.gpus = name, cluster, results, options, gpus
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
        return self.executor.submit(run_specs, self.name, specs, self.results, self.options)

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


def make_executor(name: str, results: str, options: dict, params: dict | None = None):
    if name not in EXECUTORS:
        raise UsageError(f"--executor {name}: expected one of {', '.join(EXECUTORS)}")
    if name == "local":
        return LocalExecutor(options)
    if name == "local-gpus":
        gpus = visible_gpus()
        if not gpus:
            raise UsageError("--executor local-gpus: no CUDA device is visible")
        return SubmititExecutor(name, "local", results, {**options, "device": "cuda"}, params, gpus=gpus)
    params = dict(params or {})
    if name == "slurm" and options.get("device") != "cpu" and params.get("gpus_per_task") is None:
        params["gpus_per_task"] = 1  # a run is one GPU unless told otherwise
    if not params.get("gpus_per_task"):
        params.pop("gpus_per_task", None)
    if name == "submitit-local":  # Slurm's code path on this machine: one subprocess job per run
        return SubmititExecutor(name, "local", results, options, params)
    return SubmititExecutor(name, "slurm", results, options, params)


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
    except FileNotFoundError:
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
