"""Runs packed as threads take turns: one issues work at a time, and each hands over after a step."""
import threading

import torch

from benchmark.packing import Baton, pause, released, turn_taking


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
