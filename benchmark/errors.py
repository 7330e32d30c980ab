"""Errors a user can act on. The CLI prints them as one line, without a traceback."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Base class of every error the CLI reports as a single line."""


class UsageError(BenchError):
    """Bad input from the user: an unknown name, a malformed value, a missing file."""


class RecordError(BenchError):
    """A run record that cannot be read or does not match the schema."""


class RunFailed(BenchError):
    """A run that cannot produce a trustworthy number (NaN loss, ...). Recorded as failed."""


def choices_hint(name: str, valid: Iterable[str]) -> str:
    """'; did you mean 'x'? valid choices: a, b, c' for an unknown ``name``."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint}; valid choices: {', '.join(valid) if valid else '(none)'}"


def out_of_memory(spec: dict, run: str, device: object) -> str:
    """The failure of a run that ran out of device memory: which run, at which batch size, what to do."""
    return (f"out of memory on {device} in run {run} ({spec['method']['name']} {spec['task']} {spec['noise']['name']} "
            f"seed {spec['seed']}) at batch size {spec['budget']['batch_size']} (the protocol's, fixed): run fewer "
            f"runs at once (--runs-per-gpu 1, --jobs 1), cut batches by length (--length-chunks 4), or use a larger GPU")


def worker_lost(pid: int, exitcode: int | None) -> str:
    """The failure of a run whose worker process died under it (no record of its own)."""
    import signal

    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else "unknown"
        how = f"was killed by signal {-exitcode} ({name})"
        hint = ("; the kernel's out-of-memory killer sends it when memory runs out: rerun with fewer runs at once "
                "(--jobs 1) or with more memory" if -exitcode == signal.SIGKILL else "; rerun the same command to redo it")
    else:
        how, hint = f"exited with status {exitcode} without a record", "; rerun the same command to redo it"
    return f"the worker process running this run (pid {pid}) {how}{hint}"
