"""Method submissions, found by name under ``methods/`` and validated before any work starts.

A submission is a folder ``methods/<name>/`` with ``manifest.yaml``, a Python module and a README.
``methods/`` is never an installed package: each folder is loaded from its path as a private package
(``ehrbench_methods.<name>_<digest of the folder's path>``, no ``__init__.py`` needed), so the entry
module may import its sibling modules relatively (``from .model import M3Care``).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError, choices_hint
from .hparams import validate as validate_hparams
from .yamlfile import read_yaml

if TYPE_CHECKING:
    from .method import Method

# The paper's methods. All have a submission in this version; one missing from the methods folder
# (e.g. another ``EHRBENCH_METHODS``) is reported as planned, not as unknown.
PLANNED = ("miracl", "focal", "asl", "gce", "mllsc", "multit", "m3care", "medfuse")

REQUIRED_FIELDS = {
    "name": str,
    "display_name": str,
    "version": str,
    "citation": str,
    "license": str,
    "backbone": str,
    "entry": str,
    "hparams": dict,
}


# The parent of every method package: a namespace that finds nothing by itself (``__path__`` empty).
PACKAGES = "ehrbench_methods"
_LOADED: dict[Path, str] = {}  # resolved folder -> the code hash its package in sys.modules was imported at
_LOAD_LOCK = threading.RLock()  # runs packed as threads load their method at once


def methods_dir() -> Path:
    """``$EHRBENCH_METHODS``, else ``methods/`` beside the ``benchmark`` package."""
    env = os.environ.get("EHRBENCH_METHODS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "methods"


@dataclass(frozen=True)
class MethodEntry:
    name: str
    folder: Path
    manifest: dict

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def hparams(self) -> dict:
        return self.manifest["hparams"]

    def code_hash(self) -> str:
        """sha256 over the folder's Python files: recorded, so changed code is visible."""
        h = hashlib.sha256()
        for f in sorted(self.folder.rglob("*.py")):
            h.update(f.relative_to(self.folder).as_posix().encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    def load_class(self) -> type[Method]:
        """The manifest's entry class, imported from the folder's private package. Within a process
        the same folder with the same code gives the same class; changed code is imported anew.
        Errors inside the method's code (syntax, imports) propagate with the method's file in their
        traceback; ``submission.validate`` turns them into one line."""
        from .method import Method  # only when a method is loaded, never to read manifests

        module_file, _, cls_name = self.manifest["entry"].partition(":")
        path = self.folder / module_file
        parts = Path(module_file).with_suffix("").parts
        if not path.is_file() or not cls_name or not module_file.endswith(".py") or not all(p.isidentifier() for p in parts):
            raise UsageError(f"{self.folder / 'manifest.yaml'}: entry '{self.manifest['entry']}' must be 'FILE.py:Class' with FILE.py in the folder")
        module = self.module(".".join(parts))
        cls = getattr(module, cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise UsageError(f"{path}: '{cls_name}' must be a subclass of benchmark.method.Method")
        return cls

    def module(self, name: str | None = None) -> types.ModuleType:
        """A module of the folder's package, imported on first use: the entry module by default, else
        ``name`` relative to the folder (``"model"`` is ``model.py``)."""
        name = name or Path(self.manifest["entry"].partition(":")[0]).with_suffix("").as_posix().replace("/", ".")
        with _LOAD_LOCK:
            return importlib.import_module(f"{self.package()}.{name}")

    def package(self) -> str:
        """The folder as a private package in ``sys.modules``: its name. Created once per folder and
        code (``code_hash``); when the code changed, the package and its modules are imported anew."""
        folder = self.folder.resolve()
        name = f"{PACKAGES}.{self.name}_{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"
        digest = self.code_hash()
        with _LOAD_LOCK:
            if _LOADED.get(folder) == digest and name in sys.modules:
                return name
            for stale in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[stale]
            importlib.invalidate_caches()  # files added since the last import are found
            root = sys.modules.get(PACKAGES)
            if root is None:
                root = sys.modules[PACKAGES] = types.ModuleType(PACKAGES, "Method folders, loaded by benchmark.registry.")
                root.__path__ = []
            init = folder / "__init__.py"
            if init.is_file():
                spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
            else:  # the folder needs no __init__.py: an empty package module stands in for it
                spec = importlib.machinery.ModuleSpec(name, None, origin=str(folder), is_package=True)
                spec.submodule_search_locations = [str(folder)]
            package = importlib.util.module_from_spec(spec)
            sys.modules[name] = package
            try:
                if spec.loader is not None:
                    spec.loader.exec_module(package)
            except BaseException:
                del sys.modules[name]
                raise
            setattr(root, name.rpartition(".")[2], package)
            _LOADED[folder] = digest
            return name


def code_line(error: BaseException, folder: Path) -> str | None:
    """``FILE:LINE`` of the innermost frame of ``error`` in a method's own code (its folder: the entry
    module or a sibling it imports), or None when none of its frames is there. A syntax error has
    no frame of the file: its own file and line."""
    if isinstance(error, SyntaxError):
        shown = in_folder(error.filename, folder)
        return f"{shown}:{error.lineno}" if shown else None
    where, tb = None, error.__traceback__
    while tb is not None:
        shown = in_folder(tb.tb_frame.f_code.co_filename, folder)
        if shown:
            where = f"{shown}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def in_folder(filename: str | None, folder: Path) -> Path | None:
    """``filename`` as a path under ``folder`` (as the user named the folder), None if outside."""
    inside = os.path.realpath(folder) + os.sep
    real = os.path.realpath(filename) if filename else ""
    return folder / real[len(inside):] if real.startswith(inside) else None


def read_manifest(folder: Path) -> dict:
    path = folder / "manifest.yaml"
    manifest = read_yaml(path, what="the manifest")
    if not isinstance(manifest, dict):
        raise UsageError(f"{path}: expected a mapping of fields, got {type(manifest).__name__}")
    for key, typ in REQUIRED_FIELDS.items():
        if key not in manifest:
            raise UsageError(f"{path}: missing field '{key}' ({typ.__name__})")
        if not isinstance(manifest[key], typ):
            raise UsageError(f"{path}: field '{key}' must be a {typ.__name__}, got {type(manifest[key]).__name__}")
    # Optional: whether the hyper-parameters were chosen separately per noise setting (the leaderboard says).
    if not isinstance(manifest.get("tuned_per_noise_setting", False), bool):
        raise UsageError(f"{path}: field 'tuned_per_noise_setting' must be true or false")
    if manifest["name"] != folder.name:
        raise UsageError(f"{path}: field 'name' is '{manifest['name']}' but the folder is '{folder.name}'")
    # Optional: with a schema, a malformed hyper-parameter is refused here, before any training.
    if "hparam_schema" in manifest:
        validate_hparams(manifest["name"], manifest["hparams"], manifest["hparam_schema"])
    return manifest


def available_methods() -> list[str]:
    root = methods_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.yaml").is_file() and not p.name.startswith("_"))


def get_method(name: str) -> MethodEntry:
    if not name:
        raise UsageError(f"no method given (e.g. METHOD=bce); available: {', '.join(available_methods())}")
    available = available_methods()
    if not methods_dir().is_dir():  # else every name would be "unknown", with no choices
        how = "EHRBENCH_METHODS" if os.environ.get("EHRBENCH_METHODS") else "methods/ beside the harness"
        raise UsageError(f"methods folder {methods_dir()} ({how}): no such folder, expected a folder of method "
                         f"submissions")
    if name not in available:
        if name in PLANNED:
            raise UsageError(
                f"method '{name}' is not available yet: it is planned but has no submission under "
                f"methods/ in this version; available now: {', '.join(available)}"
            )
        raise UsageError(f"unknown method '{name}'{choices_hint(name, available)}")
    folder = methods_dir() / name
    return MethodEntry(name=name, folder=folder, manifest=read_manifest(folder))
