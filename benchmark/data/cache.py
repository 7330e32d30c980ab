"""The tensor cache: materialised task arrays on disk, memory-mapped, with a manifest.

``<cache>/tasks/<task>-<key>/`` holds one ``.npy`` per array and ``manifest.json`` (the key's inputs,
each array's shape, dtype and sha256, and the content fingerprint = hash of those). An entry is
written to a temporary folder and renamed into place, so a half-written entry is never seen. On load
every array is checked against the manifest; a corrupt entry is reported, removed and rebuilt.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UsageError

CACHE_VERSION = 1


def cache_root() -> Path:
    env = os.environ.get("EHRBENCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ehrbench"


def sha256_array(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


class CacheCorrupt(Exception):
    pass


def _named(root: Path) -> str:
    """The cache root as the user chose it (or did not)."""
    how = "EHRBENCH_CACHE" if os.environ.get("EHRBENCH_CACHE") else "the default; EHRBENCH_CACHE chooses another"
    return f"tensor cache {root} ({how})"


def unwritable(root: Path, e: OSError | None = None, sub: str = "tasks") -> UsageError | None:
    """Why entries cannot be written under ``root``/``sub`` (a file in the way, a read-only folder,
    ``e`` from a write), or None. A read-only cache still serves the entries it holds."""
    folder = root / sub
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        which = "" if existing == root else f"{existing} "
        return UsageError(f"{_named(root)}: {which}is a file, expected a folder; point EHRBENCH_CACHE at a "
                          f"writable folder")
    if e is None and not os.access(existing, os.W_OK):
        return UsageError(f"{_named(root)}: {existing} is not writable, and the task is not built there yet; "
                          f"point EHRBENCH_CACHE at a writable folder")
    if e is not None:
        return UsageError(f"{_named(root)}: cannot write ({e.strerror or e}); point EHRBENCH_CACHE at a writable "
                          f"folder with free space")
    return None


@contextlib.contextmanager
def writing(root: Path, sub: str):
    """Writes under ``root``/``sub``: checked first, and an OSError while writing is one line naming the cache."""
    problem = unwritable(root, sub=sub)
    if problem:
        raise problem
    try:
        yield
    except OSError as e:
        raise unwritable(root, e, sub) from None


def built_folder(root: Path, folder: Path, fill) -> Path:
    """``folder`` of the cache under ``root``, made once: ``fill(tmp)`` writes into a temporary folder,
    which is renamed into place when it is complete, so a reader never sees half a task."""
    if (folder / ".complete").exists():
        return folder
    with writing(root, "files"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            fill(tmp)
            (tmp / ".complete").write_text("")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


class TensorCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()

    def entry(self, name: str, key: str) -> Path:
        return self.root / "tasks" / f"{name}-{key[:16]}"

    @contextlib.contextmanager
    def lock(self, name: str, key: str):
        """An exclusive lock on one entry, held while it is built (released if the process dies)."""
        path = self.root / "locks" / f"{name}-{key[:16]}.lock"
        with writing(self.root, "locks"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "w")
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, name: str, key: str, verify: bool = True) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, manifest) of an entry, or None if absent. A corrupt entry is reported and removed."""
        folder = self.entry(name, key)
        if not folder.exists():
            return None
        try:
            return self._read(folder, key, verify)
        except CacheCorrupt as e:
            print(f"warning: tensor cache {folder} is corrupt ({e}); rebuilding it", file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def _read(self, folder: Path, key: str, verify: bool):
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise CacheCorrupt(f"manifest unreadable: {e}") from None
        if manifest.get("cache_version") != CACHE_VERSION or manifest.get("key") != key:
            raise CacheCorrupt("manifest does not match this cache version or key")
        arrays = {}
        for name, meta in manifest["arrays"].items():
            try:
                a = np.load(folder / f"{name}.npy", mmap_mode="c")
            except (OSError, ValueError) as e:
                raise CacheCorrupt(f"{name}.npy unreadable: {e}") from None
            if list(a.shape) != meta["shape"] or a.dtype.str != meta["dtype"]:
                raise CacheCorrupt(f"{name}.npy has shape {a.shape} {a.dtype.str}, manifest says {meta['shape']} {meta['dtype']}")
            if verify and sha256_array(a) != meta["sha256"]:
                raise CacheCorrupt(f"{name}.npy content does not match its checksum")
            arrays[name] = a
        return arrays, manifest

    def save(self, name: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> dict:
        with writing(self.root, "tasks"):
            return self._save(name, key, arrays, meta)

    def _save(self, name: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> dict:
        folder = self.entry(name, key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            sums = {}
            for n, a in arrays.items():
                np.save(tmp / f"{n}.npy", a)
                sums[n] = {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": sha256_array(a)}
            fingerprint = hashlib.sha256(json.dumps([key, sums], sort_keys=True).encode()).hexdigest()
            manifest = {"cache_version": CACHE_VERSION, "key": key, "fingerprint": fingerprint, "arrays": sums, **meta}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest
