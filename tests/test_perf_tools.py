"""The speed comparison measures what it says: the naive step is the reference's training loop as
written (anomaly detection on, inputs copied in), and it leaves nothing switched on behind it."""
import sys
from pathlib import Path

import pytest
import torch

from benchmark.runner import plan
from helpers import smoke_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import speed  # noqa: E402 - perf/ holds scripts, not a package


@pytest.mark.parametrize("as_written", [True, False])
def test_the_naive_step_runs_with_anomaly_detection_only_as_the_reference_does(monkeypatch, as_written):
    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    _, data, _ = smoke_task()
    texts = ["patient stable overnight, creatinine rising"] * len(data.train)
    seen = []
    loss = torch.nn.functional.binary_cross_entropy_with_logits

    def recording_loss(*args, **kwargs):
        seen.append(torch.is_anomaly_enabled())
        return loss(*args, **kwargs)

    monkeypatch.setattr(speed.F, "binary_cross_entropy_with_logits", recording_loss)
    out = speed.naive_steps(spec, data, texts, "minilm", 1, torch.device("cpu"), as_written=as_written)
    assert seen == [as_written] * 4  # three warm-up steps and the timed one
    assert not torch.is_anomaly_enabled()  # the fast runs and the parity check after it run without
    assert out["as_written"] is as_written and out["ms_per_step"] > 0
