"""The detection track: a method's suspicion of each training label, scored by the harness alone."""
import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.detection import THRESHOLD, check_suspicion, score_suspicion, scorer
from benchmark.errors import RecordError, RunFailed
from benchmark.method import Method
from benchmark.protocol import SMOKE
from benchmark.records import validate
from benchmark.trainer import RunData, train

from helpers import method_instance, method_module, noisy_labels, smoke_task
from record_factory import detection_row, make_record
from test_miracl import tensors_in


# --- the scorer on hand-made labels -----------------------------------------------------------------

def hand_made():
    """One label, ten entries. Observed 0: six entries, two of them truly 1 (missed positives);
    observed 1: four entries, one of them truly 0 (a spurious positive)."""
    clean = torch.tensor([1, 0, 1, 0, 0, 0, 1, 1, 0, 1]).unsqueeze(1)
    noisy = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1]).unsqueeze(1)
    scores = torch.tensor([0.9, 0.7, 0.6, 0.2, 0.1, 0.3,  # observed 0: flagged 0.9 (right), 0.7 (wrong), 0.6 (right)
                           0.8, 0.1, 0.4, 0.2]).unsqueeze(1)  # observed 1: flagged 0.8 (wrong); the spurious one 0.4
    return clean, noisy, scores


def test_known_suspicion_gives_known_precision_recall_f1_and_auprc():
    clean, noisy, scores = hand_made()
    out = score_suspicion(scores, clean, noisy)
    assert out["threshold"] == THRESHOLD == 0.5
    missed, spurious = out["missed_positive"], out["spurious_positive"]
    assert {k: missed[k] for k in ("candidates", "noisy", "flagged", "true_positives")} == \
        {"candidates": 6, "noisy": 2, "flagged": 3, "true_positives": 2}
    assert missed["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert missed["recall"] == 1.0
    assert missed["f1"] == pytest.approx(0.8, abs=1e-6)
    # Ranked 0.9 (hit), 0.7, 0.6 (hit): AP = (1/1 + 2/3) / 2.
    assert missed["auprc"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-6)
    assert missed["base_rate"] == pytest.approx(2 / 6, abs=1e-6)
    # Observed 1: the one flagged entry (0.8) is right, the wrong one (0.4) is second: AP 1/2.
    assert (spurious["flagged"], spurious["true_positives"], spurious["noisy"]) == (1, 0, 1)
    assert (spurious["precision"], spurious["recall"], spurious["f1"]) == (0.0, 0.0, 0.0)
    assert spurious["auprc"] == pytest.approx(0.5, abs=1e-6)
    assert spurious["base_rate"] == 0.25


def test_a_score_of_exactly_the_threshold_is_not_flagged_and_nothing_flagged_is_precision_0():
    clean, noisy, _ = hand_made()
    out = score_suspicion(torch.full((10, 1), 0.5), clean, noisy)
    for direction in ("missed_positive", "spurious_positive"):
        assert out[direction]["flagged"] == 0
        assert out[direction]["precision"] == out[direction]["recall"] == out[direction]["f1"] == 0.0
        # All tied: AP is the share of flipped entries, what scores that know nothing get.
        assert out[direction]["auprc"] == pytest.approx(out[direction]["base_rate"], abs=1e-6)


def test_auprc_is_scikit_learns_average_precision_per_direction_with_ties():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    clean = (torch.rand(300, 7, generator=g) < 0.2).long()
    flip = torch.rand(300, 7, generator=g) < 0.3
    noisy = torch.where(flip, 1 - clean, clean)
    scores = (torch.rand(300, 7, generator=g) * 10).round() / 10  # ties on purpose
    out = score_suspicion(scores, clean, noisy)
    for direction, observed in (("missed_positive", 0), ("spurious_positive", 1)):
        where = noisy == observed
        truth = (clean != noisy)[where].numpy()
        assert out[direction]["auprc"] == pytest.approx(average_precision_score(truth, scores[where].numpy()), abs=1e-6)
        flagged = scores[where].numpy() > 0.5
        tp = (flagged & truth).sum()
        assert out[direction]["precision"] == pytest.approx(tp / flagged.sum(), abs=1e-6)
        assert out[direction]["recall"] == pytest.approx(tp / truth.sum(), abs=1e-6)


def test_a_direction_without_flipped_entries_has_nothing_to_detect():
    clean = torch.tensor([[1, 0], [0, 1], [1, 1]])
    noisy = torch.tensor([[1, 1], [0, 1], [1, 1]])  # one spurious positive, no missed one
    out = score_suspicion(torch.rand(3, 2), clean, noisy)
    assert out["missed_positive"]["noisy"] == 0
    assert all(out["missed_positive"][k] is None for k in ("precision", "recall", "f1", "auprc"))
    assert out["spurious_positive"]["noisy"] == 1 and out["spurious_positive"]["auprc"] is not None
    validate(make_record(detection=out), "record")  # nulls are what the schema allows for such a direction


@pytest.mark.parametrize("scores, message", [
    (np.zeros((10, 1)), "returned ndarray; expected None or an [N, C] tensor"),
    (torch.zeros(10, 2), "shape [10, 2]; expected [10, 1]"),
    (torch.linspace(0, 1.5, 10).unsqueeze(1), "values in [0, 1.5]; expected probabilities in [0, 1]"),
    (torch.full((10, 1), float("nan")), "non-finite values"),
])
def test_malformed_suspicion_fails_the_run_naming_the_hook(scores, message):
    clean, noisy, _ = hand_made()
    with pytest.raises(RunFailed, match=r"Method\.suspicion\(\)") as e:
        score_suspicion(scores, clean, noisy)
    assert message in str(e.value)


def test_boolean_flags_are_probabilities_and_the_methods_tensor_is_left_as_it_was():
    clean, noisy, scores = hand_made()
    flags = scores > 0.5
    before = flags.clone()
    assert check_suspicion(flags, (10, 1)).dtype == torch.float64
    assert score_suspicion(flags, clean, noisy)["missed_positive"]["flagged"] == 3
    assert torch.equal(flags, before)


# --- through the trainer ------------------------------------------------------------------------------

class Suspicious(Method):
    """BCE whose suspicion from epoch 2 on is a known function of the observed labels only: 0.75 for every
    observed positive, 0 for every observed negative."""

    wants_train_logits = True

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.epoch, self.noisy, self.calls = 0, None, []

    def loss(self, logits, targets, index, epoch):
        return F.binary_cross_entropy_with_logits(logits, targets)

    def end_epoch(self, view):
        self.epoch, self.noisy = view.epoch, view.noisy_labels
        return None

    def suspicion(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return None if self.epoch < 2 else 0.75 * self.noisy


def smoke_run(method_factory, epochs=3, **kwargs):
    _, data, info = smoke_task()
    noisy = noisy_labels(data, "asym-20-40")
    method = method_factory(info)
    budget = dataclasses.replace(SMOKE.budget, epochs=epochs)
    result = train(method, RunData(data.train, noisy, data.test), budget, 30, **kwargs)
    return method, result, data, noisy


def test_the_harness_scores_a_known_suspicion_into_the_epochs_it_was_given():
    _, data, _ = smoke_task()
    clean, noisy = data.train.labels, noisy_labels(data, "asym-20-40")
    method, result, data, noisy = smoke_run(lambda info: Suspicious(info, {}), score_suspicion=scorer(clean, noisy))
    assert "detection" not in result.curve[0]  # None: nothing scored
    assert all(args == ((), {}) for args in method.calls)  # the hook gets nothing from the harness
    wrong = clean.bool() != noisy.bool()
    spurious_truth = wrong[noisy == 1]
    for row in result.curve[1:]:
        det = row["detection"]
        assert det["spurious_positive"]["flagged"] == int((noisy == 1).sum())  # every observed positive
        assert det["spurious_positive"]["precision"] == pytest.approx(float(spurious_truth.double().mean()), abs=1e-6)
        assert det["spurious_positive"]["recall"] == 1.0
        assert det["spurious_positive"]["auprc"] == pytest.approx(det["spurious_positive"]["base_rate"], abs=1e-6)
        assert det["missed_positive"]["flagged"] == 0 and det["missed_positive"]["recall"] == 0.0
        assert det["missed_positive"]["noisy"] == int(wrong[noisy == 0].sum()) > 0
    json.dumps(result.curve, allow_nan=False)


def test_without_a_scorer_the_trainer_never_asks_for_suspicion():
    method, result, *_ = smoke_run(lambda info: Suspicious(info, {}))
    assert method.calls == [] and all("detection" not in row for row in result.curve)


def test_a_malformed_suspicion_fails_the_run():
    class Wrong(Suspicious):
        def suspicion(self):
            return torch.ones(3, 3)

    _, data, _ = smoke_task()
    with pytest.raises(RunFailed, match=r"Method\.suspicion\(\) returned a tensor of shape \[3, 3\]"):
        smoke_run(lambda info: Wrong(info, {}), epochs=1,
                  score_suspicion=scorer(data.train.labels, noisy_labels(data, "asym-20-40")))


def test_a_run_record_keeps_the_detection_rows_and_leaves_them_out_of_final(tmp_path):
    from benchmark.options import Execution
    from benchmark.runner import plan, run_one

    spec = plan("mllsc", "smoke", ["syn-phe"], ["asym-20-40"], [30]).specs[0]
    record = run_one(spec, str(tmp_path), Execution(device="cpu"))
    assert record["status"] == "done"
    assert "detection" not in record["metrics"]["curve"][0] and "detection" in record["metrics"]["curve"][-1]
    assert "detection" not in record["metrics"]["final"]
    validate(json.loads(next(tmp_path.rglob("*.json")).read_text()))


@pytest.mark.parametrize("path, value, field", [
    (("missed_positive", "precision"), 1.2, "metrics.curve[1].detection.missed_positive.precision"),
    (("spurious_positive", "flagged"), 2.5, "metrics.curve[1].detection.spurious_positive.flagged"),
    (("spurious_positive",), None, "metrics.curve[1].detection.spurious_positive"),
    (("threshold",), "0.5", "metrics.curve[1].detection.threshold"),
])
def test_a_records_detection_is_validated_on_read_naming_the_field(path, value, field):
    record = make_record(detection=detection_row())
    validate(copy.deepcopy(record))
    bad = copy.deepcopy(record)
    target = bad["metrics"]["curve"][-1]["detection"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(RecordError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate(bad)


# --- MIRACL, MultiT, MLLSC: what they expose, and that it changes nothing --------------------------

METHODS = ("miracl", "multit", "mllsc")


def fast_hparams(name):
    return {"multit": {"min_selected": 5}}.get(name, {})


def curves_without_detection(curve):
    return [{k: v for k, v in row.items() if k != "detection"} for row in curve]


@pytest.mark.parametrize("name", METHODS)
def test_suspicion_does_not_change_training(name):
    _, data, _ = smoke_task()
    noisy = noisy_labels(data, "asym-20-40")
    make = lambda info: method_instance(name, info, **fast_hparams(name))  # noqa: E731
    _, plain, *_ = smoke_run(make)
    method, scored, *_ = smoke_run(make, score_suspicion=scorer(data.train.labels, noisy))
    assert any("detection" in row for row in scored.curve)
    assert curves_without_detection(scored.curve) == plain.curve
    assert method.suspicion() is not None


def test_mllsc_keeping_its_training_logits_trains_as_before():
    """MLLSC asks the trainer for the epoch's training logits only for suspicion(): without them (as
    before the detection track) it trains to the same numbers."""
    module = method_module("mllsc")

    class Before(module.MLLSC):
        wants_train_logits = False  # the trainer keeps no logits, as for MLLSC 1.0 before suspicion()

        def end_epoch(self, view):
            return super().end_epoch(dataclasses.replace(view, train_logits=torch.zeros_like(view.noisy_labels)))

    hparams = method_instance("mllsc", smoke_task()[2]).hparams
    _, before, *_ = smoke_run(lambda info: Before(info, hparams))
    _, now, *_ = smoke_run(lambda info: method_instance("mllsc", info))
    assert [row["method"]["corrected"] for row in now.curve] == [False, False, True]
    for a, b in zip(before.curve, now.curve):
        assert (a["map"], a["train_loss"], a["per_label_ap"]) == (b["map"], b["train_loss"], b["per_label_ap"])
        assert (a["method"]["pos_to_neg"], a["method"]["neg_to_pos"]) == (b["method"]["pos_to_neg"], b["method"]["neg_to_pos"])


def test_mllsc_flags_exactly_the_entries_its_loss_corrected():
    _, data, _ = smoke_task()
    noisy = noisy_labels(data, "asym-20-40")
    _, result, *_ = smoke_run(lambda info: method_instance("mllsc", info), score_suspicion=scorer(data.train.labels, noisy))
    corrected = [row for row in result.curve if row["method"]["corrected"]]
    assert corrected and all("detection" in row for row in corrected)
    assert all("detection" not in row for row in result.curve if not row["method"]["corrected"])
    for row in corrected:
        assert row["detection"]["spurious_positive"]["flagged"] == row["method"]["pos_to_neg"]
        assert row["detection"]["missed_positive"]["flagged"] == row["method"]["neg_to_pos"]


def test_mllsc_flip_scores_cross_one_half_at_its_thresholds_and_keep_the_order():
    module = method_module("mllsc")
    logits = torch.logit(torch.tensor([[0.1, 0.6, 0.61, 0.9], [0.1, 0.45, 0.44, 0.9]]).double()).float()
    targets = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
    s = module.flip_scores(logits, targets, tau_pos=0.55, tau_neg=0.6)
    _, to_neg, to_pos = module.corrected_targets(logits, targets, 0.55, 0.6)
    assert torch.equal(s > 0.5, to_neg | to_pos)
    assert torch.equal(s[0].argsort(), torch.tensor([0, 1, 2, 3]))  # observed 0: the higher p, the more suspect
    assert torch.equal(s[1].argsort(), torch.tensor([3, 1, 2, 0]))  # observed 1: the lower p, the more suspect
    assert float(s.min()) >= 0 and float(s.max()) <= 1


def test_multit_posterior_is_bayes_rule_with_its_transition_matrix():
    module = method_module("multit")
    p = torch.tensor([[0.2, 0.7]])
    logits = torch.logit(p.double()).float()
    rho_minus, rho_plus = torch.tensor([0.1, 0.3]), torch.tensor([0.4, 0.2])
    post = module.noise_posterior(logits, torch.tensor([[1, 0]]), rho_minus, rho_plus)
    # label 0 observed 1: P(clean 0 | noisy 1) = (1 - p) rm / ((1 - p) rm + p (1 - rp))
    expected_0 = 0.8 * 0.1 / (0.8 * 0.1 + 0.2 * 0.6)
    # label 1 observed 0: P(clean 1 | noisy 0) = p rp / (p rp + (1 - p)(1 - rm))
    expected_1 = 0.7 * 0.2 / (0.7 * 0.2 + 0.3 * 0.7)
    assert post[0, 0].item() == pytest.approx(expected_0, abs=1e-5)
    assert post[0, 1].item() == pytest.approx(expected_1, abs=1e-5)
    identity = module.noise_posterior(logits, torch.tensor([[1, 0]]), torch.zeros(2), torch.zeros(2))
    assert torch.equal(identity, torch.zeros(1, 2))  # no noise estimated: nothing is suspect


def test_miracl_suspicion_is_the_noisy_components_posterior_of_its_entrys_mixture():
    from benchmark import gmm

    module = method_module("miracl")
    g = torch.Generator().manual_seed(1)
    noisy = (torch.rand(200, 3, generator=g) < 0.3).long()
    s = torch.where(torch.rand(200, 3, generator=g) < 0.2, 0.8, 0.2).double() + 0.05 * torch.randn(200, 3, generator=g).double()
    mixtures = gmm.fit(*gmm.by_label_and_class(s, noisy), backend="torch")
    post = module.noisy_posterior(s, noisy, mixtures)
    for i, l in ((0, 0), (5, 1), (17, 2), (123, 1)):
        row = 2 * l + int(noisy[i, l])
        expected = mixtures.posterior(s[:, l].unsqueeze(0).expand(len(mixtures.means), -1))[row, i, 1]
        assert post[i, l].item() == pytest.approx(expected.item(), abs=1e-9)
    high = s > 0.5
    assert float(post[high].mean()) > 0.9 and float(post[~high].mean()) < 0.1


@pytest.mark.parametrize("name", METHODS)
def test_a_method_exposing_suspicion_never_holds_the_clean_training_labels(name):
    _, data, _ = smoke_task()
    noisy = noisy_labels(data, "asym-20-40")
    clean = data.train.labels.float()
    assert not torch.equal(noisy, clean)
    method, result, *_ = smoke_run(lambda info: method_instance(name, info, **fast_hparams(name)),
                                   score_suspicion=scorer(data.train.labels, noisy))
    everything = tensors_in(method) + [method.suspicion()]
    assert len(everything) > 1
    for t in everything:
        if t.shape == clean.shape:
            assert not torch.equal(t.float(), clean)
    # What the harness scored stays with the harness: nothing of the detection rows is in the method.
    scored = [row["detection"] for row in result.curve if "detection" in row]
    assert scored and not any(v is d for v in vars(method).values() for d in scored)
