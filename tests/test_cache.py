import dataclasses

import numpy as np
import pytest

import benchmark.data.taskdata as data_module
from benchmark.data import generator, materialise, prepare
from benchmark.data.cache import TensorCache
from benchmark.protocol import SMOKE

SPEC = SMOKE.task("syn-phe")


@pytest.fixture
def cache(tmp_path):
    return TensorCache(tmp_path / "cache")


def no_rebuild(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the cache should have been used")
    monkeypatch.setattr(data_module, "build_arrays", fail)


def test_second_materialisation_is_a_cache_hit_with_the_same_fingerprint(cache, monkeypatch):
    first = materialise(SPEC, cache)
    no_rebuild(monkeypatch)
    second = materialise(SPEC, cache)
    assert first.fingerprint == second.fingerprint
    assert np.array_equal(first.train.ehr.numpy(), second.train.ehr.numpy())
    assert len(first.train) + len(first.test) == SPEC.n_total


def test_a_prepared_task_is_built_once_announced_and_then_loaded_without_a_build(cache, monkeypatch):
    said = []
    prepare(SPEC, cache, announce=said.append)
    assert len(said) == 1 and "syn-phe" in said[0]
    no_rebuild(monkeypatch)
    prepare(SPEC, cache, announce=said.append)  # already there: neither built nor announced
    data = materialise(SPEC, cache)
    assert len(said) == 1 and len(data.train) + len(data.test) == SPEC.n_total
    assert data.encoder_parameters == 22_713_216  # MiniLM's, counted when its notes were encoded


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_corrupt_cache_is_reported_and_rebuilt(cache, capsys, damage):
    first = materialise(SPEC, cache)
    (entry,) = (cache.root / "tasks").iterdir()
    target = entry / "train_ehr.npy"
    if damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[-10] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:200])
    else:
        (entry / "manifest.json").write_text("{not json")
    again = materialise(SPEC, cache)
    assert f"warning: tensor cache {entry} is corrupt" in capsys.readouterr().err
    assert again.fingerprint == first.fingerprint


def test_a_changed_spec_gets_its_own_entry(cache):
    a = materialise(SPEC, cache)
    b = materialise(dataclasses.replace(SPEC, max_hours=4), cache)
    assert a.fingerprint != b.fingerprint
    assert b.train.max_ehr <= 4
    assert len(list((cache.root / "tasks").iterdir())) == 2


def test_real_files_changing_on_disk_make_the_cache_stale(cache, tmp_path, monkeypatch):
    spec = dataclasses.replace(SPEC, source="real", data_dir="mine")
    gen = generator.generate(SPEC)
    generator.write(gen, SPEC, tmp_path / "data" / "mine")
    monkeypatch.setenv("EHRBENCH_DATA", str(tmp_path / "data"))
    first = materialise(spec, cache)
    listfile = tmp_path / "data" / "mine" / "phenotyping" / "test_multimodal_listfile.csv"
    lines = listfile.read_text().splitlines()
    listfile.write_text("\n".join(lines[:-1]) + "\n")  # one test sample fewer
    second = materialise(spec, cache)
    assert len(second.test) == len(first.test) - 1 and second.fingerprint != first.fingerprint


def test_note_rows_are_the_padded_batch_real_tokens_in_order(cache):
    """``Split.batch(..., note_rows=True)``: each sample's note tokens, one sample after another, at
    their places of the padded batch; the unused slots hold the zero row and point past the end."""
    import torch

    split = materialise(SPEC, cache).train
    idx = torch.tensor([3, 0, 7, 5])
    padded = split.batch(idx)
    width = padded.note.shape[1]
    total = int(padded.note_len.sum())
    batch = split.batch(idx, (padded.ehr.shape[1], width, total + 4), note_rows=True)
    assert batch.note is None and batch.note_width == width and batch.tokens == total + 4
    rows = batch.note_rows
    assert rows.values.shape == (total + 4, split.note.shape[1]) and rows.values.dtype == split.note.dtype
    real = torch.arange(width)[None, :] < padded.note_len[:, None]
    torch.testing.assert_close(rows.values[:total].float(), padded.note[real])
    assert (rows.values[total:] == 0).all() and (rows.index[total:] == len(idx) * width).all()
    assert torch.equal(rows.index[:total], real.reshape(-1).nonzero().squeeze(1))
    placed = rows.padded(rows.values.float(), len(idx))
    torch.testing.assert_close(placed, padded.note * real[..., None])
    torch.testing.assert_close(batch.ehr, padded.ehr)
    assert torch.equal(batch.note_len, padded.note_len)


def test_batches_pad_ragged_rows_without_mixing_samples(cache):
    import torch

    data = materialise(SPEC, cache)
    split = data.train
    idx = torch.tensor([3, 0, 7])
    batch = split.batch(idx)
    for row, i in enumerate(idx.tolist()):
        a, b = split.ehr_offsets[i].item(), split.ehr_offsets[i + 1].item()
        assert batch.ehr_len[row] == b - a
        torch.testing.assert_close(batch.ehr[row, : b - a], split.ehr[a:b])
        assert batch.ehr[row, b - a:].abs().sum() == 0
        a, b = split.note_offsets[i].item(), split.note_offsets[i + 1].item()
        torch.testing.assert_close(batch.note[row, : b - a], split.note[a:b].float())
