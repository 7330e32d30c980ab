"""The published baseline set: every shipped method's grid of a track, committed with the project.

``ehrbench publish-baselines --track T`` (``make publish-baselines TRACK=T``) runs ``ehrbench bench`` for
every method of the registry (``registry.available_methods``) over every task, noise setting and seed of
the track (``grid``: the specs ``runner.plan`` gives by default) into ``leaderboard/published/`` (the
leaderboard's ``sources.PUBLISHED_ROOT``), so the records land in ``leaderboard/published/<T>/<task>/
<method>/<run id>.json`` exactly as ``bench`` writes them into a results folder. Bench skips finished
runs, so a rerun does only what is missing; before it, ``prune`` removes what bench would keep but the
set must not (records of another harness version, compiled or failed ones, invalid files) and, for the
whole grid, every file the grid does not plan (runs of an older method version, a removed method).

Records hold aggregates only: the spec, last-epoch and per-epoch metrics (per-label APs), timings, the
environment, fingerprints and flip rates per label; never a per-stay output. So nothing is stripped: the
set is the harness's records as written, which ``ehrbench results import`` and the leaderboard read as
any others. ``per_stay_lists`` guards that: a list longer than both the task's label count and the
budget's epochs (every list of a record is per label or per epoch) can only be per stay.

``problems`` is the set's check (tests/test_published.py runs it over the committed tree): one line per
run of the grid without a current record, and per file that is not one.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from .records import RecordStore, harness_mismatch


def grid(track: str, methods: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
         noises: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[dict]:
    """The specs of the published set of ``track``: every shipped method (or ``methods``) over the track's
    tasks, the paper's noise settings and the protocol's seeds (or ``tasks``, ``noises``, ``seeds``), each
    at its manifest's hyper-parameters and the reference noise seed, as ``ehrbench bench`` plans them."""
    from .registry import available_methods
    from .runner import plan

    return [spec for method in (methods or available_methods())
            for spec in plan(method, track, tasks, noises, seeds).specs]


def name(spec: dict) -> str:
    """A run of the grid as a reader finds it: method, task, noise setting and seed."""
    return f"{spec['method']['name']} {spec['task']} {spec['noise']['name']} seed {spec['seed']}"


def _lists(value, where: str = "") -> Iterator[tuple[str, int]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _lists(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        yield where, len(value)
        for i, item in enumerate(value):
            yield from _lists(item, f"{where}[{i}]")


def per_stay_lists(record: dict) -> list[str]:
    """The lists of ``record`` too long to be per label or per epoch (``field (N entries)``): per-stay
    output, which a published record must not hold. [] for every record the harness writes."""
    spec = record["spec"]
    bound = max((spec.get("task_spec") or {}).get("num_labels", 0), (spec.get("budget") or {}).get("epochs", 0), 1)
    return [f"{where} ({n} entries)" for where, n in _lists(record) if n > bound]


def stale(record: dict) -> str | None:
    """Why a valid record of a run of the grid is not this checkout's published run, or None."""
    if record["status"] != "done":
        return f"status {record['status']} ({record['failure']})"
    other = harness_mismatch(record)
    if other:
        return other
    if record["environment"].get("compile") == "on":
        return "trained compiled; published runs are eager"
    bulky = per_stay_lists(record)
    if bulky:
        return f"holds per-stay output: {', '.join(bulky)}"
    return None


def _scan(store: RecordStore, track: str) -> dict[Path, tuple[dict | None, str]]:
    return {Path(path).resolve(): (record, error) for path, record, error in store.scan(track)}


def _files(root: Path, track: str) -> list[Path]:
    folder = root / track
    return sorted(p.resolve() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def problems(root: str | Path, track: str, specs: list[dict] | None = None, whole: bool = True) -> list[str]:
    """One line per run of ``specs`` (default: the track's whole ``grid``) whose record under ``root``
    is missing, invalid (``records.validate``, place, run id) or ``stale``, and, when ``whole`` (the
    specs are the whole grid), per file of ``root/<track>`` that is not the record of one of them. []
    when the set is complete and current."""
    root = Path(root)
    specs = grid(track) if specs is None else specs
    store = RecordStore(root)
    found, out = _scan(store, track), []
    planned = set()
    for spec in specs:
        path = store.path(spec).resolve()
        planned.add(path)
        where = os.path.relpath(path, root.resolve())
        if path not in found:
            out.append(f"missing: {name(spec)} ({where})")
            continue
        record, error = found[path]
        why = error.removeprefix(f"{path}: ") if error else stale(record)
        if why:
            out.append(f"{'invalid' if error else 'stale'}: {name(spec)} ({where}): {why}")
    if whole:
        for path in _files(root, track):
            if path in planned:
                continue
            record, error = found.get(path, (None, "not a record file (*.json)"))
            why = error.removeprefix(f"{path}: ") if error else (
                f"run {record['run_id']} ({name(record['spec'])}) is not planned by this checkout: another method "
                f"version, hyper-parameters, task or budget, or a method no longer shipped")
            out.append(f"not in the grid: {os.path.relpath(path, root.resolve())}: {why}")
    return out


def prune(root: str | Path, track: str, specs: list[dict], whole: bool) -> list[str]:
    """Remove what ``bench`` would keep but the published set must not: the record of a run of ``specs``
    that is invalid or ``stale`` (bench redoes a failed run by itself; the others it would skip), and,
    when ``whole``, every file of ``root/<track>`` that is not the record of a run of ``specs``, with the
    folders left empty. The set is under version control: nothing removed is lost. Returns one line per
    file removed, with the reason."""
    root = Path(root)
    store = RecordStore(root)
    found, removed, planned = _scan(store, track), [], set()
    for spec in specs:
        path = store.path(spec).resolve()
        planned.add(path)
        if path not in found:
            continue
        record, error = found[path]
        why = error.removeprefix(f"{path}: ") if error else stale(record)
        if why and (error or record["status"] == "done"):
            path.unlink()
            removed.append(f"{os.path.relpath(path, root.resolve())}: {why}")
    if whole:
        for path in _files(root, track):
            if path not in planned:
                path.unlink()
                removed.append(f"{os.path.relpath(path, root.resolve())}: not a record of this checkout's grid")
        for folder in sorted((p for p in (root / track).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
    return removed
