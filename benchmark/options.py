"""How a grid executes: one ``Execution`` object, built once from the CLI, resolved once, passed whole.

None of these switches is part of a run's spec (its id): they change how fast a run goes, where it
runs and what fills its timings, never the protocol. Each record's ``environment`` says how it ran.
The CLI's flags are generated from the fields below (``add_arguments``/``from_args``), so a new
switch is one field here, and no function passes the switches one by one.

``resolved`` is the one place where ``auto`` becomes a choice:
- ``device``: ``cuda`` when a CUDA device is visible, else ``cpu``.
- ``jobs``: ``runs_per_gpu`` if given, else one single-threaded worker per core on CPU (at most 8),
  one on a GPU; never more than the grid has runs.
- ``packing``: threads on a GPU (kernels of runs overlap on the device, ``packing.py``), processes on CPU.
- ``precision``: bf16 autocast on CUDA, fp32 on CPU.
- ``cuda_graphs``: on for CUDA (used only by methods that declare ``capturable``), off on CPU.
- ``token_layout``: varlen on CUDA, padded on CPU (CPU results stay comparable with those recorded
  before the switch existed).
- ``compile`` is not resolved: ``off`` unless asked for. Compiling draws other random numbers (the same
  function, other dropout masks and bf16 roundings), so a run's number depends on it; with ``auto``
  (harness < 0.3.0: on for four or more runs on a GPU) a published cell depended on the grid's size.
  Measured in docs/reliability.md ("A cell across seeds and execution modes").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PACKINGS = ("auto", "threads", "processes")
PRECISIONS = ("auto", "bf16", "fp32")
CUDA_GRAPHS = ("auto", "on", "off")
TOKEN_LAYOUTS = ("auto", "padded", "packed", "varlen")
COMPILES = ("off", "on")
EXECUTORS = ("local", "local-gpus", "slurm", "submitit-local")




def _switch(default, help: str, choices: tuple | None = None, kind: str = "str", metavar: str | None = None):
    return field(default=default, metadata={"help": help, "choices": choices, "kind": kind, "metavar": metavar})


@dataclass(frozen=True)
class Execution:
    """The execution switches of a bench (see the module docstring for what ``auto`` resolves to)."""

    device: str = _switch("auto", "auto, cpu, cuda or cuda:N", kind="device")
    jobs: int = _switch(0, "worker processes (default: one per CPU core on CPU, 1 on GPU)", kind="count")
    runs_per_gpu: int = _switch(0, "on a GPU, run this many runs of the grid concurrently (they share the device)",
                                kind="count")
    packing: str = _switch("auto", "how concurrent runs share the machine: auto = threads on a GPU (one CUDA "
                           "stream each, kernels overlap), processes on CPU", PACKINGS)
    precision: str = _switch("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", PRECISIONS)
    cuda_graphs: str = _switch("auto", "auto (= on for CUDA): replay full-batch training steps from CUDA graphs "
                               "(methods that allow it)", CUDA_GRAPHS)
    length_chunks: int | None = _switch(None, "cut each batch into K length-sorted parts, each padded to its own "
                                        "longest stay (default 1; results do not depend on it)", kind="positive",
                                        metavar="K")
    token_layout: str = _switch("auto", "FlexCare over the padded batch, or over its real positions only: "
                                "position-wise layers (packed) or those and attention too (varlen); same function, "
                                "4-5x fewer positions at full scale; auto = varlen on CUDA, padded on CPU",
                                TOKEN_LAYOUTS)
    compile: str = _switch("off", "torch.compile the model with symbolic shapes: fewer, fused kernels per step; "
                           "the first run pays the compilation (~150 s on an H200 at full scale), the later runs of "
                           "the same process reuse it (about 30 s each against 52 s). Same function, other random "
                           "draws: the record says which, and the tables keep compiled runs apart. Default off",
                           COMPILES)
    forensics: str = _switch("", "on a non-finite loss, replay the failing epoch eagerly and take its first bad step "
                             "apart (anomaly mode, module outputs, fp32 and math-attention variants): a report, the "
                             "weights and the batch in DIR/<run id>/ (benchmark/forensics.py); costs one copy of the "
                             "weights per epoch", metavar="DIR")
    executor: str = _switch("local", "local: this process (default); local-gpus: one worker per visible GPU, "
                            "--runs-per-gpu runs on each; slurm: a submitit job array, one run per task; "
                            "submitit-local: the same through submitit's local backend, one subprocess per run "
                            "(docs/scale-out.md)", EXECUTORS)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices, value = f.metadata["choices"], getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {value!r}")

    def replace(self, **changes) -> Execution:
        return dataclasses.replace(self, **changes)

    def resolved(self, runs: int = 1) -> Execution:
        """Every ``auto`` replaced by what it means for ``runs`` runs of one grid on this machine.
        Resolving a resolved object changes nothing."""
        device = resolve_device(self.device)
        cuda = device.startswith("cuda")
        jobs = min(self.jobs or self.runs_per_gpu or (1 if cuda else default_cpu_jobs()), max(1, runs))
        auto = {
            "packing": "threads" if cuda else "processes",
            "precision": "bf16" if cuda else "fp32",
            "cuda_graphs": "on" if cuda else "off",
            "token_layout": "varlen" if cuda else "padded",
        }
        return self.replace(device=device, jobs=jobs, **{k: v if getattr(self, k) == "auto" else getattr(self, k)
                                                          for k, v in auto.items()})

    def describe(self, packed: int = 1, capturable: bool = True) -> dict:
        """What a run's record states about how it executed (resolved values)."""
        return {"precision": self.precision,
                "cuda_graphs": self.cuda_graphs if self.device.startswith("cuda") and capturable else "off",
                "length_chunks": self.length_chunks or 1,
                "token_layout": self.token_layout,
                "compile": self.compile,
                # Runs sharing the device at once: timings then include the others' contention,
                # and the peak memory is the device's, all of them together.
                "packed_runs": packed}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; a CUDA device that is not there is a usage error."""
    from .errors import UsageError

    if name == "cpu":
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is visible")
    return name


def default_cpu_jobs() -> int:
    """CPU: one single-threaded worker per core (small models scale better so), at most 8."""
    import os

    return max(1, min(os.cpu_count() or 1, 8))


# --- the CLI's flags, generated from the fields ---------------------------------------------------

DEVICE_RE = r"auto|cpu|cuda(:\d+)?"


def device_name(text: str) -> str:
    import argparse
    import re

    if not re.fullmatch(DEVICE_RE, text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def positive_int(text: str, least: int = 1) -> int:
    import argparse

    if not text.strip().isdigit() or int(text) < least:
        raise argparse.ArgumentTypeError(f"expected a {'positive' if least else 'non-negative'} integer, got {text!r}")
    return int(text)


def count(text: str) -> int:
    """0 (the default: chosen for the device) or a positive number."""
    return positive_int(text, least=0)


TYPES = {"device": device_name, "count": count, "positive": positive_int}

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser, include: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> None:
    """One flag per field of ``Execution`` (``--cuda-graphs`` for ``cuda_graphs``), its default the
    field's: those in ``include`` (default all) less those in ``exclude``, in field order."""
    for f in dataclasses.fields(Execution):
        if f.name in exclude or (include is not None and f.name not in include):
            continue
        meta = f.metadata
        kwargs = {"default": f.default, "help": meta["help"]}
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta["kind"] != "str":
            kwargs["type"] = TYPES[meta["kind"]]
        parser.add_argument(_flag(f.name), dest=f.name, **kwargs)


def from_args(args) -> Execution:
    """The ``Execution`` the parsed flags ask for (fields absent from ``args`` keep their defaults)."""
    return Execution(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Execution) if hasattr(args, f.name)})
