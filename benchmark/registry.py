"""Method submissions, found by name under ``methods/`` and validated before any work starts.

A submission is a folder ``methods/<name>/`` with ``manifest.yaml``, a Python module and a README.
Folders are loaded by file path: ``methods/`` is never an installed package.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .errors import UsageError, choices_hint
from .hparams import validate as validate_hparams

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
        from .method import Method  # torch: only when a method is loaded, never to read manifests

        module_file, _, cls_name = self.manifest["entry"].partition(":")
        path = self.folder / module_file
        if not path.is_file() or not cls_name:
            raise UsageError(f"{self.folder / 'manifest.yaml'}: entry '{self.manifest['entry']}' must be 'FILE.py:Class' with FILE.py in the folder")
        spec = importlib.util.spec_from_file_location(f"ehrbench_methods.{self.name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = getattr(module, cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise UsageError(f"{path}: '{cls_name}' must be a subclass of benchmark.method.Method")
        return cls


def read_yaml(path: Path, where: str | None = None, what: str = ""):
    """The parsed YAML file, or one line naming ``where`` (default: the path) and what went wrong."""
    where = where or str(path)
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"{where}: cannot read{' ' + what if what else ''} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None


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
    if name not in available:
        if name in PLANNED:
            raise UsageError(
                f"method '{name}' is not available yet: it is planned but has no submission under "
                f"methods/ in this version; available now: {', '.join(available)}"
            )
        raise UsageError(f"unknown method '{name}'{choices_hint(name, available)}")
    folder = methods_dir() / name
    return MethodEntry(name=name, folder=folder, manifest=read_manifest(folder))
