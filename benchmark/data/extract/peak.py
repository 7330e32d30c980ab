"""Peak resident memory of one build step, so that the summary can say which step needs how much.

On Linux the kernel keeps the process's high-water mark of resident memory (``VmHWM`` in
``/proc/self/status``) and resets it when ``5`` is written to ``/proc/self/clear_refs``: resetting it
when a step starts makes the mark read when it ends that step's own peak (the memory the process
already held included), not the peak of the process so far. Where that is not possible, the peak so
far (``getrusage``) is what is left, and ``own`` says so.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset() -> bool:
    """Start a new high-water mark; whether the next ``peak_mb`` is this stretch's own peak."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """The high-water mark of resident memory in MB (10^6 bytes)."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.M)
        if found:
            return round(int(found.group(1)) * 1024 / 1e6, 1)
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(rss * (1 if sys.platform == "darwin" else 1024) / 1e6, 1)
