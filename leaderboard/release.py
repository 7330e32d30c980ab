"""Versioned releases of the leaderboard: ``<site>/releases/<version>/``, frozen once, never rewritten.

A release holds the site as built (``index.html`` and its downloads), ``records.tar.gz`` (the record
files the board read, under their paths in the results folder, the published ones under ``published/``:
aggregates only, no per-stay output, as the data use agreements require), a ``manifest.json`` naming
each file with its sha256 and size, and ``SHA256SUMS`` for ``sha256sum -c``. It is written into a
hidden folder and renamed into place, so a release is complete or absent; its files are read-only. A
version that is there is refused before anything is built (``check_new``). The site's index and
``releases/index.html`` list the releases, the highest version marked latest.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

from benchmark.errors import UsageError

FOLDER = "releases"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
ARCHIVE = "records.tar.gz"
VERSION = re.compile(r"v(\d+)\.(\d+)(?:\.(\d+))?")


def check_new(out: str | Path, version: str) -> Path:
    """The folder release ``version`` goes to; a malformed version, or one already there, is refused."""
    if not VERSION.fullmatch(version):
        raise UsageError(f"--release {version!r}: expected a version vX.Y or vX.Y.Z (e.g. v1.0)")
    target = Path(out) / FOLDER / version
    if target.exists():
        raise UsageError(f"--release {version}: already published at {target}; a release is never rewritten, "
                         f"publish a new version")
    return target


def _order(version: str) -> tuple[int, ...]:
    return tuple(int(x or 0) for x in VERSION.fullmatch(version).groups())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive(results: Path, files: list[str], elsewhere: dict[str, Path] | None = None) -> bytes:
    """A gzipped tar of ``files`` (paths under ``results``, or the file ``elsewhere`` names for one:
    a published record, ``published/<track>/...``), byte-stable: sorted, no owner, times zero."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w",
                                                                             format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(set(files)):
            data = Path((elsewhere or {}).get(name, results / name)).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def freeze(site: Path, target: Path, results: Path, files: list[str], about: dict,
           elsewhere: dict[str, Path] | None = None) -> Path:
    """Copy the files of ``site`` (a folder the site was just built into), the archive of record
    ``files`` (``archive``) and the manifest to ``target``."""
    staging = target.parent / f".{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a build that died mid-release
    staging.mkdir(parents=True)
    for path in site.iterdir():
        shutil.copyfile(path, staging / path.name)
    (staging / ARCHIVE).write_bytes(archive(results, files, elsewhere))
    names = sorted(p.name for p in staging.iterdir())
    sums = {name: {"sha256": sha256(staging / name), "bytes": (staging / name).stat().st_size} for name in names}
    manifest = {**about, "records": len(set(files)), "files": sums}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (staging / SUMS).write_text("".join(f"{sums[n]['sha256']}  {n}\n" for n in names))
    for path in staging.iterdir():
        path.chmod(0o444)
    os.rename(staging, target)  # refuses a target that appeared meanwhile (a non-empty folder)
    return target


def listed(site: str | Path) -> list[dict]:
    """The releases under ``site``, newest version first: each manifest's version, date, record count,
    harness version and commit, and whether it is the latest."""
    root = Path(site) / FOLDER
    found = []
    for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else ():
        if not VERSION.fullmatch(manifest.parent.name):
            continue
        about = json.loads(manifest.read_text())
        found.append({"version": manifest.parent.name, "date": about.get("date"), "records": about.get("records"),
                      "harness_version": about.get("harness_version"), "commit": about.get("commit")})
    found.sort(key=lambda r: _order(r["version"]), reverse=True)
    for i, r in enumerate(found):
        r["latest"] = i == 0
    return found
