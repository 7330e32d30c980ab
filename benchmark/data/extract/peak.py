"""Peak resident memory of one build step, so that the summary can say which step needs how much.

A thread reads the process's resident set size (``/proc/self/statm``) every few milliseconds while a
step runs and keeps the largest. The kernel's own high-water mark (``VmHWM``) cannot serve per step
without resetting it (``/proc/self/clear_refs``), which would also reset the peak that ``/usr/bin/time``
and ``getrusage`` report for the whole process; it is read once, for the whole build
(``process_peak_mb``). The pandas parser and numpy's sorts release the interpreter lock, so the thread
keeps sampling through them; a peak shorter than the interval can be missed by what the process
allocates in that time. Without ``/proc`` (macOS), a step's peak is the process's peak so far and
``Sampler.own`` is false.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

INTERVAL_S = 0.005
_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int | None:
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def process_peak_mb() -> float:
    """The whole process's peak resident memory so far, in MB (10^6 bytes)."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        if found:
            return round(int(found.group(1)) * 1024 / 1e6, 1)
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(rss * (1 if sys.platform == "darwin" else 1024) / 1e6, 1)


class Sampler:
    """``with Sampler() as s: ...``; then ``s.peak_mb`` is the largest resident size seen inside."""

    def __init__(self, interval_s: float = INTERVAL_S):
        self.interval_s, self.own, self._peak = interval_s, _rss() is not None, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self._peak = max(self._peak, _rss() or 0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "Sampler":
        if self.own:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.own:
            self._stop.set()
            self._thread.join()
            self._sample()

    @property
    def peak_mb(self) -> float:
        return round(self._peak / 1e6, 1) if self.own else process_peak_mb()
