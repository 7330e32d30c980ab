import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_padding_is_ignored, batch_rows, make_batch, smoke_run

from benchmark.backbones.flexcare import count_parameters
from benchmark.backbones.sequence import last_valid
from benchmark.method_card import shape_info, trainable_parameters
from benchmark.protocol import FULL
from benchmark.registry import get_method

MedFuse = get_method("medfuse").module("model").MedFuse  # methods/medfuse/model.py, as the method imports it

MISSING = dict(ehr_len=[10, 0, 4, 0, 10, 6], note_len=[7, 7, 0, 0, 3, 0])  # 1: no series, 2 and 5: no note, 3: neither


def small(**kw):
    torch.manual_seed(0)
    return MedFuse(num_labels=25, note_dim=24, hidden=32, **kw)


@pytest.mark.parametrize("train", [True, False])
def test_missing_series_note_or_both_give_finite_outputs_and_gradients(train):
    model = small(ehr_layers=2).train(train)
    out = model(make_batch(**MISSING))
    assert out.logits.shape == (6, 25) and torch.isfinite(out.logits).all() and out.aux == 0
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_missing_modality_shortens_the_fusion_sequence():
    model = small().eval()
    batch = make_batch(**MISSING)
    out = model(batch)
    h_ehr, h_note = out.extras["ehr_feature"], out.extras["note_feature"]
    seq, _ = model.fusion(torch.stack([h_ehr, h_note], 1))
    torch.testing.assert_close(out.logits[0], model.head(seq[0, 1]))  # both: [ehr, note]
    alone = lambda h: model.head(model.fusion(h.view(1, 1, -1))[0][0, 0])  # noqa: E731
    torch.testing.assert_close(out.logits[2], alone(h_ehr[2]))  # no note: [ehr]
    torch.testing.assert_close(out.logits[1], alone(h_note[1]))  # no series: [note]
    torch.testing.assert_close(out.logits[3], alone(torch.zeros(32)))  # neither: [0]


def test_a_missing_note_gives_the_same_output_whatever_its_zeroed_slot_holds():
    model = small().eval()
    batch = make_batch(**MISSING)
    note = batch.note.clone()
    note[2] = torch.randn_like(note[2])  # patient 2 has no note (length 0)
    torch.testing.assert_close(model(batch).logits[2], model(dataclasses.replace(batch, note=note)).logits[2])


def test_last_valid_step_is_the_packed_lstm_final_state():
    lstm = torch.nn.LSTM(5, 4, batch_first=True)
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 2, 4])
    out, _ = lstm(x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, (h, _) = lstm(packed)
    torch.testing.assert_close(last_valid(out, lengths), h[-1])


def test_padding_does_not_change_the_prediction_and_a_batch_of_one_works():
    model = small().eval()
    short = assert_padding_is_ignored(model)
    first = torch.tensor([0])
    torch.testing.assert_close(model(batch_rows(short, first)).logits, model(short).logits[:1], atol=1e-5, rtol=1e-5)


def test_parameter_count_on_the_full_track_is_within_10_percent_of_the_spec():
    n = trainable_parameters(get_method("medfuse"), shape_info(FULL, "mimic4-phe"))
    assert abs(n - 0.34e6) / 0.34e6 < 0.10, n
    assert n == 105_472 + 98_432 + 132_096 + 3_225  # EHR LSTM, note projection, fusion LSTM, head (spec 8.3)


def test_describe_prints_both_multimodal_methods_parameter_counts():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "methods", "describe", "m3care", "medfuse"],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    for name, display in (("m3care", "M3Care"), ("medfuse", "MedFuse")):
        assert f"{name}: {display} (v{get_method(name).version}, licence MIT" in proc.stdout
    assert "trainable parameters: 339,225 on full/mimic4-phe (25 labels, ehr_dim 76, note_dim 768, hidden 128)" in proc.stdout
    assert "trainable parameters: 973,472 on full/mimic4-phe" in proc.stdout


def test_smoke_track_run_completes_and_records_the_parameter_count(tmp_path):
    stdout, records = smoke_run("medfuse", tmp_path)
    assert "MedFuse" in stdout and len(records) == 2
    phe = MedFuse(num_labels=25, note_dim=384, hidden=16)  # smoke width, MiniLM notes
    assert [r["method"]["parameters"] for r in records if r["spec"]["task"] == "syn-phe"] == [count_parameters(phe)]
