"""Raw MIMIC tables: found by name, columns matched in either case, read whole or in chunks.

MIMIC-III 1.4 ships ``TABLE.csv`` (or ``TABLE.csv.gz``) with upper-case headers; the PhysioNet demo
spells the same headers in lower case. A table is found whatever the case of its file name, its columns
are renamed to upper case on reading, and only the columns a step asks for are parsed. Every problem is
one line naming the table and what was expected: a missing table or column, a truncated or corrupt
gzip, a malformed row.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...errors import UsageError

# Large enough that the C parser dominates, small enough that a chunk of CHARTEVENTS stays ~200 MB.
CHUNK_ROWS = 2_000_000


@dataclass(frozen=True)
class Table:
    name: str  # upper case, e.g. CHARTEVENTS
    path: Path
    header: dict[str, str]  # upper-case column name -> as spelt in the file

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def find(raw: Path, name: str) -> Path | None:
    """``raw/NAME.csv`` or ``raw/NAME.csv.gz`` in any case, or None."""
    wanted = {f"{name}.csv".lower(), f"{name}.csv.gz".lower()}
    if not raw.is_dir():
        raise UsageError(f"{raw}: folder not found, expected the MIMIC-III CSV files (ADMISSIONS.csv.gz, ...)")
    hits = sorted(p for p in raw.iterdir() if p.name.lower() in wanted and p.is_file())
    return hits[0] if hits else None


def open_table(raw: Path, name: str, columns: tuple[str, ...]) -> Table:
    """The table ``name`` under ``raw`` with at least ``columns`` (upper case), or a one-line error."""
    path = find(Path(raw), name)
    if path is None:
        raise UsageError(f"{raw}: table {name} not found, expected {name}.csv or {name}.csv.gz "
                         f"(with columns {', '.join(columns)})")
    first = _first_line(path, name)
    header = {c.strip().strip('"').upper(): c.strip().strip('"') for c in first.split(",")}
    missing = [c for c in columns if c not in header]
    if missing:
        raise UsageError(f"{path}: table {name} has no column {missing[0]} (expected columns {', '.join(columns)}; "
                         f"the header is {first.strip()[:200]!r})")
    return Table(name, path, header)


def _first_line(path: Path, name: str) -> str:
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            line = fh.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise UsageError(_broken(path, name, e)) from None
    if not line.strip():
        raise UsageError(f"{path}: table {name} is empty, expected a CSV header line")
    return line


def _broken(path: Path, name: str, e: BaseException) -> str:
    if isinstance(e, EOFError):
        return f"{path}: table {name} is a truncated gzip file ({e}); expected the complete file, download it again"
    if isinstance(e, UnicodeDecodeError):
        return f"{path}: table {name} is not UTF-8 text (byte 0x{e.object[e.start]:02x}); expected the MIMIC CSV"
    return f"{path}: table {name} cannot be read as {'gzip' if path.name.lower().endswith('.gz') else 'CSV'} ({e})"


def chunks(table: Table, dtypes: dict[str, object], chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The columns of ``dtypes`` (upper-case names -> pandas dtypes) in frames of ``chunk_rows`` rows, with
    upper-case column names. Only an empty field is missing ('NA' or 'None' are values)."""
    spelt = {table.header[c]: t for c, t in dtypes.items()}
    try:
        with pd.read_csv(table.path, usecols=list(spelt), dtype=spelt, chunksize=chunk_rows, keep_default_na=False,
                         na_values={c: [""] for c in spelt}, encoding="utf-8") as reader:
            for chunk in reader:
                chunk.columns = [c.upper() for c in chunk.columns]
                yield chunk
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise UsageError(_broken(table.path, table.name, e)) from None
    except (pd.errors.ParserError, ValueError) as e:
        raise UsageError(f"{table.path}: table {table.name} has a malformed row ({str(e).strip().splitlines()[0]}); "
                         f"expected columns {', '.join(dtypes)} as MIMIC-III spells them") from None


def read(table: Table, dtypes: dict[str, object]) -> pd.DataFrame:
    """The whole table (small tables: PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD)."""
    parts = list(chunks(table, dtypes))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
