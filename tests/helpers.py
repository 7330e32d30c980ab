"""Shared builders for tests: the smoke track's tiny task and a method on it."""
import numpy as np
import torch

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


def noisy_labels(data, noise="sym-40"):
    return torch.from_numpy(make_noisy(data.train.labels.numpy(), parse_noise(noise), 123).labels).float()


def assert_rows_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def method_module(name):
    """A submission's module (``methods/<name>/method.py``), loaded by path as the registry does."""
    import importlib.util

    from benchmark.registry import get_method

    entry = get_method(name)
    path = entry.folder / entry.manifest["entry"].partition(":")[0]
    spec = importlib.util.spec_from_file_location(f"tests_methods.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def method_instance(name, info, **override):
    """The submission's class built with its manifest hparams, ``override`` applied."""
    from benchmark.registry import get_method

    entry = get_method(name)
    return entry.load_class()(info, {**entry.hparams, **override})
