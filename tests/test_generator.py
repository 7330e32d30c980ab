import dataclasses
import hashlib

import numpy as np
import pandas as pd
import pytest

from benchmark.cards import label_names
from benchmark.data import generator, series_arrays
from benchmark.data.loaders import read_episodes, read_split
from benchmark.data.timeseries import CHANNELS, discretise
from benchmark.protocol import FULL, QUICK, SMOKE

MIMIC3 = dataclasses.replace(SMOKE.task("syn-phe"), name="syn-mimic3", layout="mimic3-miracl", n_total=120)


@pytest.mark.parametrize("spec", [SMOKE.task("syn-phe"), SMOKE.task("syn-dia"), MIMIC3], ids=lambda s: s.name)
def test_files_read_back_through_the_real_loaders_reproduce_the_generator(spec, tmp_path):
    gen = generator.generate(spec)
    generator.write(gen, spec, tmp_path)
    names = label_names(spec.kind)
    for split, parts in (("train", ["train", "val"]), ("test", ["test"])):
        expected = pd.concat([gen.splits[p] for p in parts if p in gen.splits], ignore_index=True)
        raw = read_split(tmp_path, spec.layout, spec.task_dir, split, names)
        assert raw.keys == expected["key"].tolist()
        np.testing.assert_array_equal(raw.patient_id, expected["patient"].to_numpy())
        np.testing.assert_array_equal(raw.ends, expected["end"].to_numpy())
        assert raw.notes == expected["note"].tolist()
        np.testing.assert_array_equal(raw.labels, expected[names].to_numpy())
        assert [s.rsplit("/", 1)[-1] if s else "" for s in raw.series] == expected["series"].tolist()

        # The discretised arrays from the files equal those from the generator's in-memory events.
        from_files, offsets = series_arrays(raw, spec)
        with_series = [i for i, s in enumerate(expected["series"]) if s]
        ev = gen.events
        parts_, stays = [], []
        for k, i in enumerate(with_series):
            rows = ev[ev["series"] == expected["series"][i]]
            parts_.append(rows)
            stays += [k] * len(rows)
        events = pd.concat(parts_, ignore_index=True)
        flat, off = discretise(np.array(stays), events["Hours"].to_numpy(),
                               {c: events[c].to_numpy(object) for c in CHANNELS},
                               expected["end"].to_numpy()[with_series], spec.max_hours)
        np.testing.assert_array_equal(from_files, flat)
    table, _ = read_episodes(sorted(str(p) for p in (tmp_path / "ehr").iterdir()))
    assert len(table) == len(gen.events)


def test_generation_is_deterministic(tmp_path):
    spec = SMOKE.task("syn-dia")
    digests = []
    for run in ("a", "b"):
        generator.write(generator.generate(spec), spec, tmp_path / run)
        h = hashlib.sha256()
        for f in sorted((tmp_path / run).rglob("*.csv")):
            h.update(f.name.encode() + f.read_bytes())
        digests.append(h.hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize("task", FULL.tasks, ids=lambda t: t.name)
def test_full_tasks_match_the_papers_dataset_table(task):
    c = generator.cohort(task)
    assert len(c.labels) == task.n_total and c.labels.shape[1] == task.num_labels
    assert c.labels.sum(1).mean() == pytest.approx(task.cardinality, rel=0.02)
    assert 1 - c.has_ehr.mean() == pytest.approx(task.missing_ehr, abs=0.01)
    assert 1 - c.has_note.mean() == pytest.approx(task.missing_note, abs=0.01)


def test_labels_co_occur_as_in_mimic():
    c = generator.cohort(QUICK.task("syn-phe"))
    names = label_names("phenotyping")
    y = c.labels.astype(float)

    def lift(a, b):
        return (y[:, a] * y[:, b]).mean() / (y[:, a].mean() * y[:, b].mean())

    sepsis, shock = names.index("Septicemia (except in labor)"), names.index("Shock")
    renal, fluid = names.index("Acute and unspecified renal failure"), names.index("Fluid and electrolyte disorders")
    dm_c, dm = names.index("Diabetes mellitus with complications"), names.index("Diabetes mellitus without complication")
    assert lift(sepsis, shock) > 1.5 and lift(renal, fluid) > 1.3
    assert (y[:, dm_c] * y[:, dm]).mean() < 0.01  # nearly exclusive


def test_several_stays_per_patient_and_a_patient_level_split(tmp_path):
    spec = QUICK.task("syn-phe")
    gen = generator.generate(spec)
    train = pd.concat([gen.splits["train"], gen.splits["val"]])
    assert train["patient"].duplicated().any()  # longitudinal patients exist
    assert not set(train["patient"]) & set(gen.splits["test"]["patient"])


def test_both_modalities_carry_label_information():
    """Pooled features + logistic regression: either modality alone does worse than both."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    from benchmark.runner import load_task

    data = load_task(QUICK.task("syn-phe"))

    def pooled(split):
        ehr = np.stack([split.ehr[a:b].numpy().mean(0) if b > a else np.zeros(76)
                        for a, b in zip(split.ehr_offsets[:-1], split.ehr_offsets[1:])])
        note = np.stack([split.note[a:b].float().numpy().mean(0) if b > a else np.zeros(split.note.shape[1])
                         for a, b in zip(split.note_offsets[:-1], split.note_offsets[1:])])
        return ehr, note

    (e_tr, n_tr), (e_te, n_te) = pooled(data.train), pooled(data.test)
    y_tr, y_te = data.train.labels.numpy(), data.test.labels.numpy()

    def score(x_tr, x_te):
        return np.mean([average_precision_score(y_te[:, j], LogisticRegression(C=0.5, max_iter=300).fit(x_tr, y_tr[:, j])
                                                .predict_proba(x_te)[:, 1]) for j in range(y_tr.shape[1])])

    both = score(np.hstack([e_tr, n_tr]), np.hstack([e_te, n_te]))
    ehr_only, note_only = score(e_tr, e_te), score(n_tr, n_te)
    assert both > ehr_only + 0.03 and both > note_only + 0.03, (both, ehr_only, note_only)


def test_the_generator_follows_the_cards_labels_and_refuses_one_it_does_not_model(monkeypatch):
    from benchmark import cards
    from benchmark.errors import UsageError

    names = label_names("diagnosis")
    reordered = names[1:] + names[:1]
    monkeypatch.setattr(cards, "label_names", lambda kind: reordered)
    assert [row[0] for row in generator._table("diagnosis")] == reordered
    monkeypatch.setattr(cards, "label_names", lambda kind: names[:-1] + ["Hernia"])
    with pytest.raises(UsageError, match="list label 'Hernia', which the synthetic generator does not model"):
        generator.cohort(SMOKE.task("syn-dia"))
    monkeypatch.setattr(cards, "label_names", lambda kind: names[:-1])
    with pytest.raises(UsageError, match="leave out label 'Support Devices', which the synthetic generator models"):
        generator.cohort(SMOKE.task("syn-dia"))


@pytest.mark.parametrize("spec", [QUICK.task("syn-phe"), dataclasses.replace(SMOKE.task("syn-dia"), n_total=400)],
                         ids=lambda s: s.name)
def test_a_large_split_discretised_in_worker_processes_equals_the_single_pass(spec, tmp_path, monkeypatch):
    from benchmark.data import taskdata

    generator.write(generator.generate(spec), spec, tmp_path)
    raw = read_split(tmp_path, spec.layout, spec.task_dir, "train", label_names(spec.kind))
    single = series_arrays(raw, spec, workers=1)
    monkeypatch.setattr(taskdata, "PARALLEL_SERIES", 2)  # what the full tasks' splits get, on a split this small
    monkeypatch.setattr(taskdata, "_CHUNK_SERIES", 1)
    spawned, in_workers = [], taskdata._discretised_in_workers
    monkeypatch.setattr(taskdata, "_discretised_in_workers", lambda *a: spawned.append(a[-1]) or in_workers(*a))
    chunked = series_arrays(raw, spec, workers=3)
    assert spawned == [3]
    for a, b in zip(single, chunked):
        np.testing.assert_array_equal(a, b)
    assert single[0].dtype == chunked[0].dtype and single[1].dtype == chunked[1].dtype


def test_a_bad_episode_file_in_a_workers_chunk_is_named_with_its_line(tmp_path, monkeypatch):
    from benchmark.data import taskdata
    from benchmark.errors import UsageError

    spec = QUICK.task("syn-phe")
    generator.write(generator.generate(spec), spec, tmp_path)
    raw = read_split(tmp_path, spec.layout, spec.task_dir, "train", label_names(spec.kind))
    last = [s for s in raw.series if s][-1]  # in the last worker's chunk
    lines = open(last).read().splitlines()
    lines[2] = lines[2] + ",1"  # one field too many on line 3
    open(last, "w").write("\n".join(lines) + "\n")
    monkeypatch.setattr(taskdata, "PARALLEL_SERIES", 2)
    monkeypatch.setattr(taskdata, "_CHUNK_SERIES", 1)
    with pytest.raises(UsageError) as e:
        series_arrays(raw, spec, workers=2)
    assert str(e.value).startswith(f"{last} line 3:")

