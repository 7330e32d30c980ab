"""What the harness computes once at the end of a run (benchmark/bootstrap.py, benchmark/secondary.py),
each checked against a plain NumPy / scikit-learn computation written here."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from benchmark.bootstrap import cluster_weights, map_interval, weighted_average_precision
from benchmark.errors import RecordError
from benchmark.records import RecordStore, validate
from benchmark.secondary import by_modality, calibration, prevalence_bands
from benchmark.metrics import average_precision
from record_factory import make_record


def random_case(seed, n=240, labels=8, patients=90):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < rng.uniform(0.03, 0.45, labels)).astype(np.int64)
    s = np.round(rng.normal(size=(n, labels)) + 1.5 * y, 1)  # ties, as quantised outputs give
    return y, s, rng.integers(0, patients, n)


def sk_map(y, s, empty_label="zero", weight=None):
    aps = []
    for j in range(y.shape[1]):
        positives = (y[:, j] * (1 if weight is None else weight)).sum()
        if positives == 0:
            if empty_label == "zero":
                aps.append(0.0)
            continue
        aps.append(average_precision_score(y[:, j], s[:, j], sample_weight=weight))
    return float(np.mean(aps))


def test_weighted_ap_is_the_ap_of_the_test_set_with_each_stay_repeated():
    y, s, pid = random_case(0)
    weights = cluster_weights(torch.tensor(pid), 4, seed=5)
    got = weighted_average_precision(torch.tensor(y), torch.tensor(s), weights).numpy()
    for k in range(4):
        repeat = weights[k].numpy().astype(int)
        yr, sr = np.repeat(y, repeat, 0), np.repeat(s, repeat, 0)
        np.testing.assert_allclose(got[k], [average_precision_score(yr[:, j], sr[:, j]) for j in range(y.shape[1])],
                                   atol=1e-12)
    ones = torch.ones(1, len(y), dtype=torch.float64)
    assert torch.equal(weighted_average_precision(torch.tensor(y), torch.tensor(s), ones)[0],
                       average_precision(torch.tensor(y), torch.tensor(s)))


def test_resamples_draw_patients_with_replacement_and_every_stay_of_a_drawn_patient():
    _, _, pid = random_case(1)
    weights = cluster_weights(torch.tensor(pid), 50, seed=3).numpy()
    patients = np.unique(pid)
    for w in weights:
        per_patient = {p: set(w[pid == p]) for p in patients}
        assert all(len(v) == 1 for v in per_patient.values())  # a patient's stays are drawn together
        assert sum(v.pop() for v in per_patient.values()) == len(patients)  # as many draws as patients
    assert np.array_equal(weights, cluster_weights(torch.tensor(pid), 50, seed=3).numpy())  # the seed fixes them


@pytest.mark.parametrize("empty_label", ["zero", "skip"])
def test_the_interval_is_the_percentile_interval_of_the_resampled_maps(empty_label):
    y, s, pid = random_case(2)
    y[:, 0] = 0
    y[np.flatnonzero(pid == pid[0]), 1] = 1  # a label whose positives some resamples miss entirely
    got = map_interval(torch.tensor(y), torch.tensor(s), torch.tensor(pid), empty_label, b=200, seed=11)
    weights = cluster_weights(torch.tensor(pid), 200, seed=11).numpy()
    maps = np.array([sk_map(y, s, empty_label, w) for w in weights])
    assert got["low"] == pytest.approx(np.percentile(maps, 2.5), abs=1e-12)
    assert got["high"] == pytest.approx(np.percentile(maps, 97.5), abs=1e-12)
    assert got["std"] == pytest.approx(maps.std(ddof=1), abs=1e-12)
    assert (got["b"], got["seed"], got["level"], got["unit"]) == (200, 11, 0.95, "patient")
    assert got["patients"] == len(np.unique(pid))


def test_ece_and_brier_by_their_formulas():
    y, s, _ = random_case(3)
    p = 1 / (1 + np.exp(-s.ravel()))
    t = y.ravel()
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for b in range(15):
        inside = (p >= edges[b]) & ((p < edges[b + 1]) if b < 14 else (p <= 1))
        if inside.any():
            ece += inside.mean() * abs(t[inside].mean() - p[inside].mean())
    got = calibration(torch.tensor(y), torch.tensor(s))
    assert got["ece"] == pytest.approx(ece, abs=1e-12) and got["ece_bins"] == 15
    assert got["brier"] == pytest.approx(np.mean((p - t) ** 2), abs=1e-12)


def test_ap_by_prevalence_band_averages_its_labels():
    y, s, _ = random_case(4, labels=12)
    y[:, 5] = 0
    prevalence = y.mean(0)
    aps = np.array([average_precision_score(y[:, j], s[:, j]) if y[:, j].any() else 0.0 for j in range(12)])
    for empty_label in ("zero", "skip"):
        got = prevalence_bands(torch.tensor(y), average_precision(torch.tensor(y), torch.tensor(s)), empty_label)
        for name, low, high in (("rare", 0, 0.1), ("medium", 0.1, 0.2), ("common", 0.2, 2)):
            member = (prevalence >= low) & (prevalence < high)
            kept = member & ((prevalence > 0) | (empty_label == "zero"))
            assert got[name]["labels"] == member.sum()
            assert got[name]["map"] == (pytest.approx(aps[kept].mean(), abs=1e-12) if kept.any() else None)


def test_map_by_modality_splits_the_test_stays_by_what_they_have():
    y, s, _ = random_case(5)
    rng = np.random.default_rng(0)
    ehr_len, note_len = rng.integers(0, 3, len(y)), rng.integers(0, 2, len(y))
    got = by_modality(torch.tensor(y), torch.tensor(s), torch.tensor(ehr_len), torch.tensor(note_len), "zero")
    groups = {"both": (ehr_len > 0) & (note_len > 0), "ehr_only": (ehr_len > 0) & (note_len == 0),
              "note_only": (ehr_len == 0) & (note_len > 0), "one_missing": (ehr_len > 0) != (note_len > 0)}
    for name, mask in groups.items():
        assert got[name]["n"] == mask.sum()
        assert got[name]["map"] == pytest.approx(sk_map(y[mask], s[mask]), abs=1e-12)
        assert got[name]["labels_without_positives"] == (y[mask].sum(0) == 0).sum()


def test_a_smoke_runs_record_carries_both_and_older_records_without_them_still_read(tmp_path):
    from benchmark.runner import plan, run_one

    spec = plan("bce", "smoke", tasks=["syn-dia"], noises=["sym-20"], seeds=[30]).specs[0]
    record = run_one(spec, str(tmp_path))
    assert record["metrics"]["bootstrap"]["b"] == 1000 and record["metrics"]["bootstrap"]["unit"] == "patient"
    low, high = record["metrics"]["bootstrap"]["low"], record["metrics"]["bootstrap"]["high"]
    assert 0 <= low <= high <= 1
    secondary = record["metrics"]["secondary"]
    assert set(secondary["modality"]) == {"both", "ehr_only", "note_only", "one_missing"}
    assert set(secondary["prevalence_bands"]) == {"rare", "medium", "common"}
    assert sum(secondary["prevalence_bands"][b]["labels"] for b in ("rare", "medium", "common")) == 14
    (path,) = tmp_path.rglob("*.json")
    assert RecordStore(tmp_path).read(path)["metrics"]["secondary"] == secondary

    old = make_record()
    assert "bootstrap" not in old["metrics"] and validate(old, "old")
    broken = json.loads(json.dumps(old))
    broken["metrics"]["bootstrap"] = {"b": 1000, "seed": 1, "level": 0.95, "low": "x", "high": 0.5, "std": 0.1}
    with pytest.raises(RecordError, match="metrics.bootstrap.low"):
        validate(broken, "broken")
    broken["metrics"]["bootstrap"] = None
    broken["metrics"]["secondary"] = {**secondary, "modality": {"both": {"n": 3, "map": "high"}}}
    with pytest.raises(RecordError, match="metrics.secondary.modality.both.map"):
        validate(broken, "broken")
