"""Raw MIMIC tables: found by name, columns matched in either case, read whole or in chunks.

MIMIC-III 1.4 ships ``TABLE.csv`` (or ``TABLE.csv.gz``) with upper-case headers; the PhysioNet demo
spells the same headers in lower case; MIMIC-IV keeps its tables in module folders (``hosp/``,
``icu/``) with lower-case headers. A table is found whatever the case of its file name, in the folders
it may be in; its columns are renamed to upper case on reading, and only the columns a step asks for
are parsed. A column may have another name in one database (MIMIC-IV's ``stay_id`` is MIMIC-III's
``ICUSTAY_ID``): ``aliases`` read it under the shared name, so the rules downstream are written once.
Every problem is one line naming the table and what was expected: a missing table or column, a
truncated or corrupt gzip, a malformed row, a timestamp of another form (``times``: the file, the
column, the data row and the form expected).
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...errors import UsageError

TIMESTAMP = "%Y-%m-%d %H:%M:%S"  # MIMIC's timestamps
DAY = "%Y-%m-%d"  # MIMIC-IV's dates (patients.dod)
_SHOWN = {TIMESTAMP: "'YYYY-MM-DD HH:MM:SS'", DAY: "'YYYY-MM-DD'"}
# Large enough that the C parser dominates, small enough that a chunk of CHARTEVENTS stays ~200 MB.
CHUNK_ROWS = 2_000_000


@dataclass(frozen=True)
class Table:
    name: str  # upper case, e.g. CHARTEVENTS
    path: Path
    header: dict[str, str]  # upper-case column name (or its alias) -> as spelt in the file

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def find(raw: Path, name: str, under: tuple[str, ...] = ("",), what: str = "the MIMIC-III CSV files (ADMISSIONS.csv.gz, ...)",
         ) -> Path | None:
    """``raw/<folder>/NAME.csv`` or ``.csv.gz`` in any case, for the first of the ``under`` folders that
    has it ('' is ``raw`` itself), or None."""
    wanted = {f"{name}.csv".lower(), f"{name}.csv.gz".lower()}
    if not raw.is_dir():
        raise UsageError(f"{raw}: folder not found, expected {what}")
    for folder in under:
        where = raw / folder
        if where.is_dir():
            hits = sorted(p for p in where.iterdir() if p.name.lower() in wanted and p.is_file())
            if hits:
                return hits[0]
    return None


def open_table(raw: Path, name: str, columns: tuple[str, ...], under: tuple[str, ...] = ("",),
               aliases: dict[str, str] | None = None, file_name: str | None = None,
               what: str = "the MIMIC-III CSV files (ADMISSIONS.csv.gz, ...)") -> Table:
    """The table ``name`` under ``raw`` (in one of the ``under`` folders) with at least ``columns`` (upper
    case), or a one-line error. ``aliases`` maps a shared column name to the upper-case name this
    database gives it; ``file_name`` is the file's name when it is not the table's (lower case allowed)."""
    aliases = aliases or {}
    stem = file_name or name
    path = find(Path(raw), stem, under, what)
    if path is None:
        places = " or ".join(f"{f + '/' if f else ''}{stem}.csv or {f + '/' if f else ''}{stem}.csv.gz" for f in under)
        shown = ", ".join(aliases.get(c, c) for c in columns)
        raise UsageError(f"{raw}: table {name} not found, expected {places} (with columns {shown})")
    first = _first_line(path, name)
    header = {c.strip().strip('"').upper(): c.strip().strip('"') for c in first.split(",")}
    header.update({shared: header[own] for shared, own in aliases.items() if own in header})
    missing = [c for c in columns if c not in header]
    if missing:
        shown = [aliases.get(c, c) for c in columns]
        raise UsageError(f"{path}: table {name} has no column {aliases.get(missing[0], missing[0])} (expected columns "
                         f"{', '.join(shown)}; the header is {first.strip()[:200]!r})")
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
    shared = {table.header[c]: c for c in dtypes}  # the file's spelling -> the name the rules use
    try:
        with pd.read_csv(table.path, usecols=list(spelt), dtype=spelt, chunksize=chunk_rows, keep_default_na=False,
                         na_values={c: [""] for c in spelt}, encoding="utf-8") as reader:
            for chunk in reader:
                chunk.columns = [shared[c] for c in chunk.columns]
                yield chunk
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise UsageError(_broken(table.path, table.name, e)) from None
    except (pd.errors.ParserError, ValueError) as e:
        raise UsageError(f"{table.path}: table {table.name} has a malformed row ({str(e).strip().splitlines()[0]}); "
                         f"expected columns {', '.join(table.header[c] for c in dtypes)}") from None


def times(column: pd.Series, table: Table, name: str, formats: tuple[str, ...] = (TIMESTAMP,)) -> pd.Series:
    """The timestamps of ``column`` (column ``name`` of ``table``, read by ``read`` or ``chunks``, whose
    index is the data row), parsed by the first of ``formats`` that reads each; an empty field is NaT.
    A value none reads is an error naming the file, the table, the column, the data row and the forms
    expected."""
    parsed = pd.to_datetime(column, format=formats[0], errors="coerce")
    for fmt in formats[1:]:
        rest = parsed.isna() & column.notna()
        if rest.any():
            parsed[rest] = pd.to_datetime(column[rest], format=fmt, errors="coerce")
    bad = parsed.isna() & column.notna() & (column.astype(str).str.strip() != "")
    if bad.any():
        first = int(bad.to_numpy().argmax())
        shown = " or ".join(_SHOWN.get(f, repr(f)) for f in formats)
        raise UsageError(f"{table.path}: table {table.name} column {table.header.get(name, name)}: "
                         f"{column.iloc[first]!r} (data row {int(column.index[first]) + 1}) is not a timestamp, "
                         f"expected {shown}")
    return parsed


def has(table: Table, *columns: str) -> bool:
    """Whether the table has every one of ``columns`` (upper case), for columns a check reads when present."""
    return all(c in table.header for c in columns)


def read(table: Table, dtypes: dict[str, object]) -> pd.DataFrame:
    """The whole table (small tables: PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD)."""
    parts = list(chunks(table, dtypes))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
