"""The GPU fast path's length handling computes the same function: parts, buckets, graphs' keys."""
import dataclasses

import pytest
import torch

from benchmark.graphs import BUCKETS, CapturedSteps, bucket
from benchmark.protocol import SMOKE
from benchmark.fastpath import inputs, predict
from benchmark.options import Execution
from benchmark.trainer import RunData, train

from helpers import method_instance, noisy_labels, smoke_task


def test_chunked_keeps_the_batch_and_sorts_parts_by_series_length():
    _, data, _ = smoke_task()
    split = data.train
    batches = list(torch.randperm(len(split), generator=torch.Generator().manual_seed(0)).split(32))
    planned = split.chunked(batches, 4)
    assert len(planned) == len(batches)
    for (rows, widths), batch in zip(planned, batches):
        assert sorted(rows.tolist()) == sorted(batch.tolist())  # same samples, reordered only
        lengths = split.ehr_len[rows]
        assert torch.all(lengths[1:] >= lengths[:-1])
        parts = rows.tensor_split(len(widths))
        for part, (ehr_w, note_w, tokens) in zip(parts, widths):
            assert ehr_w >= int(split.ehr_len[part].max()) and note_w >= int(split.note_len[part].max())
            assert tokens == int((split.ehr_len[part] + split.note_len[part]).sum())
            assert ehr_w % 16 == 0 or ehr_w == split.max_ehr
    # The longest stay only pads its own part: total padded rows never grow, and shrink here.
    whole = sum(len(b) * w[0] for b, w in zip(batches, split.batch_widths(batches)))
    parted = sum(len(p) * w[0] for rows, ws in planned for p, w in zip(rows.tensor_split(len(ws)), ws))
    assert parted <= whole


def test_a_short_last_batch_is_cut_into_non_empty_parts():
    _, data, _ = smoke_task()
    rows, widths = data.train.chunked([torch.arange(3)], 4)[0]
    assert len(widths) == 3 and all(len(p) == 1 for p in rows.tensor_split(len(widths)))


def test_parts_and_wider_padding_give_the_same_predictions():
    spec, data, info = smoke_task()
    method = method_instance("bce", info)
    model = method.build_model().eval()
    split = data.test
    rows = torch.arange(len(split))
    with torch.no_grad():
        whole = model(split.batch(rows)).logits
        (sorted_rows, widths), = split.chunked([rows], 4)
        parted = torch.empty_like(whole)
        parted[sorted_rows] = model(inputs(split, sorted_rows, widths)).logits
        wide = tuple((bucket(a, 1024) + 16, bucket(b, 1024) + 16) for a, b, _ in widths)
        padded = torch.empty_like(whole)
        padded[sorted_rows] = model(inputs(split, sorted_rows, list(wide))).logits
    torch.testing.assert_close(parted, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predict(model, split, chunks=4), whole, atol=1e-5, rtol=1e-5)
    for layout in ("packed", "varlen"):  # real positions only: the same function
        model.token_layout = layout
        torch.testing.assert_close(predict(model, split), whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(predict(model, split, chunks=4), whole, atol=1e-5, rtol=1e-5)


def test_training_in_parts_keeps_logits_targets_and_rows_aligned():
    from test_trainer import Spy

    spec, data, info = smoke_task()
    noisy = noisy_labels(data)
    method = Spy(info, {})
    train(method, RunData(data.train, noisy, data.test), dataclasses.replace(SMOKE.budget, epochs=1), 30, Execution(length_chunks=4))
    rows = torch.cat([index for index, _ in method.seen])
    assert sorted(rows.tolist()) == list(range(len(data.train)))
    for index, targets in method.seen:
        torch.testing.assert_close(targets, noisy[index])
        assert torch.all(data.train.ehr_len[index].diff() >= 0)  # the harness really cut by length


def test_bucket_rounds_up_within_the_cap():
    assert [bucket(w, 512) for w in (1, 8, 9, 33, 100, 500)] == [8, 8, 16, 48, 128, 512]
    assert bucket(300, 200) == 200
    assert bucket(600, 2048) == 640
    assert list(BUCKETS) == sorted(BUCKETS)


def test_graph_keys_of_several_parts_take_few_values_and_never_cut_a_part():
    from benchmark.graphs import bucketed

    assert bucketed([(33, 20)], 512, 80) == ((48, 24),)
    assert bucketed([(33, 20, 5000)], 512, 80) == ((48, 24, 8192),)  # real positions: multiples of 4096
    parts = [(9, 3), (40, 70), (130, 12), (500, 80)]
    key = bucketed(parts, 512, 80)
    assert key == ((16, 80), (64, 80), (256, 80), (512, 80))
    assert all(k[0] >= p[0] and k[1] >= p[1] for k, p in zip(key, parts))
    # every batch whose parts fall in the same powers of two shares one graph
    assert bucketed([(12, 1), (33, 5), (129, 80), (300, 2)], 512, 80) == key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_graphs_of_one_run_share_one_memory_pool():
    """Capturing more graphs (other widths, other keys) must not add their step's memory each time:
    at full scale a pool per graph reserved 47-63 GB of an 80 GB card for one run."""
    device = torch.device("cuda")
    w = torch.randn(1024, 1024, device=device)

    def step(index, widths):
        x = torch.ones(widths[0], 1024, device=device) * (index[:1].float() + 1)
        return ((x @ w).relu() @ w).sum()  # temporaries of 32 MB, freed inside the capture

    steps = CapturedSteps(step, 4, device)
    index = torch.arange(4, device=device)
    step(index, (8192,))  # cuBLAS warm-up outside any capture
    torch.cuda.synchronize()
    before = torch.cuda.memory_reserved(device)
    steps(index, (8192,), "a")
    one = torch.cuda.memory_reserved(device) - before
    for key in "bcdefg":
        out = steps(index, (8192,), key)
    torch.cuda.synchronize()
    six_more = torch.cuda.memory_reserved(device) - before - one
    torch.testing.assert_close(out, step(index, (8192,)), rtol=1e-4, atol=0)
    assert six_more <= one, (one, six_more)


def test_graph_keys_carry_real_positions_only_for_a_model_that_packs_them():
    from benchmark.fastpath import graph_widths

    _, data, _ = smoke_task()
    split = data.train
    widths = [(9, 5, 3000)]
    ehr_w, note_w = bucket(9, split.max_ehr), bucket(5, split.max_note)
    assert graph_widths(widths, split, packs=False) == ((ehr_w, note_w),)  # M3Care, MedFuse, padded FlexCare
    # packed: every note padded to the split's longest, real positions rounded up to TOKEN_STEP
    assert graph_widths(widths, split, packs=True) == ((ehr_w, split.max_note, 4096),)
