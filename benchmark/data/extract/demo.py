"""The vendored MIMIC-III demo: which tables and columns ship with the project, and how they were cut.

``datasets/mimic3-demo/raw/`` holds the tables of the PhysioNet MIMIC-III Clinical Database Demo 1.4
that ``mimic3`` reads, with only the columns it reads, CHARTEVENTS and LABEVENTS cut to the itemids
of the 17 variables (every subject kept, so the cohort and validation rules still see stays and events
that they drop), and NOTEEVENTS as the demo ships it (its header, no rows). Files are gzip with a zero
timestamp, so that cutting them again gives the same bytes and the same ``SHA256SUMS``.

    python -m benchmark.data.extract.demo ../shared/data/mimic-iii-demo-1.4 datasets/mimic3-demo/raw
"""
from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

from ...errors import UsageError
from . import tables, variables
from .mimic3 import OPTIONAL, REQUIRED

CHECKSUMS = "SHA256SUMS"
EVENT_TABLES = {"CHARTEVENTS": "chartevents", "LABEVENTS": "labevents"}


def vendor(src: str | Path, dest: str | Path) -> dict[str, int]:
    """Cut the demo's tables from ``src`` into ``dest``; rows written per table."""
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, columns in {**REQUIRED, **OPTIONAL}.items():
        table = tables.open_table(src, name, columns)
        frame = tables.read(table, {c: str for c in columns})
        if name in EVENT_TABLES:
            items = variables.item_map(EVENT_TABLES[name]).items.index.astype(str)
            frame = frame[frame["ITEMID"].isin(items)]
        frame.columns = [table.header[c] for c in columns]  # the demo's own (lower-case) spelling
        data = frame.to_csv(index=False, lineterminator="\n").encode()
        (dest / f"{name}.csv.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        rows[name] = len(frame)
    sums = [f"{_sha256(p)}  {p.name}" for p in sorted(dest.glob("*.csv.gz"))]
    (dest / CHECKSUMS).write_text("\n".join(sums) + "\n")
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(raw: Path) -> str:
    """Check every file of ``raw/SHA256SUMS``; the checksums' own digest (the vendored data's identity)."""
    listing = raw / CHECKSUMS
    if not listing.is_file():
        raise UsageError(f"{listing}: checksum list not found (the vendored tables are incomplete)")
    text = listing.read_text()
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        path = raw / name
        if not path.is_file():
            raise UsageError(f"{path}: vendored table missing (listed in {listing})")
        if _sha256(path) != digest:
            raise UsageError(f"{path}: checksum differs from {listing}; restore the file (git checkout {path})")
    return hashlib.sha256(text.encode()).hexdigest()


if __name__ == "__main__":
    for table, n in vendor(sys.argv[1], sys.argv[2]).items():
        print(f"{table}: {n:,} rows")
