"""CPU benchmarks (pytest-benchmark), run by `make perf`, never by `make test`."""
import dataclasses
import tempfile

import torch

from benchmark.data import materialise
from benchmark.data.cache import TensorCache
from benchmark.method import TaskInfo
from benchmark.noise import make_noisy
from benchmark.protocol import QUICK, parse_noise
from benchmark.registry import get_method
from benchmark.trainer import RunData, train


def test_quick_track_preparation(benchmark):
    """Generation + files + discretisation + MiniLM note encoding of the quick task (target <= 60 s)."""
    spec = QUICK.task("syn-phe")
    benchmark.pedantic(lambda: materialise(spec, TensorCache(tempfile.mkdtemp()), rebuild=True), rounds=1, iterations=1)


def test_quick_track_one_epoch_of_bce(benchmark):
    """One training epoch + evaluation of BCE on the quick task, as `make bench` runs it."""
    spec = QUICK.task("syn-phe")
    data = materialise(spec)
    entry = get_method("bce")
    info = TaskInfo(spec.name, spec.kind, spec.num_labels, len(data.train), 76, data.note_dim,
                    tuple(data.label_names), QUICK.backbone)
    noisy = torch.from_numpy(make_noisy(data.train.labels.numpy(), parse_noise("sym-20"), 123).labels).float()
    budget = dataclasses.replace(QUICK.budget, epochs=1)
    benchmark.pedantic(lambda: train(entry.load_class()(info, entry.hparams), RunData(data.train, noisy, data.test), budget, 30),
                       rounds=3, iterations=1)
