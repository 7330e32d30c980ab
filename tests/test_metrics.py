import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from benchmark.metrics import average_precision, evaluate, roc_auc


def random_case(seed, n=400, labels=9, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < rng.uniform(0.05, 0.5, labels)).astype(np.int64)
    s = rng.normal(size=(n, labels)) + y * rng.uniform(0, 2, labels)
    if ties:
        s = np.round(s, 1)  # many tied scores, as with saturated or quantised outputs
    return y, s


@pytest.mark.parametrize("seed", range(5))
def test_map_equals_sklearns_per_label_mean(seed):
    y, s = random_case(seed)
    expected = np.mean([average_precision_score(y[:, j], s[:, j]) for j in range(y.shape[1])])
    got = evaluate(torch.tensor(y), torch.tensor(s))["map"]
    assert got == pytest.approx(expected, abs=1e-12)
    per_label = average_precision(torch.tensor(y), torch.tensor(s)).numpy()
    np.testing.assert_allclose(per_label, [average_precision_score(y[:, j], s[:, j]) for j in range(y.shape[1])], atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_auc_and_f1_equal_sklearn(seed):
    y, s = random_case(seed)
    m = evaluate(torch.tensor(y), torch.tensor(s))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert m["micro_auc"] == pytest.approx(roc_auc_score(y, s, average="micro"), abs=1e-12)
    assert m["micro_f1"] == pytest.approx(f1_score(y, s > 0, average="micro"), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y, s > 0, average="macro", zero_division=0), abs=1e-12)


def test_label_without_test_positives_scores_zero_and_counts_by_default():
    y, s = random_case(0, ties=False)
    y[:, 2] = 0
    m = evaluate(torch.tensor(y), torch.tensor(s))
    assert m["per_label_ap"][2] == 0.0
    assert m["labels_without_positives"] == [2]
    assert m["map"] == pytest.approx(np.mean(m["per_label_ap"]))
    skipped = evaluate(torch.tensor(y), torch.tensor(s), empty_label="skip")
    others = [ap for j, ap in enumerate(m["per_label_ap"]) if j != 2]
    assert skipped["map"] == pytest.approx(np.mean(others))
    # ROC-AUC is undefined there: macro AUC averages the labels with both classes.
    assert roc_auc(torch.tensor(y), torch.tensor(s))[2].isnan()
    assert m["macro_auc"] == pytest.approx(roc_auc_score(np.delete(y, 2, 1), np.delete(s, 2, 1)))


def test_metrics_are_ranking_invariant_to_sigmoid():
    y, s = random_case(4, ties=False)
    a = evaluate(torch.tensor(y), torch.tensor(s))
    b = evaluate(torch.tensor(y), torch.logit(torch.sigmoid(torch.tensor(s))))
    assert a["map"] == pytest.approx(b["map"], abs=1e-9)


def test_unknown_empty_label_policy_is_refused():
    y, s = random_case(0)
    with pytest.raises(ValueError, match="empty_label"):
        evaluate(torch.tensor(y), torch.tensor(s), empty_label="drop")
