"""The harness's scoring of a method's corrections against the clean training labels."""
import dataclasses

import pytest
import torch

from benchmark.diagnostics import score_corrections, scorer
from benchmark.method import Method
from benchmark.protocol import SMOKE
from benchmark.trainer import RunData, train

from helpers import noisy_labels, smoke_task


def test_scores_of_a_hand_made_correction():
    clean = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]])
    noisy = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])  # wrong: (0,0), (0,3), (1,1)
    part = torch.tensor([[2, 0, 1, 2], [1, 0, 0, 2]], dtype=torch.int8)
    labels = torch.tensor([[0.9, 0.0, 0.6, 0.7], [0.2, 1.0, 1.0, 0.3]])
    out = score_corrections({"labels": labels, "partition": part}, clean, noisy)
    assert out["share_clean"] == 0.375 and out["share_uncertain"] == 0.25 and out["share_noisy"] == 0.375
    # flagged noisy: (0,0) wrong, (0,3) wrong, (1,3) right -> precision 2/3, recall 2/3
    assert out["flagged_noisy_precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert out["flagged_noisy_recall"] == pytest.approx(2 / 3, abs=1e-6)
    # flagged suspect adds (0,2) right and (1,0) right -> 2/5; (1,1) is missed -> recall 2/3
    assert out["flagged_suspect_precision"] == pytest.approx(0.4) and out["flagged_suspect_recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert out["agreement_before"] == 0.625
    # thresholded at 0.5: [[1,0,1,1],[0,1,1,0]] vs clean: wrong at (0,3), (1,1), (1,3)
    assert out["agreement_after"] == 0.625
    assert out["agreement_after_noisy"] == pytest.approx(1 / 3, abs=1e-6)
    assert out["agreement_before_noisy"] == pytest.approx(1 / 3, abs=1e-6)
    assert out["agreement_after_clean"] == pytest.approx(2 / 3, abs=1e-6)


def test_an_empty_partition_class_has_no_agreement_and_nothing_flagged_has_precision_0():
    clean = torch.tensor([[1, 0]])
    out = score_corrections({"labels": clean.float(), "partition": torch.zeros(1, 2, dtype=torch.int8)}, clean, clean)
    assert out["agreement_after_noisy"] is None and out["agreement_after_uncertain"] is None
    assert out["flagged_noisy_precision"] == 0.0 and out["flagged_noisy_recall"] == 0.0


class Flagger(Method):
    """Flags every observed positive as noisy and keeps the labels: a correction the harness can score."""

    wants_train_logits = True

    def loss(self, logits, targets, index, epoch):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)

    def end_epoch(self, view):
        self.view = view
        return None

    def corrections(self):
        return {"labels": self.view.noisy_labels, "partition": (self.view.noisy_labels * 2).to(torch.int8)}


def test_the_trainer_stores_the_scored_corrections_in_each_epoch_row():
    _, data, info = smoke_task()
    noisy = noisy_labels(data)
    result = train(Flagger(info, {}), RunData(data.train, noisy, data.test), dataclasses.replace(SMOKE.budget, epochs=2), 30,
                   score_corrections=scorer(data.train.labels, noisy))
    expected = float((noisy == data.train.labels.float()).float().mean())
    for row in result.curve:
        assert row["corrections"]["agreement_before"] == pytest.approx(expected, abs=1e-6)
        assert row["corrections"]["agreement_after"] == row["corrections"]["agreement_before"]
        assert row["corrections"]["share_noisy"] == pytest.approx(float(noisy.mean()), abs=1e-6)


def test_without_corrections_the_rows_have_none():
    _, data, info = smoke_task()
    noisy = noisy_labels(data)

    class Plain(Flagger):
        def corrections(self):
            return None

    result = train(Plain(info, {}), RunData(data.train, noisy, data.test), dataclasses.replace(SMOKE.budget, epochs=1), 30,
                   score_corrections=scorer(data.train.labels, noisy))
    assert "corrections" not in result.curve[0]
