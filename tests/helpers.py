"""Shared builders for tests: the smoke track's tiny task and a method on it."""
import numpy as np
import torch

from benchmark.backbones.flexcare import Batch
from benchmark.method import TaskInfo
from benchmark.noise import make_noisy
from benchmark.protocol import SMOKE, parse_noise
from benchmark.runner import load_task


def smoke_task(name="syn-phe"):
    spec = SMOKE.task(name)
    data = load_task(spec)
    info = TaskInfo(spec.name, spec.kind, spec.num_labels, len(data.train), data.train.ehr.shape[-1],
                    data.train.note.shape[-1], tuple(data.label_names), SMOKE.backbone)
    return spec, data, info


def make_batch(b=6, t=10, n=7, note_dim=24, ehr_len=None, note_len=None, seed=0):
    """A random padded batch; entries beyond each length are zero, length 0 = missing."""
    g = torch.Generator().manual_seed(seed)
    ehr_len = torch.tensor(ehr_len if ehr_len is not None else [t] * b)
    note_len = torch.tensor(note_len if note_len is not None else [n] * b)
    ehr = torch.randn(b, t, 76, generator=g) * (torch.arange(t)[None, :, None] < ehr_len[:, None, None])
    note = torch.randn(b, n, note_dim, generator=g) * (torch.arange(n)[None, :, None] < note_len[:, None, None])
    return Batch(ehr=ehr, ehr_len=ehr_len, note=note, note_len=note_len, patient_id=torch.arange(b))


def with_note_rows(batch, capacity):
    """``batch`` with its notes as their real tokens only (``Batch.note_rows``), in ``capacity`` slots,
    gathered as ``Split.batch(..., note_rows=True)`` gathers them from a split's flat note array."""
    import dataclasses

    from benchmark.data import split

    device = batch.note.device
    real = torch.arange(batch.note.shape[1], device=device)[None, :] < batch.note_len[:, None]
    flat = torch.cat([batch.note[real], batch.note.new_zeros(1, batch.note.shape[-1])])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), batch.note_len.cumsum(0)])
    rows, _ = split._rows(flat, offsets, torch.arange(len(batch.note_len), device=device), batch.note.shape[1],
                          capacity)
    return dataclasses.replace(batch, note=None, note_rows=rows, tokens=capacity)


def batch_rows(batch, rows):
    """The samples ``rows`` of a batch, in that order."""
    return Batch(batch.ehr[rows], batch.ehr_len[rows], batch.note[rows], batch.note_len[rows], batch.patient_id[rows])


def assert_padding_is_ignored(model, note_dim=24):
    """Random values beyond each sample's lengths (series and note) leave ``model``'s logits unchanged."""
    short = make_batch(b=3, t=6, n=5, note_dim=note_dim, ehr_len=[6, 3, 0], note_len=[5, 2, 4])
    long = Batch(torch.cat([short.ehr, torch.randn(3, 4, 76)], 1), short.ehr_len,
                 torch.cat([short.note, torch.randn(3, 3, note_dim)], 1), short.note_len, short.patient_id)
    torch.testing.assert_close(model(short).logits, model(long).logits, atol=1e-5, rtol=1e-5)
    return short


def noisy_labels(data, noise="sym-40"):
    return torch.from_numpy(make_noisy(data.train.labels.numpy(), parse_noise(noise), 123).labels).float()


def assert_rows_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def method_module(name):
    """A submission's entry module (``methods/<name>/method.py``), imported as the registry imports it
    (the folder's private package): the module the registry's class comes from."""
    from benchmark.registry import get_method

    return get_method(name).module()


def method_instance(name, info, **override):
    """The submission's class built with its manifest hparams, ``override`` applied."""
    from benchmark.registry import get_method

    entry = get_method(name)
    return entry.load_class()(info, {**entry.hparams, **override})


def bimodal_scores(n, c, seed=0, prevalence=0.18):
    """Selection-score-like data: [N, C] scores in [0, 1], each (label, observed class) group a
    mixture of a large low-score ("clean") and a smaller high-score ("noisy") Gaussian with random
    means, spreads and shares, and [N, C] observed labels at the phenotyping prevalence."""
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi, *shape: lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    labels = (torch.rand(n, c, generator=g) < prevalence).long()
    low, high = u(0.15, 0.4, 2, c), u(0.5, 0.75, 2, c)  # [observed class, label]
    spread_low, spread_high = u(0.05, 0.12, 2, c), u(0.05, 0.12, 2, c)
    share_high = u(0.1, 0.4, 2, c)
    pick = lambda t: torch.where(labels == 1, t[1], t[0])  # noqa: E731
    is_high = torch.rand(n, c, generator=g, dtype=torch.float64) < pick(share_high)
    noise = torch.randn(n, c, generator=g, dtype=torch.float64)
    scores = torch.where(is_high, pick(high) + pick(spread_high) * noise, pick(low) + pick(spread_low) * noise)
    return scores.clamp(0, 1), labels


def smoke_run(method, results):
    """``ehrbench bench`` of ``method`` on the smoke track (both tasks, sym-40, seed 30) in a fresh
    process: its stdout and run records, after checking that every run finished."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "benchmark", "bench", "--method", method, "--track", "smoke",
                           "--device", "cpu", "--jobs", "1", "--noise", "sym-40", "--seeds", "30",
                           "--results", str(results)], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert "track smoke / task syn-phe" in proc.stdout and "track smoke / task syn-dia" in proc.stdout
    records = [json.loads(p.read_text()) for p in Path(results).rglob("*.json")]
    assert all(r["status"] == "done" for r in records)
    return proc.stdout, records


def compile_failing_with(message):
    """A stand-in for ``torch.compile`` whose compiled model raises what Inductor raises on a compiler
    bug, naming ``message``."""
    def compile(model, **kwargs):
        def call(*args):
            raise torch._dynamo.exc.BackendCompilerFailed("inductor", RuntimeError(message), None)
        return call
    return compile


def changed(mapping: dict, **changes) -> dict:
    """A deep copy of ``mapping`` with ``changes`` applied: a value replaces the field, None removes it
    (for broken manifests and task cards)."""
    import copy

    out = copy.deepcopy(mapping)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out
