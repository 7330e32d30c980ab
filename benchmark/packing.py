"""Several runs sharing one GPU in one process, taking turns on the host and overlapping on the device.

A FlexCare step replayed from a CUDA graph costs the host tens of microseconds and the GPU a few
milliseconds of small kernels that leave most of its multiprocessors idle. K runs in K threads, each
on its own CUDA stream, fill those gaps: their kernels overlap on the device.

Why turns (a baton) rather than free-running threads: PyTorch's CUDA RNG is one generator per device.
A capture puts its state in capturing mode, so an eager dropout in another thread during a capture
fails ("Offset increment outside graph capture"), and graphs replayed concurrently from several
threads would race on the generator's shared offset tensor. So a run holds the baton while it issues
work and hands it over after each step (``pause``) and while it waits for its stream (``released``);
each run has its own generator state, swapped in with the baton (``graphsafe_set_state``), so its
random stream is its own and its graphs replay their own offsets. Only one thread issues CUDA calls
at a time; the device still runs all streams at once.
"""
from __future__ import annotations

import collections
import contextlib
import threading

import torch

_local = threading.local()


class Baton:
    """A first-come, first-served lock: a run handing over after its step queues behind the others."""

    def __init__(self):
        self._cv = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._held = False

    def acquire(self) -> None:
        me = object()
        with self._cv:
            self._queue.append(me)
            self._cv.wait_for(lambda: not self._held and self._queue[0] is me)
            self._queue.popleft()
            self._held = True

    def release(self) -> None:
        with self._cv:
            self._held = False
            self._cv.notify_all()


@contextlib.contextmanager
def turn_taking(baton: Baton, device: torch.device):
    """Run the body as one of the packed runs: on its own stream, with its own RNG state, holding
    ``baton`` except at ``pause``/``released`` points."""
    baton.acquire()
    # Everything after the acquire is inside the try: a run that fails while setting up must still
    # hand the baton on (once it did not, and the other packed runs waited for ever).
    try:
        _local.baton, _local.device, _local.state = baton, device, None
        if device.type == "cuda":
            torch.cuda.init()  # the per-device generators exist only once CUDA is initialised
            generator = torch.cuda.default_generators[device.index or 0]
            _local.state = generator.clone_state()
            generator.graphsafe_set_state(_local.state)
            with torch.cuda.device(device), torch.cuda.stream(torch.cuda.Stream(device)):
                yield
        else:
            yield
    finally:
        _local.baton = None
        baton.release()


def _reacquire() -> None:
    _local.baton.acquire()
    if _local.state is not None:  # another run's state was swapped in meanwhile
        torch.cuda.default_generators[_local.device.index or 0].graphsafe_set_state(_local.state)


def pause() -> None:
    """Let the other packed runs issue their work (no-op for a run that is not packed)."""
    if getattr(_local, "baton", None) is not None:
        _local.baton.release()
        _reacquire()


@contextlib.contextmanager
def released():
    """Wait (for this run's stream, or on host-side work) without holding the baton. The body may
    copy to the host but must not launch kernels or draw random numbers."""
    if getattr(_local, "baton", None) is None:
        yield
        return
    _local.baton.release()
    try:
        yield
    finally:
        _reacquire()
