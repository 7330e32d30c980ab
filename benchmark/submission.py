"""Checking a method submission before it is benchmarked: ``ehrbench methods validate NAME``.

Five checks, each problem one line naming the file and what is wrong:

1. **Manifest** (``registry.read_manifest`` plus the submission rules below): required fields and
   types, a declared ``hparam_schema`` the values pass, a known backbone, an accepted licence, a
   citation with a year.
2. **Harness boundaries, statically**: an AST walk of every ``.py`` file of the folder for what the
   harness owns: optimisers and schedules (``torch.optim``), data (``materialise``, ``load_task``,
   ``TensorCache``, data loaders, ``benchmark.data``), the test split (``.test``), file access
   (``open``, ``torch.save``, ...), network and processes (``socket``, ``requests``, ``subprocess``).
3. **Interface**: the entry class loads (syntax and import errors are reported, not raised), derives
   from ``benchmark.method.Method``, implements ``loss`` and keeps each hook's signature.
4. **Import hygiene and the same boundaries at run time**: importing the module and the smoke run
   happen inside a guard (a Python audit hook plus wrappers) that refuses network connections,
   processes and file writes outside a temporary run folder, and records any optimiser or schedule
   built outside the trainer and any call for the harness's data.
5. **Smoke run**: one epoch on the smoke track's ``syn-phe`` (160 stays), through the real trainer:
   the loss must be a finite scalar, what ``end_epoch`` returns must fit in a record and what
   ``suspicion`` returns (if anything) must be an [N, C] tensor of probabilities, scored as a run's
   would be (``benchmark/detection.py``). The trainable parameter count is reported.

The static check is a reviewer's aid, not a sandbox: a determined submission can hide from it, and
the runtime guard covers only what happens during the smoke run. Reviewers still read the code.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BenchError, choices_hint
from .registry import REQUIRED_FIELDS, MethodEntry, code_line, in_folder, methods_dir, read_manifest

BACKBONES = ("flexcare", "m3care", "medfuse", "own")
# SPDX identifiers of licences compatible with redistributing the code in this repository.
LICENSES = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "GPL-3.0-only",
            "GPL-3.0-or-later", "LGPL-3.0-or-later", "CC0-1.0", "Unlicense")
OPTIONAL_FIELDS = ("hparam_schema", "paper_url", "tuned_per_noise_setting")
_YEAR = re.compile(r"\b(19|20)\d\d\b")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# Static rules: (what is matched, the message). Dotted names are matched on the code's own spelling
# after resolving import aliases (``import torch.optim as o; o.SGD`` is ``torch.optim.SGD``).
_FORBIDDEN_PREFIXES = (
    ("torch.optim", "builds its own optimiser or schedule ({name}): the harness owns Adam, the learning rate and the schedule"),
    ("torch.utils.data", "builds a data loader ({name}): the harness owns batching and the data"),
    # benchmark.data covers its modules: loaders, generator, the tensor cache, ...
    ("benchmark.data", "reaches for the harness's data ({name}): a method sees only TaskInfo, batches and noisy labels"),
    ("benchmark.runner", "reaches for the harness's runner ({name}): a method sees only TaskInfo, batches and noisy labels"),
    # benchmark.data.evidence is under benchmark.data; the report of `noise show` holds the clean labels and the evidence.
    ("benchmark.noise_report", "reaches for the clean labels and the under-coding evidence ({name}): a method sees only "
                               "TaskInfo, batches and noisy labels"),
    ("benchmark.trainer", "reaches into the trainer ({name}): the harness owns the epochs and the evaluation"),
    ("benchmark.fastpath", "reaches into how the trainer's steps execute ({name}): the harness owns the epochs and "
                           "the evaluation"),
    ("benchmark.protocol.Budget", "reaches for the training budget ({name}): the harness owns the epochs"),
    ("socket", "uses the network ({name}): a method runs offline"),
    ("requests", "uses the network ({name}): a method runs offline"),
    ("urllib", "uses the network ({name}): a method runs offline"),
    ("http", "uses the network ({name}): a method runs offline"),
    ("subprocess", "starts processes ({name}): a method is one class in one process"),
    ("os.system", "starts processes ({name}): a method is one class in one process"),
    ("os.popen", "starts processes ({name}): a method is one class in one process"),
    ("torch.save", "writes files ({name}): a method writes nothing; what end_epoch returns goes into the record"),
    ("numpy.save", "writes files ({name}): a method writes nothing; what end_epoch returns goes into the record"),
    ("pickle.dump", "writes files ({name}): a method writes nothing; what end_epoch returns goes into the record"),
)
_FORBIDDEN_NAMES = {
    "open": "opens files (open()): a method reads and writes no files",
    "materialise": "reaches for the harness's data (materialise): a method sees only TaskInfo, batches and noisy labels",
    "load_task": "reaches for the harness's data (load_task): a method sees only TaskInfo, batches and noisy labels",
    "TensorCache": "reaches for the harness's data (TensorCache): a method sees only TaskInfo, batches and noisy labels",
    "DataLoader": "builds a data loader (DataLoader): the harness owns batching and the data",
    "exec": "runs generated code (exec()): reviewers must be able to read what runs",
    "eval": "runs generated code (eval()): reviewers must be able to read what runs",
    "__import__": "imports by computed name (__import__()): imports must be plain import statements",
}
_FORBIDDEN_ATTRS = {
    "test": "touches the test split (.test): the trainer alone evaluates",
    "test_split": "touches the test split (.test_split): the trainer alone evaluates",
    "write_text": "writes files (.write_text): a method writes nothing; what end_epoch returns goes into the record",
    "write_bytes": "writes files (.write_bytes): a method writes nothing; what end_epoch returns goes into the record",
    "to_csv": "writes files (.to_csv): a method writes nothing; what end_epoch returns goes into the record",
}

# Hooks of benchmark.method.Method and the arguments the trainer calls them with.
HOOKS = {
    "__init__": ("task", "hparams"),
    "build_model": (),
    "loss": ("logits", "targets", "index", "epoch"),
    "weight_decay": ("epoch",),
    "end_epoch": ("view",),
    "corrections": (),
    "suspicion": (),
    "capture_key": ("epoch",),
}
FLAGS = ("wants_train_logits", "wants_output", "capturable")


@dataclass
class Report:
    """What ``validate`` found: one line per problem, and facts of a passing smoke run."""

    name: str
    problems: list[str] = field(default_factory=list)
    parameters: int | None = None
    smoke: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


# --- 1. manifest -------------------------------------------------------------------------------

def check_manifest(folder: Path) -> tuple[dict | None, list[str]]:
    """The registry's checks (first problem only: they raise), then the submission rules."""
    path = folder / "manifest.yaml"
    try:
        manifest = read_manifest(folder)
    except BenchError as e:
        return None, [str(e)]
    problems = []
    for key in manifest:
        if key not in REQUIRED_FIELDS and key not in OPTIONAL_FIELDS:
            problems.append(f"{path}: unknown field '{key}'{choices_hint(str(key), [*REQUIRED_FIELDS, *OPTIONAL_FIELDS])}")
    if not _NAME.match(manifest["name"]):
        problems.append(f"{path}: name '{manifest['name']}' must be lower case letters, digits and '_', starting with a letter")
    if not manifest["display_name"].strip() or len(manifest["display_name"]) > 40:
        problems.append(f"{path}: display_name must be 1 to 40 characters (it heads a leaderboard column)")
    if not _VERSION.match(manifest["version"]):
        problems.append(f"{path}: version '{manifest['version']}' must be numbers separated by dots, e.g. \"1.0\"")
    if manifest["backbone"] not in BACKBONES:
        problems.append(f"{path}: unknown backbone '{manifest['backbone']}'{choices_hint(manifest['backbone'], BACKBONES)}"
                        " ('own' for a model of the method's own)")
    if manifest["license"] not in LICENSES:
        problems.append(f"{path}: license '{manifest['license']}' is not an accepted SPDX identifier{choices_hint(manifest['license'], LICENSES)}")
    citation = " ".join(manifest["citation"].split())
    if len(citation) < 20 or not _YEAR.search(citation):
        problems.append(f"{path}: citation must name authors, title, venue and year (got '{citation[:40]}')")
    if "paper_url" in manifest and not (isinstance(manifest["paper_url"], str) and manifest["paper_url"].startswith("https://")):
        problems.append(f"{path}: paper_url must be an https:// address")
    if "hparam_schema" not in manifest:
        problems.append(f"{path}: missing field 'hparam_schema': declare each hyper-parameter's type and range "
                        "(an empty mapping {} when there are none)")
    entry = manifest["entry"]
    if not re.match(r"^[\w/]+\.py:[A-Za-z_]\w*$", entry) or not (folder / entry.partition(":")[0]).is_file():
        problems.append(f"{path}: entry '{entry}' must be 'FILE.py:Class' with FILE.py in the folder")
    return manifest, problems


# --- 2. static boundaries ----------------------------------------------------------------------

def check_source(folder: Path) -> list[str]:
    """AST rules over every Python file of the folder; a syntax error is one line too."""
    problems = []
    for path in sorted(folder.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError as e:
            problems.append(f"{path}:{e.lineno}: syntax error: {e.msg}")
            continue
        problems += [f"{path}:{line}: {message}" for line, message in _walk(tree)]
    return problems


def _walk(tree: ast.AST) -> list[tuple[int, str]]:
    aliases: dict[str, str] = {}  # local name -> dotted origin
    found: dict[str, tuple[int, str]] = {}  # rule -> (first line, message): one line per rule broken

    def hit(message: str, node: ast.AST, rule: str | None = None) -> None:
        found.setdefault(rule or message, (node.lineno, message))

    def dotted(node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def check_name(name: str, node: ast.AST) -> None:
        for prefix, message in _FORBIDDEN_PREFIXES:
            if name == prefix or name.startswith(prefix + "."):
                hit(message.format(name=name), node, rule=message)
                return
        if name.rsplit(".", 1)[-1] in ("materialise", "load_task", "TensorCache", "DataLoader"):
            hit(_FORBIDDEN_NAMES[name.rsplit(".", 1)[-1]], node)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
                check_name(a.name, node)
        elif isinstance(node, ast.ImportFrom) and (node.module or node.level):
            # A relative import names a module of the method's own folder (checked as a file of its
            # own): its dotted origin keeps the leading dots, so it never matches a harness rule.
            origin = "." * node.level + (node.module or "")
            for a in node.names:
                aliases[a.asname or a.name] = f"{origin}.{a.name}" if node.module else origin + a.name
                check_name(aliases[a.asname or a.name], node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name:
                check_name(name, node)
            if node.attr in _FORBIDDEN_ATTRS:
                hit(_FORBIDDEN_ATTRS[node.attr], node)
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES and isinstance(node.ctx, ast.Load):
            if node.id in aliases and not aliases[node.id].endswith(node.id):
                continue
            hit(_FORBIDDEN_NAMES[node.id], node)
    return sorted(found.values())


# --- 3. interface ------------------------------------------------------------------------------

def check_interface(cls: type, where: str) -> list[str]:
    from .method import Method

    problems = []
    if cls.loss is Method.loss:
        problems.append(f"{where}: class {cls.__name__} does not implement loss(self, logits, targets, index, epoch)")
    for hook, args in HOOKS.items():
        impl = getattr(cls, hook)
        if impl is getattr(Method, hook):
            continue
        extra = {"output": None} if hook == "loss" and cls.wants_output is True else {}
        try:
            inspect.signature(impl).bind(None, *args, **extra)
        except TypeError:
            wanted = ", ".join(("self", *args, *(f"{k}=..." for k in extra)))
            problems.append(f"{where}: {cls.__name__}.{hook} must accept ({wanted}), got {hook}{inspect.signature(impl)}")
        except ValueError:
            pass  # no signature to read (a builtin): the smoke run will tell
    for flag in FLAGS:
        if not isinstance(getattr(cls, flag), bool):
            problems.append(f"{where}: {cls.__name__}.{flag} must be True or False, got {getattr(cls, flag)!r}")
    return problems


# --- 4. runtime guard --------------------------------------------------------------------------

class Refused(PermissionError):
    """What the guard raises into the method; the guard's own line reports it."""


class Guard:
    """While active (in the thread that entered it): no network, no processes, no file writes outside
    ``run_dir``; optimisers, schedules and data access outside the harness are recorded."""

    _active: "Guard | None" = None
    _hook_installed = False

    def __init__(self, run_dir: Path):
        self.run_dir = os.path.realpath(run_dir)
        self.violations: list[str] = []
        self.thread = threading.get_ident()

    def note(self, message: str) -> None:
        if message not in self.violations:
            self.violations.append(message)

    @classmethod
    def _audit(cls, event: str, args: tuple) -> None:
        guard = cls._active
        if guard is None or threading.get_ident() != guard.thread:
            return
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int) or path is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing:
                real = os.path.realpath(os.fsdecode(path))
                if not (real == guard.run_dir or real.startswith(guard.run_dir + os.sep) or real.startswith("/dev/")):
                    guard.note(f"writes a file outside its run folder ({real})")
                    raise Refused(f"the harness refuses writes outside the run folder: {real}")
        elif event in ("socket.connect", "socket.getaddrinfo", "socket.bind"):
            guard.note(f"opens a network connection ({event} {args[1] if len(args) > 1 else ''})")
            raise Refused("the harness refuses network access during validation")
        elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork"):
            guard.note(f"starts a process ({event})")
            raise Refused("the harness refuses new processes during validation")

    @contextlib.contextmanager
    def active(self):
        import torch

        from . import data, runner
        from .data import cache

        if not Guard._hook_installed:
            sys.addaudithook(Guard._audit)
            Guard._hook_installed = True
        saved = {}

        def wrap(owner, attr, message):
            original = getattr(owner, attr)
            saved[(owner, attr)] = original

            def refused(*a, **kw):
                self.note(message)
                raise Refused(message)
            setattr(owner, attr, refused)

        def outside_harness(owner, attr, what):
            original = getattr(owner, attr)
            saved[(owner, attr)] = original
            # The trainer builds the schedule, the fast path Adam (whose form depends on the device).
            harness = tuple(os.sep + os.path.join("benchmark", f) for f in ("trainer.py", "fastpath.py"))

            def init(obj, *a, **kw):
                frame = sys._getframe(1)
                while frame and os.sep + os.path.join("torch", "optim") in frame.f_code.co_filename:
                    frame = frame.f_back
                if frame and not frame.f_code.co_filename.endswith(harness):
                    self.note(f"builds its own {what} ({type(obj).__name__}): the harness owns Adam, the learning rate and the schedule")
                return original(obj, *a, **kw)
            setattr(owner, attr, init)

        for owner, attr in ((data, "materialise"), (runner, "load_task"), (runner, "_load_task"), (cache.TensorCache, "load")):
            wrap(owner, attr, f"reaches for the harness's data ({attr}) at run time")
        outside_harness(torch.optim.Optimizer, "__init__", "optimiser")
        outside_harness(torch.optim.lr_scheduler.LRScheduler, "__init__", "learning-rate schedule")
        cwd, bytecode = os.getcwd(), sys.dont_write_bytecode
        # scikit-learn's joblib counts physical cores once by running lscpu: a library's process, not
        # the method's. Counted here, before the guard, its cached answer serves the smoke run.
        with contextlib.suppress(Exception):
            import joblib

            joblib.cpu_count(only_physical_cores=True)
        os.chdir(self.run_dir)
        sys.dont_write_bytecode = True
        Guard._active = self
        try:
            yield self
        finally:
            Guard._active = None
            os.chdir(cwd)
            sys.dont_write_bytecode = bytecode
            for (owner, attr), original in saved.items():
                setattr(owner, attr, original)


# --- 5. smoke run ------------------------------------------------------------------------------

SMOKE_TASK, SMOKE_NOISE, SMOKE_SEED = "syn-phe", "sym-40", 30


def smoke_inputs():
    """The smoke task's data and noisy labels, prepared before the guard is entered."""
    import torch

    from .noise import make_noisy
    from .protocol import SMOKE, parse_noise
    from .runner import load_task

    spec = SMOKE.task(SMOKE_TASK)
    data = load_task(spec)
    noisy = make_noisy(data.train.labels.numpy(), parse_noise(SMOKE_NOISE), SMOKE_SEED)
    return spec, data, torch.from_numpy(noisy.labels).float()


def _scalar_loss(method, problems: list[str]):
    """Wrap ``method.loss`` so that a non-scalar or non-tensor result is one clear line."""
    import torch

    inner = method.loss

    def loss(*a, **kw):
        out = inner(*a, **kw)
        if not isinstance(out, torch.Tensor) or out.dim() != 0 or not out.requires_grad:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            message = f"loss must return a scalar tensor with a gradient (reduce by mean), got {shape}"
            if message not in problems:
                problems.append(message)
            raise _BadLoss(message)
        return out
    method.loss = loss


class _BadLoss(Exception):
    pass


def smoke_run(entry: MethodEntry, cls: type, info, data, noisy, spec, report: Report) -> None:
    from .backbones.flexcare import count_parameters
    from .errors import RunFailed
    from .protocol import SMOKE
    from .detection import scorer
    from .options import Execution
    from .trainer import RunData, train

    where = f"{entry.folder / entry.manifest['entry'].partition(':')[0]}: smoke run (1 epoch on smoke/{SMOKE_TASK})"
    problems: list[str] = []
    start = time.perf_counter()
    try:
        method = cls(info, dict(entry.hparams))
        report.parameters = count_parameters(method.build_model())
        _scalar_loss(method, problems)
        result = train(method, RunData(data.train, noisy, data.test, spec.task_weight),
                       dataclasses.replace(SMOKE.budget, epochs=1), SMOKE_SEED,
                       Execution(precision="fp32", cuda_graphs="off"),
                       score_suspicion=scorer(data.train.labels, noisy))  # a malformed suspicion fails here
    except _BadLoss:
        report.problems += [f"{where}: {p}" for p in problems]
        return
    except RunFailed as e:
        report.problems.append(f"{where}: {e}")
        return
    except Refused:
        return  # the guard's line says what was refused
    except Exception as e:  # the method's own bug: one line, the exception's first line
        first = (str(e).strip().splitlines() or [""])[0]
        report.problems.append(f"{where}: {type(e).__name__}: {first}")
        return
    try:
        json.dumps(result.curve, allow_nan=False)
    except (TypeError, ValueError) as e:
        report.problems.append(f"{where}: end_epoch must return None or a dict of plain numbers and strings ({e})")
        return
    report.smoke = f"mAP {result.final['map']:.3f} in {time.perf_counter() - start:.1f}s"


# --- all of it ---------------------------------------------------------------------------------

def validate(name: str, smoke: bool = True) -> Report:
    """Every check on ``methods/<name>/``; never raises for a problem of the submission."""
    folder = methods_dir() / name
    report = Report(name)
    if not (folder / "manifest.yaml").is_file():
        report.problems.append(f"{folder}: no manifest.yaml (start from `make new-method NAME={name}`)")
        return report
    if not (folder / "README.md").is_file():
        report.problems.append(f"{folder}: no README.md (what the method does, its decisions, its citation)")
    manifest, problems = check_manifest(folder)
    report.problems += problems
    source_problems = check_source(folder)
    report.problems += source_problems
    if manifest is None or any("syntax error" in p for p in source_problems) or any("entry '" in p for p in problems):
        return report
    entry = MethodEntry(name=name, folder=folder, manifest=manifest)
    module_file = folder / manifest["entry"].partition(":")[0]
    spec = data = noisy = info = None
    if smoke:
        from .method import TaskInfo
        from .protocol import SMOKE

        spec, data, noisy = smoke_inputs()
        info = TaskInfo(spec.name, spec.kind, spec.num_labels, len(data.train), data.train.ehr.shape[-1],
                        data.note_dim, tuple(data.label_names), SMOKE.backbone)
    with tempfile.TemporaryDirectory(prefix=f"ehrbench-validate-{name}-") as run_dir:
        guard = Guard(Path(run_dir))
        with guard.active():
            cls = _load(entry, module_file, report)
            if cls is not None:
                interface = check_interface(cls, str(module_file))
                report.problems += interface
                if smoke and not interface:
                    smoke_run(entry, cls, info, data, noisy, spec, report)
        report.problems += [f"{module_file}: at run time: {v}" for v in guard.violations]
    return report  # writes inside the run folder were allowed; the folder is gone with them


def _load(entry: MethodEntry, module_file: Path, report: Report) -> type | None:
    try:
        return entry.load_class()
    except BenchError as e:
        report.problems.append(str(e))
    except Refused:
        pass  # the guard's line says what was refused
    except SyntaxError as e:
        report.problems.append(f"{in_folder(e.filename, entry.folder) or module_file}:{e.lineno}: syntax error: {e.msg}")
    except ImportError as e:
        report.problems.append(f"{_where(e, entry.folder, module_file)}: import failed: {type(e).__name__}: {e}")
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        report.problems.append(f"{_where(e, entry.folder, module_file)}: importing the module raised {type(e).__name__}: {first}")
    return None


def _where(error: BaseException, folder: Path, module_file: Path) -> str:
    """``FILE:LINE`` of the method's own code that raised ``error``, else the entry module."""
    return code_line(error, folder) or str(module_file)


# --- scaffold ----------------------------------------------------------------------------------

TEMPLATE = "_template"


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) or "Method"


def scaffold(name: str, tests_dir: Path | None = None) -> list[Path]:
    """``methods/<name>/`` (manifest, method, README) and ``tests/test_method_<name>.py`` from the
    template under ``methods/_template/``. Refuses an existing method or a malformed name."""
    from .errors import UsageError

    root = methods_dir()
    if not _NAME.match(name or ""):
        raise UsageError(f"method name '{name}' must be lower case letters, digits and '_', starting with a letter (e.g. NAME=my_loss)")
    target = root / name
    if target.exists():
        raise UsageError(f"{target} already exists; pick another NAME or edit it")
    template = Path(__file__).resolve().parent.parent / "methods" / TEMPLATE
    values = {"{{name}}": name, "{{Class}}": class_name(name)}
    tests = tests_dir or Path(__file__).resolve().parent.parent / "tests"
    if (tests / f"test_method_{name}.py").exists():
        raise UsageError(f"{tests / f'test_method_{name}.py'} already exists; pick another NAME")
    written = []
    target.mkdir(parents=True)
    tests.mkdir(parents=True, exist_ok=True)
    for src in sorted(template.iterdir()):
        if src.suffix != ".tmpl":
            continue
        text = src.read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        stem = src.name.removesuffix(".tmpl")
        dest = tests / f"test_method_{name}.py" if stem == "test_method.py" else target / stem
        if dest.exists():
            raise UsageError(f"{dest} already exists")
        dest.write_text(text)
        written.append(dest)
    return written
