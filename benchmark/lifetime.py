"""Runs never outlive their bench: the stop flag of a Ctrl-C, and worker processes that end with their parent.

``STOP`` is set by the runner on Ctrl-C: runs packed as threads stop at their next epoch
(KeyboardInterrupt, so no record is written for them and a rerun does them again), and a run
waiting for another process's claim stops waiting.

A bench killed with SIGKILL runs no cleanup: without this, its worker processes would finish the runs
already queued to them and then wait for work forever, holding memory (and, on a GPU, device memory).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

STOP = threading.Event()


def exit_with_parent() -> None:
    """Linux: SIGKILL this process when the process that started it ends. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent ended before the call above: nobody will collect our results
        os._exit(1)
