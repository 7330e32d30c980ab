"""What this checkout plans by default: a method's manifest (version, hyper-parameters) and a track's
spec sections (task, budget, backbone). Read without training code; the tables name what of a
record's spec differs from them (``report.spec_differences``), and the command behind a run is
measured against them (``reproduce``)."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def method_defaults(method: str) -> tuple[str, dict] | None:
    """(version, hyper-parameters) of ``methods/<method>``'s manifest in this checkout, or None when
    the method is not here (a record of a submission that is not checked in)."""
    from benchmark.errors import BenchError
    from benchmark.registry import get_method

    try:
        entry = get_method(method)
    except (BenchError, OSError, ValueError):
        return None
    return entry.version, dict(entry.hparams)


@functools.lru_cache(maxsize=None)
def track_defaults(track: str, task: str) -> dict | None:
    """The default spec sections of (track, task) in today's protocol: task_spec, budget, backbone."""
    from benchmark.errors import BenchError
    from benchmark.protocol import TRACKS, to_dict

    trk = TRACKS.get(track)
    if trk is None:
        return None
    try:
        task_spec = trk.task(task)
    except BenchError:
        return None
    return {"task_spec": to_dict(task_spec), "budget": to_dict(trk.budget), "backbone": to_dict(trk.backbone)}
