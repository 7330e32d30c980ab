"""Data preparation's one kind of parallelism: a pure function of contiguous chunks of samples, each in a
worker process, the results in chunk order. Used only where a chunk's output depends on its own samples
alone (a stay's bins), so the joined results are those of a single pass. (Writing the generator's episode
files this way was slower on 2 cores, 44.5 s against 36.9 s for full `mimic4-phe`: pickling the event
table to the workers cost more than the formatting they shared.)

Workers are spawned, not forked: the parent may hold CUDA and thread pools that a fork would copy. As for
every spawned process, a script that prepares data must guard its top level (``if __name__ == "__main__"``);
``ehrbench`` and ``python -m benchmark`` do.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

MAX_WORKERS = 16


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers_for(items: int, per_worker: int, workers: int | None = None) -> int:
    """How many workers share ``items``: ``workers`` (default: the usable cores, at most 16), fewer
    where a worker would get under ``per_worker`` items; below 2, do it in this process."""
    return min(workers or usable_cores(), MAX_WORKERS, items // per_worker)


def bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering 0..n, as equal as integers allow."""
    edges = np.linspace(0, n, parts + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def map_chunks(fn: Callable, chunks: Sequence[tuple]) -> list:
    """``[fn(*chunk) for chunk in chunks]``, one worker process per chunk. An exception of a chunk (an
    input error naming its file and line) is raised here, the first chunk's first."""
    with ProcessPoolExecutor(len(chunks), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, *chunk) for chunk in chunks]
        return [f.result() for f in futures]
