"""Task data: files on disk -> discretised series + encoded notes -> one fingerprinted tensor cache.

``materialise(task)`` is the only way a run gets data. Synthetic tasks are first written to disk in
their real layout by the generator, then read back through the same loaders as real MIMIC files, so
the real loading code runs in every test. The result is cached once per (data, generator/loader,
encoder) and shared by every method, seed and noise setting. Its splits are ragged (``split.Split``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..cards import label_names
from ..errors import UsageError
from ..protocol import TaskSpec, task_dict
from . import generator, notes, parallel, timeseries, vendored
from .cache import TensorCache, built_folder
from .loaders import RawSplit, read_episodes, read_split
from .split import Split

LOADER_VERSION = "1"
SPLITS = ("train", "test")
_FIELDS = ("ehr", "ehr_offsets", "note", "note_offsets", "patient_id", "labels")


@dataclass
class TaskData:
    spec: TaskSpec
    label_names: list[str]
    train: Split
    test: Split
    fingerprint: str  # content hash of every array, from the cache manifest
    note_dim: int
    # The frozen note encoder's parameter count, counted when the notes were encoded (None: a cache
    # entry built before it was kept; ``notes.parameter_count`` counts it then).
    encoder_parameters: int | None = None

    def mean_cardinality(self) -> float:
        return float(self.train.labels.float().sum(1).mean())


def cache_key(spec: TaskSpec, root: Path | None) -> str:
    inputs = {
        "spec": task_dict(spec),
        "loader": LOADER_VERSION,
        "generator": generator.version(spec) if spec.source == "synthetic" else None,
        "encoder": notes.encoder_id(spec.encoder),
        "source": _source_identity(spec, root),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _source_identity(spec: TaskSpec, root: Path | None) -> str | None:
    if spec.source == "real":
        return _source_fingerprint(spec, root)
    if spec.source == "vendored":  # the tables' checksums and the pipeline's version, not the built files
        return vendored.identity(spec)
    return None


def check_source(spec: TaskSpec, root: str | Path | None = None) -> Path:
    """The folder of a real task's files (a vendored task's raw tables), or an error saying where it was looked for."""
    if spec.source == "vendored":
        return vendored.raw_folder(spec)
    task_dir = data_root(spec, root) / spec.task_dir
    if not task_dir.is_dir():
        raise UsageError(f"{task_dir}: folder not found; point --root (or EHRBENCH_DATA) at the prepared "
                         f"{spec.layout} data (see README, 'Real MIMIC data')")
    return task_dir


def _source_fingerprint(spec: TaskSpec, root: Path) -> str:
    """Real files: listfile contents plus the name, size and mtime of every episode file."""
    h = hashlib.sha256()
    task_dir = check_source(spec, root)
    for path in sorted(task_dir.rglob("*listfile*.csv")):
        h.update(path.name.encode() + path.read_bytes())
    ehr_dir = root / "ehr"
    if ehr_dir.is_dir():
        for entry in sorted(os.scandir(ehr_dir), key=lambda e: e.name):
            st = entry.stat()
            h.update(f"{entry.name}{st.st_size}{st.st_mtime_ns}".encode())
    return h.hexdigest()


def data_root(spec: TaskSpec, override: str | Path | None = None) -> Path:
    if override:
        return Path(override)
    return Path(os.environ.get("EHRBENCH_DATA", "data")) / spec.data_dir


def task_files(spec: TaskSpec, cache: TensorCache, root: str | Path | None = None) -> Path:
    """The folder of a task's files in its layout: generated, built from the vendored tables (whatever
    ``root`` says: they are the task), or the user's (``root``, else under $EHRBENCH_DATA)."""
    if spec.source == "synthetic":
        return synthetic_files(spec, cache)
    if spec.source == "vendored":
        return vendored.built_files(spec, cache)
    return data_root(spec, root)


def synthetic_files(spec: TaskSpec, cache: TensorCache) -> Path:
    """The generator's files for ``spec``, written once (to a temporary folder, then renamed)."""
    # Only what the generator reads: the encoder, normaliser and crops do not change the files.
    fields_used = {k: v for k, v in task_dict(spec).items() if k not in ("encoder", "normaliser", "max_hours", "note_tokens", "uncertain")}
    key = hashlib.sha256(json.dumps([fields_used, generator.version(spec)], sort_keys=True).encode()).hexdigest()[:16]
    folder = cache.root / "files" / f"{spec.name}-{key}"
    return built_folder(cache.root, folder, lambda tmp: generator.write(generator.generate(spec), spec, tmp))


# Splits with at least this many series are discretised in worker processes (``parallel``): a sample's bins
# depend on its own rows alone.
PARALLEL_SERIES = 8192
_CHUNK_SERIES = 2048  # no worker gets fewer samples: below that a worker's start costs more than it saves


def series_arrays(raw: RawSplit, spec: TaskSpec, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Discretised (not yet normalised) rows and offsets of every sample; length 0 = no series.
    ``workers`` processes share a large split (default: the cores this process may use, up to 16)."""
    n = len(raw.keys)
    with_series = np.array([i for i, s in enumerate(raw.series) if s], dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    if not len(with_series):
        return np.zeros((0, timeseries.WIDTH), np.float32), np.zeros(n + 1, np.int64)
    paths = [raw.series[i] for i in with_series]
    ends = np.asarray(raw.ends)[with_series]
    workers = parallel.workers_for(len(with_series), _CHUNK_SERIES, workers)
    if len(with_series) < PARALLEL_SERIES or workers < 2:
        flat, counts = discretised(paths, ends, spec.layout, spec.max_hours)
    else:
        flat, counts = _discretised_in_workers(paths, ends, spec.layout, spec.max_hours, workers)
    lengths[with_series] = counts
    return flat, np.concatenate([[0], np.cumsum(lengths)])


def discretised(paths: list[str], ends: np.ndarray, layout: str, max_hours: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat rows, rows per sample) of the samples whose episode files are ``paths`` (one per sample; a
    file shared by several samples, as on diagnosis, is read once and used once per sample)."""
    files, which = np.unique(np.array(paths), return_inverse=True)
    table, origin = read_episodes(list(files), layout)
    per_file = np.bincount(table["file"].to_numpy(), minlength=len(files))
    file_start = np.concatenate([[0], np.cumsum(per_file)[:-1]])
    counts = per_file[which]
    sample_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.repeat(file_start[which] - sample_start, counts) + np.arange(counts.sum())
    stay = np.repeat(np.arange(len(paths)), counts)
    values = {ch: table[ch].to_numpy(object)[rows] for ch in timeseries.CHANNELS}
    sub_origin = timeseries.Origin(origin.files, origin.file_index[rows], origin.line[rows])
    flat, offsets = timeseries.discretise(stay, table["Hours"].to_numpy()[rows], values, ends, max_hours, sub_origin)
    return flat, np.diff(offsets)


def _discretised_in_workers(paths, ends, layout, max_hours, workers):
    """``discretised`` over ``workers`` contiguous chunks of the samples, in worker processes."""
    done = parallel.map_chunks(discretised, [(paths[a:b], ends[a:b], layout, max_hours)
                                             for a, b in parallel.bounds(len(paths), workers)])
    return np.concatenate([f for f, _ in done]), np.concatenate([c for _, c in done])


def _normaliser(spec: TaskSpec, train_flat: np.ndarray) -> timeseries.Normaliser:
    if spec.normaliser == "train":
        return timeseries.Normaliser.fit(train_flat)
    if spec.normaliser == "reference":
        return timeseries.Normaliser.reference()
    return timeseries.Normaliser.from_file(spec.normaliser)


def build_arrays(spec: TaskSpec, root: Path, device: torch.device | None = None) -> tuple[dict, list[str], dict]:
    names = label_names(spec.kind)
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return round(clock[-1] - clock[-2], 3)

    seconds = {}
    raw = {s: read_split(root, spec.layout, spec.task_dir, s, names, spec.uncertain) for s in SPLITS}
    seconds["listfiles"] = lap()
    series = {s: series_arrays(raw[s], spec) for s in SPLITS}
    norm = _normaliser(spec, series["train"][0])
    seconds["series"] = lap()
    tokenizer_model = notes.load(spec.encoder, device or _encoder_device())
    seconds["encoder_load"] = lap()
    arrays, note_parts = {}, {}
    for s in SPLITS:
        note_parts[s] = notes.encode(raw[s].notes, spec.encoder, spec.note_tokens, _encoder_device(), model=tokenizer_model)
    if _encoder_device().type == "cuda":
        torch.cuda.synchronize()
    seconds["notes"] = lap()
    for s in SPLITS:
        flat, offsets = series[s]
        note_flat, note_offsets = note_parts[s]
        arrays.update({
            f"{s}_ehr": np.concatenate([norm.transform(flat), np.zeros((1, timeseries.WIDTH), np.float32)]),
            f"{s}_ehr_offsets": offsets,
            f"{s}_note": np.concatenate([note_flat, np.zeros((1, note_flat.shape[1]), np.float16)]),
            f"{s}_note_offsets": note_offsets,
            f"{s}_patient_id": raw[s].patient_id,
            f"{s}_labels": raw[s].labels,
        })
    meta = {"label_names": names, "normaliser": norm.source, "task": asdict(spec), "root": str(root),
            "keys": {s: len(raw[s].keys) for s in SPLITS}, "build_seconds": seconds,
            "encoder_parameters": sum(p.numel() for p in tokenizer_model[1].parameters())}
    return arrays, names, meta


def _encoder_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def materialise(spec: TaskSpec, cache: TensorCache | None = None, root: str | Path | None = None,
                rebuild: bool = False) -> TaskData:
    cache = cache or TensorCache()
    real_root = data_root(spec, root) if spec.source == "real" else None
    key = cache_key(spec, real_root)
    hit = None if rebuild else cache.load(spec.name, key)
    if hit is None:
        with cache.lock(spec.name, key):  # concurrent runs build a task once; the others wait for it
            hit = None if rebuild else cache.load(spec.name, key)
            if hit is None:
                files = task_files(spec, cache, real_root)
                arrays, _, meta = build_arrays(spec, files)
                cache.save(spec.name, key, arrays, meta)
                hit = cache.load(spec.name, key, verify=False)
    arrays, manifest = hit
    splits = {s: Split(**{f: torch.from_numpy(np.asarray(arrays[f"{s}_{f}"])) for f in _FIELDS}) for s in SPLITS}
    return TaskData(spec=spec, label_names=manifest["label_names"], train=splits["train"], test=splits["test"],
                    fingerprint=manifest["fingerprint"], note_dim=int(arrays["train_note"].shape[1]),
                    encoder_parameters=manifest.get("encoder_parameters"))


def prepare(spec: TaskSpec, cache: TensorCache | None = None, root: str | Path | None = None,
            announce: Callable[[str], None] | None = None) -> None:
    """Build ``spec``'s cache entry unless one is there (``materialise``; its new arrays are mapped, not read): a
    grid's parent does this with every core before its single-threaded workers start. ``announce(what)``
    is called before a build."""
    cache = cache or TensorCache()
    real_root = data_root(spec, root) if spec.source == "real" else None
    if cache.entry(spec.name, cache_key(spec, real_root)).exists():
        return
    if announce is not None:
        announce(f"task '{spec.name}': building its tensor cache (notes through '{spec.encoder}'), once for every run")
    materialise(spec, cache, root)
