"""Run records: one JSON file per run under ``results/``, the leaderboard's only input.

The run id is a hash of the full run spec (method, its version and hyper-parameters, track, task,
noise, seed, noise-seed policy, the noise draw when it is not the protocol's, budget, backbone size,
data generator), so a finished record *is*
the marker that a run is done: a rerun skips it, and an interrupted grid resumes losing nothing.
Records are written atomically (temporary file, fsync, rename) and validated on write and on read.

Two benches on one results folder never do a run twice: the process running a run holds an exclusive
``flock`` on ``.<run_id>.lock`` beside its record (``RecordStore.claim``). The kernel drops the lock
when the process ends, SIGKILL included, so a lock is never stale; a bench that finds a run claimed
waits for it and takes the other's record (or runs it, if the other died without one).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import __version__
from .errors import RecordError, UsageError
from .marks import COLLAPSE_FIELDS
from .protocol import parse_noise

SCHEMA_VERSION = 1
STATUSES = ("done", "failed")

# Every top-level key of a record, with its type and meaning.
SCHEMA: dict[str, tuple[type | tuple[type, ...], str]] = {
    "schema_version": (int, "version of this schema; other versions are refused"),
    "run_id": (str, "hash of `spec`; also the file name"),
    "spec": (dict, "everything that defines the run; hashed into run_id"),
    "status": (str, "'done' or 'failed'"),
    "failure": ((str, type(None)), "why a failed run failed (null when done)"),
    "metrics": (dict, "'final': last-epoch test metrics (headline 'map'); 'curve': one entry per epoch; "
                "'collapsed': null, or when and from where a run's last-epoch macro AUC fell below "
                "marks.COLLAPSE_AUC (marks.COLLAPSE_FIELDS; absent in records before it was written); "
                "'bootstrap': the patient-clustered test-set interval of the last epoch's mAP "
                "(benchmark/bootstrap.py, BOOTSTRAP_FIELDS); 'secondary': calibration, AP by prevalence band "
                "and mAP by modality at the last epoch (benchmark/secondary.py, SECONDARY_FIELDS); both "
                "absent in records written before them. A curve row may hold 'detection': the harness's "
                "scores of the method's suspicion of each training label for that epoch "
                "(benchmark/detection.py, DETECTION_FIELDS), absent where the method gave none"),
    "timings": (dict, "wall seconds per phase: data, noise, train, method_hooks, eval, total"),
    "peak_memory_bytes": (int, "peak device memory (CUDA) or peak resident set (CPU)"),
    "fingerprints": (dict, "'data': task tensors sha256; 'noisy_labels': the noisy matrix sha256"),
    "noise": (dict, "rates used and realised flip rates of the training labels, overall and per label "
                    "(realised_rho_plus_per_label, realised_rho_minus_per_label: null for a label without "
                    "entries of that direction); under-coding adds under_coding: the law's strength, the twin and the evidence (source, checksum)"),
    "method": (dict, "method metadata: display name, code hash, trainable parameters ('parameters') and the "
               "model's frozen ones ('parameters_frozen', absent before it was written)"),
    "environment": (dict, "harness version, git sha + dirty flag, hardware and software versions, run "
                    "conditions (precision, graphs, packing), on CUDA the peak reserved device memory, and the frozen note "
                    "encoder's parameter count ('encoder_parameters', null where its configuration was not readable)"),
    "created_utc": (str, "when the record was written (ISO 8601)"),
}
# The environment fields that make two records of one run id two executions, not a copy.
EXECUTION_KEYS = ("compile", "token_layout", "packed_runs", "length_chunks", "cuda_graphs", "precision", "gpu", "cpu")
FINAL_METRICS = ("map", "micro_f1", "macro_f1", "macro_auc", "micro_auc", "per_label_ap")


def run_id(spec: dict) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# What every reader of a record (tables, leaderboard) takes from its spec: key -> type.
SPEC_FIELDS: dict[str, type | tuple[type, ...]] = {"track": str, "task": str, "seed": int, "method": dict, "noise": dict}


# Fields within sections that the tables and the leaderboard read: (section, key) -> allowed types.
# Only display_name must be there; the others may be absent, but not of another type.
READ_FIELDS: dict[tuple[str, str], tuple[type, ...]] = {
    ("method", "display_name"): (str,),
    ("method", "code_hash"): (str, type(None)),
    ("method", "parameters"): (int, type(None)),  # trainable
    ("method", "parameters_frozen"): (int, type(None)),  # the model's parameters that do not train
    ("metrics", "curve"): (list,),
    ("metrics", "collapsed"): (dict, type(None)),
    ("metrics", "bootstrap"): (dict, type(None)),
    ("metrics", "secondary"): (dict, type(None)),
    ("fingerprints", "data"): (str, type(None)),
    ("environment", "harness_version"): (str, type(None)),
    ("environment", "git"): (dict, type(None)),
    ("environment", "gpu"): (str, type(None)),
    ("environment", "encoder_parameters"): (int, type(None)),  # the frozen note encoder's
    ("environment", "precision"): (str, type(None)),
    ("environment", "packed_runs"): (int,),
    ("environment", "token_layout"): (str,),
    ("environment", "compile"): (str,),
}


_NUMBER = (int, float)
# The fields of the optional metrics sections that the leaderboard reads (older records lack the sections).
BOOTSTRAP_FIELDS = {"b": (int,), "seed": (int,), "level": _NUMBER, "low": _NUMBER, "high": _NUMBER, "std": _NUMBER}
SECONDARY_FIELDS = {"ece": _NUMBER, "ece_bins": (int,), "brier": _NUMBER, "prevalence_bands": (dict,),
                    "modality": (dict,)}
# Each entry of secondary.prevalence_bands and secondary.modality: its mAP (null where no label or stay).
GROUP_FIELDS = {"map": (*_NUMBER, type(None))}


def _check_type(value: object, types: tuple[type, ...], field: str, source: str) -> None:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise RecordError(f"{source}: field '{field}' is {value!r}, expected "
                          f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")


def _check_read_fields(record: dict, source: str) -> None:
    for (section, key), types in READ_FIELDS.items():
        if key not in record[section] and key != "display_name":
            continue
        _check_type(record[section].get(key), types, f"{section}.{key}", source)
    collapsed = record["metrics"].get("collapsed")
    if collapsed is not None:
        for key, types in COLLAPSE_FIELDS.items():
            _check_type(collapsed.get(key), types, f"metrics.collapsed.{key}", source)
    _check_sections(record["metrics"], source)
    if isinstance(record["metrics"].get("curve"), list):
        _check_detection(record["metrics"]["curve"], source)
    bad = [k for k, v in record["timings"].items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if bad:
        raise RecordError(f"{source}: field 'timings.{bad[0]}' must be a number of seconds")


# A curve row's optional "detection" (benchmark/detection.py): the threshold, and per direction its counts
# and rates (rates null where the direction has no flipped entry).
DETECTION_DIRECTIONS = ("missed_positive", "spurious_positive")
DETECTION_FIELDS = {**{k: (int,) for k in ("candidates", "noisy", "flagged", "true_positives")},
                    **{k: (*_NUMBER, type(None)) for k in ("precision", "recall", "f1", "auprc")},
                    "base_rate": _NUMBER}
DETECTION_RATES = ("precision", "recall", "f1", "auprc", "base_rate")


def _check_detection(curve: list, source: str) -> None:
    """Each curve row's ``detection``, when there: the fields the leaderboard reads, rates in [0, 1]."""
    for i, row in enumerate(curve):
        if not isinstance(row, dict) or row.get("detection") is None:
            continue
        where = f"metrics.curve[{i}].detection"
        det = row["detection"]
        _check_type(det, (dict,), where, source)
        _check_type(det.get("threshold"), _NUMBER, f"{where}.threshold", source)
        for direction in DETECTION_DIRECTIONS:
            entry = det.get(direction)
            _check_type(entry, (dict,), f"{where}.{direction}", source)
            for key, types in DETECTION_FIELDS.items():
                value = entry.get(key)
                _check_type(value, types, f"{where}.{direction}.{key}", source)
                if key in DETECTION_RATES and value is not None and not _unit(value):
                    raise RecordError(f"{source}: field '{where}.{direction}.{key}' is {value!r}, expected a "
                                      f"number in [0, 1]")


def _check_sections(metrics: dict, source: str) -> None:
    """The optional sections ``bootstrap`` and ``secondary``, when there, have the fields readers take."""
    for section, fields in (("bootstrap", BOOTSTRAP_FIELDS), ("secondary", SECONDARY_FIELDS)):
        if metrics.get(section) is None:
            continue
        for key, types in fields.items():
            _check_type(metrics[section].get(key), types, f"metrics.{section}.{key}", source)
    for group in ("prevalence_bands", "modality"):
        for name, entry in ((metrics.get("secondary") or {}).get(group) or {}).items():
            _check_type(entry, (dict,), f"metrics.secondary.{group}.{name}", source)
            for key, types in GROUP_FIELDS.items():
                _check_type(entry.get(key), types, f"metrics.secondary.{group}.{name}.{key}", source)


def _check_spec(spec: dict, source: str) -> None:
    for key, typ in SPEC_FIELDS.items():
        if not isinstance(spec.get(key), typ) or isinstance(spec.get(key), bool):
            raise RecordError(f"{source}: field 'spec.{key}' is missing or not a {typ.__name__}")
    for key in ("method", "noise"):
        if not isinstance(spec[key].get("name"), str):
            raise RecordError(f"{source}: field 'spec.{key}.name' is missing or not a str")
    hparams = spec["method"].get("hparams", {})
    if not isinstance(hparams, dict):
        raise RecordError(f"{source}: field 'spec.method.hparams' is not a dict")
    if "noise_seed_policy" in spec:  # the tables label a row by it and the page's command passes it on
        _check_type(spec["noise_seed_policy"], (str,), "spec.noise_seed_policy", source)
    if "noise_draw" in spec:  # --noise-draws: absent for draw 0, the protocol's draw
        draw = spec["noise_draw"]
        _check_type(draw, (dict,), "spec.noise_draw", source)
        _check_type(draw.get("index"), (int,), "spec.noise_draw.index", source)
        _check_type(draw.get("policy"), (str,), "spec.noise_draw.policy", source)
        if draw["index"] < 1:
            raise RecordError(f"{source}: field 'spec.noise_draw.index' is {draw['index']}, expected a draw >= 1 "
                              f"(draw 0 has no noise_draw)")
    if "fusion_layout" in hparams:  # the tables split FlexCare's rows by it
        _check_type(hparams["fusion_layout"], (str,), "spec.method.hparams.fusion_layout", source)
    try:  # the tables label each column by its noise setting
        parse_noise(spec["noise"]["name"])
    except UsageError as e:
        raise RecordError(f"{source}: field 'spec.noise.name': {e}") from None


def harness_mismatch(record: dict) -> str | None:
    """Why a valid record is not of this harness version (records of another one are not comparable), or None."""
    version = record["environment"].get("harness_version")
    return None if version == __version__ else f"harness version {version!r}, this harness is {__version__}"


def validate(record: object, source: str = "record") -> dict:
    """Raise ``RecordError`` naming ``source`` and the field if ``record`` breaks the schema."""
    if not isinstance(record, dict):
        raise RecordError(f"{source}: expected a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    for key, (typ, _) in SCHEMA.items():
        if key not in record:
            raise RecordError(f"{source}: missing field '{key}'")
        if not isinstance(record[key], typ):
            raise RecordError(f"{source}: field '{key}' has type {type(record[key]).__name__}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{source}: field 'status' is {record['status']!r}, expected one of {STATUSES}")
    _check_spec(record["spec"], source)
    _check_read_fields(record, source)
    if record["run_id"] != run_id(record["spec"]):
        raise RecordError(f"{source}: run_id {record['run_id']} does not match the hash of its spec")
    if record["status"] == "done":
        problem = metrics_problem(record["metrics"])
        if problem:
            raise RecordError(f"{source}: {problem}")
    elif not record["failure"]:
        raise RecordError(f"{source}: a failed record needs a 'failure' reason")
    return record


def _unit(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def metrics_problem(metrics: dict) -> str | None:
    """Why a done record's metrics cannot be what training gave, or None. Every headline metric and
    per-label AP is a number in [0, 1], and ``final`` is the curve's last epoch (the trainer copies
    it), so an edited mAP shows. Checks that need the task (label count, mAP as the mean of the APs
    under the task's empty-label policy, one row per epoch) are ``results_import``'s."""
    final, curve = metrics.get("final"), metrics.get("curve")
    if not isinstance(final, dict) or any(k not in final for k in FINAL_METRICS):
        return f"a done record needs metrics.final with {', '.join(FINAL_METRICS)}"
    for key in FINAL_METRICS[:-1]:
        if not _unit(final[key]):
            return f"metrics.final.{key} is {final[key]!r}, expected a number in [0, 1]"
    aps = final["per_label_ap"]
    if not (isinstance(aps, list) and aps and all(map(_unit, aps))):
        return "metrics.final.per_label_ap must be a list of numbers in [0, 1]"
    if not curve or not isinstance(curve[-1], dict):
        return "a done record needs metrics.curve, one row per epoch"
    for key in FINAL_METRICS:
        if final[key] != curve[-1].get(key):
            return f"metrics.final.{key} differs from the last epoch of the curve"
    return None


def _cannot_write(path: Path, e: OSError) -> RecordError:
    blocker = _file_in_the_way(path)
    if blocker is not None:  # the OS says only 'Not a directory' or 'File exists'
        within = f" (records go to {path.parent})" if blocker != path.parent else ""
        return RecordError(f"{blocker}: is a file, expected a folder of run records{within}; move it aside and "
                           f"rerun the same command (finished runs are kept)")
    return RecordError(f"{path}: cannot write the record ({e.strerror or e}); finished runs are kept, rerun the "
                       f"same command once the problem is fixed")


def _file_in_the_way(path: Path) -> Path | None:
    """The file standing where a folder above ``path`` must be, if any."""
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


def claimed(run: Callable[..., dict]) -> Callable[..., dict]:
    """``run(spec, results, ...)`` under ``RecordStore(results).claim(spec)``: a run finished by
    another process meanwhile is not run again; its record is returned instead."""
    @functools.wraps(run)
    def wrapper(spec: dict, results: str, *args, **kwargs) -> dict:
        from .lifetime import STOP  # Ctrl-C also ends a wait for another process's run
        from .packing import released

        def sleep(seconds: float) -> None:
            with released():  # runs packed as threads go on while this one waits
                time.sleep(seconds)

        with RecordStore(results).claim(spec, STOP.is_set, sleep=sleep) as finished:
            return finished if finished is not None else run(spec, results, *args, **kwargs)
    return wrapper


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RecordStore:
    """``results/<track>/<task>/<method>/<run_id>.json``."""

    def __init__(self, root: str | Path = "results"):
        self.root = Path(root)

    def path(self, spec: dict) -> Path:
        return self.root / spec["track"] / spec["task"] / spec["method"]["name"] / f"{run_id(spec)}.json"

    def read(self, path: Path) -> dict:
        try:
            record = json.loads(path.read_text())
        except OSError as e:
            raise RecordError(f"{path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecordError(f"{path}: not valid JSON ({e})") from None
        return validate(record, str(path))

    def status(self, spec: dict) -> tuple[str, str]:
        """('done' | 'failed' | 'missing' | 'corrupt', detail) for the run of ``spec``."""
        path = self.path(spec)
        if not path.exists():
            return "missing", ""
        try:
            record = self.read(path)
        except RecordError as e:
            return "corrupt", str(e)
        return record["status"], record.get("failure") or ""

    def write(self, record: dict) -> Path:
        validate(record, f"record {record.get('run_id')}")
        path = self.path(record["spec"])
        data = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        except OSError as e:
            raise _cannot_write(path, e) from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):  # a full disk, a read-only folder: the grid stops, nothing half-written
                raise _cannot_write(path, e) from None
            raise
        return path

    def quarantine(self, spec: dict) -> Path:
        """Move a corrupt record aside (kept for inspection) so the run can be redone."""
        path = self.path(spec)
        target = path.with_suffix(f".corrupt-{int(time.time())}")
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another bench on this folder moved (or redid) it first
            pass
        return target

    @contextlib.contextmanager
    def claim(self, spec: dict, should_stop: Callable[[], bool] = lambda: False, poll: float = 0.2,
              sleep: Callable[[float], None] = time.sleep):
        """Hold the run of ``spec`` for this process; yields None (run it) or the finished record
        another process wrote meanwhile (use it). Waits (``sleep(poll)`` at a time) while another
        live process holds the run."""
        path = self.path(spec)
        lock = path.parent / f".{path.stem}.lock"
        while True:
            fd = self._open_lock(path, lock)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if should_stop():
                    raise KeyboardInterrupt from None
                sleep(poll)
                continue
            # The holder before us may have removed the file: then our lock is on a dead inode.
            if os.path.exists(lock) and os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
            os.close(fd)
        try:
            for stale in path.parent.glob(f".{path.stem}.*.tmp"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
            status, _ = self.status(spec)
            yield self.read(path) if status == "done" else None
        finally:
            Path(lock).unlink(missing_ok=True)
            os.close(fd)

    @staticmethod
    def _open_lock(path: Path, lock: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # no record could be written there either
            raise _cannot_write(path, e) from None

    def prepare(self, specs: list[dict]) -> None:
        """Make the folders the records of ``specs`` go to, and check they take files: a file in the
        way or a read-only folder fails before the first run, not when the first record is written."""
        for folder in sorted({self.path(spec).parent for spec in specs}):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _cannot_write(folder / "record.json", e) from None
            if not os.access(folder, os.W_OK):
                raise RecordError(f"{folder}: the folder of run records is not writable; make it writable or "
                                  f"choose another --results")

    def scan(self, track: str | None = None) -> Iterator[tuple[Path, dict | None, str]]:
        """Every record file: (path, record or None, error message or ''). A record proves who it is:
        valid, its id the hash of its spec (``validate``), at the place its spec implies
        (``_check_place``), and the only file of its run; each other file is an error, never a seed."""
        base = self.root / track if track else self.root
        seen: dict[tuple, Path] = {}
        for path in sorted(base.rglob("*.json")):
            try:
                record = self.read(path)
                self._check_place(path, record)
                # Execution switches (compile, token layout, packing, the device) are not in the spec: one
                # spec run eagerly and compiled, or in two token layouts, or on two GPUs, is two records
                # with one id, and both stand (the leaderboard keeps them apart). The same run twice is a copy.
                key = (record["run_id"], *(str(record["environment"].get(k)) for k in EXECUTION_KEYS))
                if key in seen:
                    raise RecordError(f"{path}: a second record of run {record['run_id']}; only the first, "
                                      f"{seen[key]}, counts")
                seen[key] = path
                yield path, record, ""
            except RecordError as e:
                yield path, None, str(e)

    def _check_place(self, path: Path, record: dict) -> None:
        """A record counts only at the place its spec implies, ``<track>/<task>/<method>/<run id>.json``
        (under the results folder, or under a folder of record sets in it): a copy under another name,
        or in another method's, task's or track's folder, would add a seed to a cell or the run to
        another method."""
        spec = record["spec"]
        expected = (spec["track"], spec["task"], spec["method"]["name"], f"{record['run_id']}.json")
        got = path.parts[-4:]
        if got[-1] != expected[-1]:
            raise RecordError(f"{path}: the file name is not the record's run id {record['run_id']} "
                              f"(a copy or a renamed file)")
        if tuple(got) != expected:
            raise RecordError(f"{path}: a record of {'/'.join(expected[:3])} (its spec's track, task and "
                              f"method) filed under {'/'.join(got[:3])}")
