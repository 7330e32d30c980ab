"""Runs packed as threads take turns: one issues work at a time, and each hands over after a step."""
import threading

import pytest
import torch

import benchmark.runner
from benchmark.packing import Baton, pause, released, turn_taking
from benchmark.protocol import SMOKE
from benchmark.runner import resident


def _packed(baton, name, log, steps=3):
    with turn_taking(baton, torch.device("cpu")):
        for k in range(steps):
            log.append((name, k))
            pause()


def test_packed_runs_alternate_step_by_step_and_never_overlap():
    baton, log = Baton(), []
    baton.acquire()  # hold the start line until both runs queue up
    threads = [threading.Thread(target=_packed, args=(baton, name, log)) for name in "ab"]
    for t in threads:
        t.start()
    while len(baton._queue) < 2:
        pass
    baton.release()
    for t in threads:
        t.join(timeout=10)
    assert [name for name, _ in log] == ["a", "b", "a", "b", "a", "b"]


def test_waiting_without_the_baton_lets_the_other_run_go_on():
    baton, log, waiting = Baton(), [], threading.Event()

    def slow():
        with turn_taking(baton, torch.device("cpu")):
            with released():
                waiting.set()
                assert go.wait(10)
            log.append("slow done")

    go = threading.Event()
    first = threading.Thread(target=slow)
    first.start()
    assert waiting.wait(10)
    with turn_taking(baton, torch.device("cpu")):  # would block forever if ``released`` kept the baton
        log.append("other ran")
    go.set()
    first.join(timeout=10)
    assert log == ["other ran", "slow done"]


def test_pause_outside_a_packed_run_does_nothing():
    pause()
    with released():
        pass


def test_packed_runs_share_one_device_copy_of_the_task():
    """K runs of a grid in one process hold the task's tensors once, not K times (at full scale a
    copy per run is gigabytes of device memory each)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    got = []
    threads = [threading.Thread(target=lambda: got.append(resident(SMOKE.task("syn-phe"), device))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    train, test = got[0]
    assert all(a is train and b is test for a, b in got)
    assert train.ehr.device.type == device.type and len(test) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA set-up fails")
def test_a_run_failing_in_its_set_up_hands_the_baton_on():
    """One packed run that cannot start (here: CUDA asked for, none present) must not leave the
    others waiting for ever."""
    baton = Baton()
    with pytest.raises((RuntimeError, AssertionError)):
        with turn_taking(baton, torch.device("cuda")):
            pass
    done = threading.Event()
    other = threading.Thread(target=lambda: (baton.acquire(), baton.release(), done.set()))
    other.start()
    other.join(timeout=10)
    assert done.is_set(), "the baton was never released"


def test_a_task_loaded_anew_is_copied_anew():
    """The shared copy follows the loaded task: once the task cache is cleared (a fresh process, a
    rebuilt cache), runs must not keep training on the old tensors."""
    first, _ = resident(SMOKE.task("syn-phe"), torch.device("cpu"))
    benchmark.runner._load_task.cache_clear()
    again, _ = resident(SMOKE.task("syn-phe"), torch.device("cpu"))
    assert again is not first and torch.equal(again.ehr, first.ehr)
