"""A grid of runs: plan it as pure data, skip what is done, run the rest, record every outcome.

A run is a pure function of its spec (DomainBed's sweep idea): ``plan`` turns the user's request
into specs, ``run_one`` turns one spec into a record, written atomically by whichever process ran
it. Nothing else coordinates runs, so Ctrl-C and a rerun lose nothing already finished.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass

import torch

from . import detection, environment
from .backbones.flexcare import count_parameters
from .data import Split, TaskData, check_source, materialise, prepare
from .data.evidence import train_evidence
from .data.generator import version as generator_version
from .data.notes import ENCODER_FOLDER, encoder_identity, parameter_count as count_encoder, resolve as resolve_encoder
from .data.timeseries import Normaliser
from .diagnostics import scorer
from .errors import BenchError, RunFailed, UsageError, out_of_memory, worker_lost
from .hparams import validate as validate_hparams
from .lifetime import STOP, exit_with_parent
from .marks import collapse
from .method import TaskInfo
from .noise import NOISE_DRAW_POLICY, make_noisy, noise_seed_for, spec_noise_seed
from .options import Execution
from .packing import Baton, turn_taking
from .protocol import (NOISE_SETTINGS, NORMALISERS, SEEDS, NoiseSetting, TaskSpec, Track, get_track, parse_noise,
                       task_dict)
from .records import SCHEMA_VERSION, RecordStore, claimed, now_utc, run_id
from .registry import MethodEntry, code_line, get_method
from .trainer import RunData, train


def make_spec(entry: MethodEntry, track: Track, task: TaskSpec, noise: NoiseSetting, seed: int, noise_seed_policy: str,
              hparams: dict | None = None, noise_draw: int = 0) -> dict:
    """The run spec. ``noise_draw`` d >= 1 adds ``"noise_draw": {"index": d, "policy": ...}`` (``noise.
    NOISE_DRAW_POLICY``); draw 0, the protocol's own draw, adds nothing, so its spec and run id are the
    ones of a grid without draws."""
    spec = {
        "method": {"name": entry.name, "version": entry.version, "hparams": hparams if hparams is not None else entry.hparams},
        "track": track.name,
        "task": task.name,
        "task_spec": task_dict(task),
        "data_generator": generator_version(task) if task.source == "synthetic" else None,
        "noise": {"name": noise.name, "family": noise.family, "rho_plus_pct": noise.rho_plus, "rho_minus_pct": noise.rho_minus,
                  **noise.spec_fields()},  # empty for the class-conditional families: their run ids are unchanged
        "seed": seed,
        "noise_seed_policy": noise_seed_policy,
        "budget": asdict(track.budget),
        "backbone": asdict(track.backbone),
        "empty_label": "zero",
    }
    if noise_draw:
        spec["noise_draw"] = {"index": noise_draw, "policy": NOISE_DRAW_POLICY}
    return spec


@dataclass
class Plan:
    method: MethodEntry
    track: Track
    specs: list[dict]
    notes: list[str] = dataclasses.field(default_factory=list)  # duplicates merged while planning, one line each


def plan(method: str, track: str, tasks: Sequence[str] | None = None, noises: Sequence[str] | None = None,
         seeds: Sequence[int] | None = None, noise_seed_policy: str = "reference", overrides: dict | None = None,
         encoder: str | None = None, normaliser: str | None = None, note_scale: float | None = None,
         noise_draws: int = 1) -> Plan:
    """Validate every name first (fail in the first second, not after an hour), then expand.

    ``overrides`` replace hyper-parameters of the method's manifest; ``encoder`` replaces the tasks'
    note encoder (a local folder enters the spec by its content, ``data.notes.encoder_identity``),
    ``normaliser`` their time-series normaliser ("train", "reference" or a JSON file), ``note_scale`` the
    note lengths of synthetic tasks (0: generator 3's short notes, 1: the real pipelines';
    ``data.note_lengths``). All become part of the run spec, hence of the run id. ``noise_draws`` K runs
    each (setting, seed) on K noise draws: draw 0 is the policy's own (its specs are those of a grid
    without draws), draws 1..K-1 enter the spec (``make_spec``); draws need the reference policy, under
    which a draw is one noisy matrix for every seed (seeds and draws crossed).
    """
    trk = get_track(track)
    entry = get_method(method)
    hparams = {**entry.hparams, **(overrides or {})}
    unknown = sorted(set(overrides or {}) - set(entry.hparams))
    if unknown:
        raise UsageError(f"method '{entry.name}' has no hyper-parameter '{unknown[0]}'; its hyper-parameters: "
                         f"{', '.join(sorted(entry.hparams)) or '(none)'}")
    if overrides and "hparam_schema" in entry.manifest:
        validate_hparams(entry.name, hparams, entry.manifest["hparam_schema"])
    task_specs = [trk.task(t) for t in tasks] if tasks else list(trk.tasks)
    if encoder:
        task_specs = [dataclasses.replace(t, encoder=encoder) for t in task_specs]
    # A local folder is in the spec by its content, not its path (data.notes.encoder_identity).
    task_specs = [dataclasses.replace(t, encoder=encoder_identity(t.encoder)) for t in task_specs]
    if normaliser:
        if normaliser not in NORMALISERS and not os.path.isfile(normaliser):
            raise UsageError(f"--normaliser {normaliser}: expected {' or '.join(NORMALISERS)} or a JSON file of "
                             f"means and stds")
        if normaliser not in NORMALISERS:  # read now: a malformed file fails before the first run
            Normaliser.from_file(normaliser)
        task_specs = [dataclasses.replace(t, normaliser=normaliser) for t in task_specs]
    if note_scale is not None:
        if not (math.isfinite(note_scale) and note_scale >= 0):
            raise UsageError(f"--note-scale {note_scale:g}: expected a share of the real note lengths, at least 0 "
                             f"(0: the history section alone, 1: the real pipelines')")
        real = next((t for t in task_specs if t.source != "synthetic"), None)
        if real is not None:
            raise UsageError(f"--note-scale: task '{real.name}' of track '{trk.name}' reads {real.source} files; "
                             f"only a synthetic task's notes have a length to set")
        task_specs = [dataclasses.replace(t, note_scale=float(note_scale)) for t in task_specs]
    settings, notes = _unique_settings(noises) if noises else (list(NOISE_SETTINGS), [])
    seed_list = list(seeds) if seeds else list(SEEDS)
    if len(set(seed_list)) < len(seed_list):
        twice = sorted({s for s in seed_list if seed_list.count(s) > 1})
        seed_list = list(dict.fromkeys(seed_list))
        notes.append(f"--seeds: seed{'s' if len(twice) > 1 else ''} {', '.join(map(str, twice))} given more than once: "
                     f"planned once ({len(seed_list)} seed{'s' if len(seed_list) > 1 else ''})")
    for task in task_specs:  # real data must be there before anything runs
        if task.source != "synthetic":
            check_source(task)
    noise_seed_for(noise_seed_policy, 0)  # validates the policy name
    if isinstance(noise_draws, bool) or not isinstance(noise_draws, int) or noise_draws < 1:
        raise UsageError(f"--noise-draws {noise_draws!r}: expected a whole number of noise draws >= 1 (1: the "
                         f"protocol's one draw)")
    if noise_draws > 1 and noise_seed_policy != "reference":
        raise UsageError(f"--noise-draws {noise_draws} with --noise-seed {noise_seed_policy}: that policy draws the "
                         f"noise from the run seed, so seeds already vary the noise and draws could not be told "
                         f"apart from them; use --noise-seed reference (the default) with --noise-draws")
    specs = [  # draw 0 of the whole grid first: the protocol's runs come before the extra draws
        make_spec(entry, trk, task, noise, seed, noise_seed_policy, hparams, draw)
        for draw in range(noise_draws) for task in task_specs for noise in settings for seed in seed_list
    ]
    return Plan(entry, trk, specs, notes)


def _unique_settings(noises: Sequence[str]) -> tuple[list[NoiseSetting], list[str]]:
    """The noise settings of ``noises``, each once: names of one setting (``parse_noise``: one setting
    per rates, e.g. ``sym-20``, ``sym-20.0`` and ``asym-20-20``) are merged, with one note saying so."""
    by_name: dict[str, list[str]] = {}
    settings = []
    for text in noises:
        setting = parse_noise(text)
        if setting.name not in by_name:
            by_name[setting.name] = []
            settings.append(setting)
        by_name[setting.name].append(text)
    merged = [f"{', '.join(dict.fromkeys(given))} are all {name} {parse_noise(name).label()}"
              for name, given in by_name.items() if len(given) > 1]
    notes = [f"--noise: one setting given more than once (a setting is its rates): {'; '.join(merged)}; planned "
             f"once"] if merged else []
    return settings, notes


_LOAD_LOCK = threading.Lock()


def load_task(spec: TaskSpec) -> TaskData:
    """Materialised once per process and task; every run of the grid shares it (runs packed as
    threads too: the lock makes the first one load it and the others wait)."""
    with _LOAD_LOCK:
        return _load_task(spec)


@functools.lru_cache(maxsize=4)
def _load_task(spec: TaskSpec) -> TaskData:
    return materialise(spec)


_RESIDENT: dict[str, tuple[TaskData, Split, Split]] = {}  # device -> the task last copied there


def resident(spec: TaskSpec, device: torch.device) -> tuple[Split, Split]:
    """The task's train and test splits on ``device``, copied once per process: runs packed as
    threads share them (read-only) instead of holding a copy each. The copy follows ``load_task``:
    a task loaded anew (its cache cleared) is copied anew."""
    with _LOAD_LOCK:
        data = _load_task(spec)
        held = _RESIDENT.get(str(device))
        if held is None or held[0] is not data:
            held = _RESIDENT[str(device)] = (data, data.train.to(device), data.test.to(device))
        return held[1], held[2]


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@claimed  # one process per run, even with two benches on one results folder
def run_one(spec: dict, results: str, execution: Execution = Execution(), packed: int = 1) -> dict:
    """Run one spec to a record (done or failed) and write it. Returns the record. ``packed``: the
    runs sharing the device with this one (its timings include their contention)."""
    execution = execution.resolved()
    device = torch.device(execution.device)
    entry = get_method(spec["method"]["name"])
    track = get_track(spec["track"])
    task = TaskSpec(**spec["task_spec"])  # the run is a function of its spec, overrides included
    setting = parse_noise(spec["noise"]["name"])
    t_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = load_task(task)
    # Counted when the notes were encoded. An older cache entry has no count: the
    # encoder is built on the meta device to count it (seconds, once per process, in "data").
    encoder_parameters = data.encoder_parameters or count_encoder(task.encoder)
    t_data = time.perf_counter()
    # Under-coding reads the harness's evidence of the training labels; no method ever gets it.
    evidence = train_evidence(task, data) if setting.family == "under" else None
    noisy = make_noisy(data.train.labels.numpy(), setting, spec_noise_seed(spec), evidence)
    t_noise = time.perf_counter()
    info = TaskInfo(task.name, task.kind, task.num_labels, len(data.train), data.train.ehr.shape[-1],
                    data.note_dim, tuple(data.label_names), track.backbone)
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(spec),
        "spec": spec,
        "status": "done",
        "failure": None,
        "metrics": {"final": {}, "curve": []},
        "fingerprints": {"data": data.fingerprint, "noisy_labels": noisy.checksum},
        "noise": noisy.summary(),
        "method": {"display_name": entry.manifest["display_name"], "code_hash": entry.code_hash(), "parameters": None},
        "environment": {**environment.describe(device), **execution.describe(packed, capturable=False),
                        "executor": environment.executor()},  # executor, node, scheduler job id
    }
    record["environment"]["encoder_parameters"] = encoder_parameters  # frozen, outside the method's count
    if task.encoder.startswith(ENCODER_FOLDER):  # provenance only: the spec names the folder by its content
        record["environment"]["encoder_path"] = resolve_encoder(task.encoder)
    timings = {"data": t_data - t_start, "noise": t_noise - t_data}
    noisy_labels = torch.from_numpy(noisy.labels).float().to(device)
    try:
        method = _build_method(entry, info, spec["method"]["hparams"], record, execution, packed)
        train_split, test_split = resident(task, device)
        run_data = RunData(train_split, noisy_labels, test_split, task.task_weight, spec["empty_label"])
        # The only place the clean training labels meet a method's output: scored, not handed over.
        if execution.forensics:
            execution = execution.replace(forensics=str(Path(execution.forensics) / record["run_id"]))
        result = train(method, run_data, track.budget, spec["seed"], execution,
                       on_epoch=record["metrics"]["curve"].append,
                       score_corrections=scorer(train_split.labels, noisy_labels),
                       score_suspicion=detection.scorer(train_split.labels, noisy_labels))
        record["metrics"]["final"] = {k: v for k, v in result.final.items()
                                      if k not in ("method", "lr", "train_loss", "corrections", "detection")}
        # Last-epoch protocol: a run that fell to chance still counts; the tables mark it from this.
        record["metrics"]["collapsed"] = collapse(result.curve)
        record["metrics"].update(result.summary)  # bootstrap, secondary: optional fields of the schema
        timings.update(result.timings)
        if result.compile_fallback:  # what ran, not what was asked for
            record["environment"].update(compile="off", compile_fallback=result.compile_fallback)
    except RunFailed as e:
        record.update(status="failed", failure=str(e))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()  # the grid goes on; the next run gets the memory back
        record.update(status="failed", failure=out_of_memory(spec, record["run_id"], device))
    except SystemExit as e:  # the method's code would end the bench (every run in this process) with it
        record.update(status="failed", failure=_method_failure(entry, e, "during training"))
    except Exception as e:  # a bug in a method must not stop the grid; the record keeps the reason
        traceback.print_exc(file=sys.stderr)
        record.update(status="failed", failure=f"{type(e).__name__}: {e}")
    timings["total"] = time.perf_counter() - t_start
    record.update(timings=timings, peak_memory_bytes=_peak_memory(device), created_utc=now_utc())
    if device.type == "cuda":
        # What the card held, not only what tensors used: graph pools and per-stream caching can
        # reserve several times the allocated peak (docs/performance.md, "Packing").
        record["environment"]["peak_memory_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
    RecordStore(results).write(record)
    return record


def _build_method(entry: MethodEntry, info: TaskInfo, hparams: dict, record: dict, execution: Execution,
                  packed: int):
    """The method's object, with its parameter count and run conditions put in ``record``. Whatever
    its code raises while imported, constructed or building its model (a syntax error, an exception,
    sys.exit) fails this run with one line; the other methods' runs go on."""
    stage = f"while importing {entry.manifest['entry'].partition(':')[0]}"
    try:
        cls = entry.load_class()
        stage = f"in {cls.__name__}.__init__"
        method = cls(info, hparams)
        stage = f"in {cls.__name__}.build_model"
        model = method.build_model()
        record["method"]["parameters"] = count_parameters(model)
        record["method"]["parameters_frozen"] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    except torch.cuda.OutOfMemoryError:
        raise  # the run's own failure line (``out_of_memory``), not the method's
    except (Exception, SystemExit) as e:
        raise RunFailed(_method_failure(entry, e, stage)) from None
    record["environment"].update(execution.describe(packed, method.capturable))
    return method


def _method_failure(entry: MethodEntry, error: BaseException, stage: str) -> str:
    """One line for what a method's code raised: where in its folder (FILE:LINE), what, and when."""
    if isinstance(error, BenchError):  # says which file and field already (a manifest's entry)
        return str(error)
    where = code_line(error, entry.folder) or str(entry.folder / entry.manifest["entry"].partition(":")[0])
    if isinstance(error, SyntaxError):
        return f"{where}: syntax error: {error.msg} (method '{entry.name}' cannot be imported)"
    if isinstance(error, SystemExit):
        return (f"{where}: method '{entry.name}' called sys.exit({error.code!r}) {stage}; a method must raise an "
                f"exception, not end the process")
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{where}: {type(error).__name__} {stage}: {first}"


_STARTED = None  # in a worker process: where it says which run it starts (``_run_in_worker``)


def _init_worker(threads: int, started=None) -> None:
    global _STARTED
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()  # a bench killed with SIGKILL leaves no worker behind
    torch.set_num_threads(threads)
    _STARTED = started


def _run_in_worker(spec: dict, results: str, execution: Execution, packed: int) -> dict:
    # One small message (an atomic pipe write): the parent names the run of a worker killed mid-run from it.
    _STARTED.put((os.getpid(), run_id(spec), time.time()))
    return run_one(spec, results, execution, packed)


def execute(specs: list[dict], results: str, execution: Execution, report: Callable[[dict, dict], None]) -> list[dict]:
    """Run ``specs``, ``execution.jobs`` at a time; ``report(spec, record)`` after each one.

    ``execution.packing``: how concurrent runs share the machine. "processes": one worker process per
    job (the CPU default: single-threaded workers scale best there). "threads": one thread per job,
    each on its own CUDA stream with its own RNG state, taking turns to issue work (``packing.py``; the
    GPU default): kernels of different runs overlap on the device, which separate processes do only
    under NVIDIA MPS.
    """
    execution = execution.resolved(len(specs))
    jobs = execution.jobs
    if jobs <= 1:
        records = []
        for spec in specs:
            records.append(run_one(spec, results, execution))
            report(spec, records[-1])
        return records
    if execution.packing != "threads":
        return _in_processes(specs, results, execution, report)
    pool, baton = ThreadPoolExecutor(jobs, thread_name_prefix="run"), Baton()
    records: list[dict] = []
    _drain(pool, {pool.submit(_run_taking_turns, baton, spec, results, execution, jobs): spec for spec in specs},
           report, records)
    return records


def _in_processes(specs: list[dict], results: str, execution: Execution,
                  report: Callable[[dict, dict], None]) -> list[dict]:
    """``specs`` in ``execution.jobs`` worker processes. A worker killed mid-run (the kernel's OOM
    killer sends SIGKILL) breaks the pool and ends the runs of the others: its run is recorded as
    failed with the signal, and the runs left go on in a new pool."""
    jobs, context, records = execution.jobs, multiprocessing.get_context("spawn"), []
    threads = max(1, (os.cpu_count() or 1) // jobs)
    _prepare_tasks(specs)
    left = list(specs)
    while left:
        started = context.SimpleQueue()
        pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(threads, started))
        pending = {pool.submit(_run_in_worker, spec, results, execution, jobs): spec for spec in left}
        # pid -> process, all started by the submits; and the pool's thread that reaps them when it breaks.
        workers = dict(getattr(pool, "_processes", None) or {})
        reaper = getattr(pool, "_executor_manager_thread", None)
        try:
            _drain(pool, pending, report, records)
            return records
        except BrokenProcessPool:
            if reaper is not None:  # a second waitpid racing it would see no exit code
                reaper.join()
            for proc in workers.values():
                proc.join()  # every exit code known: the killed ones, and the others the break ended
            lost = _lost_runs(workers, started, left, {r["run_id"] for r in records})
            if not lost:  # no run to blame: going on could break the pool again and again
                raise BenchError(f"a worker process ended abruptly without a run to blame; finished runs are kept in "
                                 f"{results}/, rerun the same command to do the others") from None
            for spec, reason, seconds in lost:
                records.append(_record_lost(spec, results, execution, reason, seconds))
                report(spec, records[-1])
        done = {r["run_id"] for r in records}
        left = [spec for spec in left if run_id(spec) not in done]
    return records


def _prepare_tasks(specs: list[dict]) -> None:
    """Each task's cache entry built here, on every core, before the workers start: otherwise the first
    run to reach a task builds it (its notes through the encoder) on its worker's one thread while the
    other workers wait for it. A task that fails to build is left to its runs, whose records say why."""
    for task in dict.fromkeys(TaskSpec(**spec["task_spec"]) for spec in specs):
        try:
            prepare(task, announce=lambda what: print(what, flush=True))
        except Exception:  # noqa: BLE001 - each run builds it again and records the failure with its spec
            pass


def _lost_runs(workers: dict, started, specs: list[dict], finished: set[str]) -> list[tuple[dict, str, float]]:
    """(spec, reason, seconds it ran) of each run whose worker died on its own, not ended by the pool's
    break (SIGTERM): the last run each worker said it started, unless it ``finished`` (a worker that
    died between runs)."""
    last = {}
    while not started.empty():
        pid, rid, at = started.get()
        last[pid] = (rid, at)
    by_id = {run_id(spec): spec for spec in specs}
    lost = []
    for pid, proc in workers.items():
        if proc.exitcode in (0, -signal.SIGTERM) or pid not in last:
            continue
        rid, at = last[pid]
        if rid in by_id and rid not in finished:
            lost.append((by_id[rid], worker_lost(pid, proc.exitcode), time.time() - at))
    return lost


def _record_lost(spec: dict, results: str, execution: Execution, reason: str, seconds: float) -> dict:
    """The failed record of a run whose process died before it could write one (written here, under
    the run's claim, unless another bench finished it meanwhile)."""
    entry = get_method(spec["method"]["name"])
    record = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id(spec), "spec": spec, "status": "failed", "failure": reason,
        "metrics": {"final": {}, "curve": []}, "fingerprints": {"data": None, "noisy_labels": None}, "noise": {},
        "method": {"display_name": entry.manifest["display_name"], "code_hash": entry.code_hash(), "parameters": None},
        "environment": {**environment.describe(torch.device(execution.device)),
                        **execution.describe(execution.jobs, capturable=False), "executor": environment.executor()},
        "timings": {"total": seconds}, "peak_memory_bytes": 0, "created_utc": now_utc(),
    }
    store = RecordStore(results)
    with store.claim(spec) as finished:
        if finished is not None:
            return finished
        store.write(record)
    return record


def _run_taking_turns(baton: Baton, spec: dict, results: str, execution: Execution, packed: int) -> dict:
    with turn_taking(baton, torch.device(execution.device)):
        return run_one(spec, results, execution, packed)


def _drain(pool, pending: dict, report: Callable[[dict, dict], None], records: list[dict]) -> None:
    """Report each run as it finishes, into ``records`` (kept by the caller if the pool breaks)."""
    try:
        with pool:  # on the way out, waits for threads: they stop at their next epoch once STOP is set
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        spec = pending.pop(future)
                        records.append(future.result())
                        report(spec, records[-1])
            except BaseException:
                # Stop the runs in flight too, so nothing keeps computing after Ctrl-C (records are
                # written atomically, so a run stopped mid-write leaves no partial record). Processes are
                # terminated: no public API for this before Python 3.14's terminate_workers().
                STOP.set()
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        STOP.clear()
