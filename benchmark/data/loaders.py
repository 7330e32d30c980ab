"""Readers of the on-disk task layouts that users of the reference pipelines already have.

Layouts (``layout`` of a task):
  "mimic4"            FlexCare/MIRACL MIMIC-IV: ``ehr/*.csv`` and ``{task}/{train,val,test}_multimodal_listfile.csv``
                      (``subject_id, stay_id|study_id, time_series, period_length|period_len, [dicom_id],
                      past_medical_history, <labels>``); training = train + val, as MIRACL does.
  "mimic3-miracl"     MIRACL MIMIC-III: ``ehr/*.csv`` and ``phenotyping/{train,test}_multimodal_listfile.csv``
                      (``patient_id, stay_id, stay, period_length, notes, <25 labels>``).
  "mimic3-benchmark"  Harutyunyan's: ``phenotyping/{train,test}/listfile.csv`` (``stay, period_length, <25 labels>``)
                      with the episode files beside it; no notes.
Listfiles are parsed as real CSV (quoted fields allowed); duplicate sample keys are an error (the
reference silently merges them). Every problem names the file, and the pipeline step that makes it.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cards import LAYOUTS, UNCERTAIN_POLICIES  # the layouts and uncertain-label rules (named switch) a card may name
from ..errors import UsageError
from .timeseries import CHANNELS, Origin

EPISODE_HEADER = ["Hours", *CHANNELS]

_MAKER = {
    "mimic4": "mimic4extract (create_phenotyping.py / create_diagnosis.py, then merge_multimodal_data) or `ehrbench data prepare`",
    "mimic3-miracl": "mimic3extract (create_new_phenotyping.py, then merge_note.py) or `ehrbench data prepare`",
    "mimic3-benchmark": "mimic3-benchmarks' create_phenotyping.py",
}


@dataclass
class RawSplit:
    """One split as read from disk, before discretisation and note encoding."""

    keys: list[str]  # unique sample keys
    patient_id: np.ndarray  # [N] int64
    ends: np.ndarray  # [N] float64 period length in hours (the discretiser's end)
    series: list[str | None]  # [N] episode file path, None = no time series
    notes: list[str]  # [N] note text, '' = no note
    labels: np.ndarray  # [N, C] uint8


def _require(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{path}: file not found (made by {_MAKER[layout]})")
    return path


def read_listfile(path: Path, layout: str, label_names: list[str], uncertain: str = "negative") -> pd.DataFrame:
    """A listfile as a DataFrame with columns key, patient, series, end, note, and the labels."""
    try:
        df = pd.read_csv(_require(path, layout), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise UsageError(f"{path}: malformed CSV ({str(e).strip()})") from None
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path}: empty file (made by {_MAKER[layout]})") from None
    except UnicodeDecodeError:
        raise UsageError(_not_utf8(path.read_bytes(), str(path), lambda row: f"{path} line {row + 1}")) from None
    _check_widths(path)
    cols = list(df.columns)

    def pick(*names: str, required: bool = True) -> str | None:
        for n in names:
            if n in cols:
                return n
        if required:
            raise UsageError(f"{path}: missing column {' or '.join(repr(n) for n in names)} (made by {_MAKER[layout]}); "
                             f"header is {cols}")
        return None

    if layout == "mimic3-benchmark":
        key, patient, series, end, note = "stay", None, "stay", pick("period_length"), None
        pick("stay")
    elif layout == "mimic3-miracl":
        key, patient, series = pick("stay_id"), pick("patient_id"), pick("stay")
        end, note = pick("period_length"), pick("notes")
    else:
        key, patient, series = pick("stay_id", "study_id"), pick("subject_id"), pick("time_series")
        end, note = pick("period_length", "period_len"), pick("past_medical_history", "notes")
    first_label = cols.index(note if note else end) + 1
    found = cols[first_label:]
    if len(found) != len(label_names):
        raise UsageError(f"{path}: {len(found)} label columns after '{cols[first_label - 1]}', expected "
                         f"{len(label_names)}: {label_names}")
    if found != label_names:
        wrong = next(f for f, e in zip(found, label_names) if f != e)
        raise UsageError(f"{path}: label column {wrong!r} where {label_names[found.index(wrong)]!r} was expected "
                         f"(label columns must be, in order: {label_names})")
    out = pd.DataFrame({"key": df[key].str.strip()})
    dup = out["key"].duplicated(keep=False)
    if dup.any():
        rows = (np.flatnonzero(dup.to_numpy()) + 2)[:4].tolist()
        raise UsageError(f"{path}: duplicate sample key {out['key'][dup].iloc[0]!r} (lines {rows}); keys must be unique")
    out["patient"] = _patient_ids(df, patient, path)
    out["series"] = df[series].str.strip()
    out["end"] = _numbers(df[end], path, end)
    out["note"] = df[note].fillna("").str.strip() if note else ""
    labels = df[found].apply(lambda col: _labels(col, path, uncertain))
    return pd.concat([out, labels], axis=1)


def _check_widths(path: Path) -> None:
    """Every row has the header's number of fields. pandas fills the missing fields of a short row
    with '' (blank labels, read as negatives), and takes one extra field on every row for an index."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            for fields in reader:
                if fields and len(fields) != len(header):
                    short = ": read as it is, its missing labels would be negatives" if len(fields) < len(header) else ""
                    raise UsageError(f"{path} line {reader.line_num}: {len(fields)} fields, expected {len(header)} as "
                                     f"in the header (a truncated or malformed row{short})")
        except csv.Error as e:
            raise UsageError(f"{path} line {reader.line_num}: malformed CSV ({e})") from None


def _header_diff(got: list[str]) -> str:
    """The first difference from the episode header, in words (long headers are cut in the message)."""
    for i, (g, e) in enumerate(zip(got, EPISODE_HEADER)):
        if g != e:
            return f"column {i + 1} is {g!r} where {e!r} was expected"
    if len(got) > len(EPISODE_HEADER):
        return f"extra column {got[len(EPISODE_HEADER)]!r}"
    return f"missing column {EPISODE_HEADER[len(got)]!r}"


def _not_utf8(data: bytes, path: str, where) -> str:
    """'<file> line N: not UTF-8 text (byte 0xff)'; ``where(row)`` names the 0-based line ``row`` of ``data``."""
    try:
        data.decode()
        return f"{path}: not UTF-8 text"
    except UnicodeDecodeError as e:
        row = data[:e.start].count(b"\n")
        return f"{where(row)}: not UTF-8 text (byte 0x{data[e.start]:02x})"


def _numbers(col: pd.Series, path: Path, name: str) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0))
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise UsageError(f"{path} line {line}: column '{name}' is {col[bad].iloc[0]!r}, expected a number of hours")
    return values.to_numpy(np.float64)


def _patient_ids(df: pd.DataFrame, column: str | None, path: Path) -> np.ndarray:
    if column is None:  # Harutyunyan: the subject id starts the episode file name
        found = df["stay"].str.extract(r"^(\d+)_episode\d+_timeseries\.csv$")[0]
        if found.isna().any():
            bad = df["stay"][found.isna()].iloc[0]
            raise UsageError(f"{path}: stay {bad!r} is not named SUBJECT_episodeK_timeseries.csv")
        return found.astype(np.int64).to_numpy()
    ids = pd.to_numeric(df[column], errors="coerce")
    if ids.isna().any():
        line = int(np.flatnonzero(ids.isna().to_numpy())[0]) + 2
        raise UsageError(f"{path} line {line}: column '{column}' is {df[column][ids.isna()].iloc[0]!r}, expected an integer id")
    return ids.astype(np.int64).to_numpy()


def _labels(col: pd.Series, path: Path, uncertain: str) -> pd.Series:
    values = pd.to_numeric(col.replace("", "-2"), errors="coerce")
    bad = values.isna() | ~values.isin([1, 0, -1, -2])
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise UsageError(f"{path} line {line}: label '{col.name}' is {col[bad].iloc[0]!r}, expected 1, 0, -1 or blank")
    positive = values == 1
    if uncertain == "positive":
        positive |= values == -1
    return positive.astype(np.uint8)


def _listfiles(root: Path, layout: str, task: str, split: str) -> list[Path]:
    """The listfiles of a split: MIMIC-IV's training split is train + val, as MIRACL does."""
    if layout == "mimic4":
        return [root / task / f"{p}_multimodal_listfile.csv" for p in (["train", "val"] if split == "train" else ["test"])]
    if layout == "mimic3-miracl":
        return [root / task / f"{split}_multimodal_listfile.csv"]
    return [root / task / split / "listfile.csv"]


def read_split(root: Path, layout: str, task: str, split: str, label_names: list[str],
               uncertain: str = "negative") -> RawSplit:
    """``split`` is 'train' (MIMIC-IV: train + val) or 'test'."""
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout '{layout}'; valid choices: {', '.join(LAYOUTS)}")
    if uncertain not in UNCERTAIN_POLICIES:
        raise UsageError(f"unknown uncertain-label policy '{uncertain}'; valid choices: {', '.join(UNCERTAIN_POLICIES)}")
    frames = [read_listfile(path, layout, label_names, uncertain) for path in _listfiles(root, layout, task, split)]
    ehr_dir = root / task / split if layout == "mimic3-benchmark" else root / "ehr"
    df = pd.concat(frames, ignore_index=True)
    if not len(df):  # a header-only listfile: a split of no samples would train or score on nothing
        names = " and ".join(str(p) for p in _listfiles(root, layout, task, split))
        raise UsageError(f"{names}: no rows after the header, expected one row per sample (made by {_MAKER[layout]})")
    dup = df["key"].duplicated()
    if dup.any():
        raise UsageError(f"{root / task}: sample key {df['key'][dup].iloc[0]!r} is in both train and val")
    series = [str(ehr_dir / s) if s else None for s in df["series"]]
    return RawSplit(
        keys=df["key"].tolist(),
        patient_id=df["patient"].to_numpy(np.int64),
        ends=df["end"].to_numpy(np.float64),
        series=series,
        notes=df["note"].tolist() if isinstance(df["note"], pd.Series) else [""] * len(df),
        labels=df[label_names].to_numpy(np.uint8),
    )


_LINE_END = ord("\n")


def read_episodes(paths: list[str], layout: str = "mimic4") -> tuple[pd.DataFrame, Origin]:
    """Every episode file, read once, as one long table: 'file' (index into paths), 'Hours', channels.

    Files are concatenated and parsed in one pass of pandas' C parser; a vectorised comma count per
    line catches truncated or over-long rows first, so an error names the file and line.
    """
    chunks, rows_per_file = [], []
    header_line = ",".join(EPISODE_HEADER)
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{path}: episode file not found (made by {_MAKER[layout]})") from None
        except IsADirectoryError:  # a time_series entry naming a folder ('', '.', a subject's folder)
            raise UsageError(f"{path}: is a folder, expected an episode file (the CSV of hourly rows a listfile's "
                             f"time_series column, or stay column, names)") from None
        except OSError as e:
            raise UsageError(f"{path}: cannot read the episode file ({e.strerror})") from None
        head, _, body = data.partition(b"\n")
        if head.decode(errors="replace").strip().replace("\r", "") != header_line:
            full = head.decode(errors="replace").strip()
            got = full[:200]
            if not got:
                raise UsageError(f"{path}: empty file, expected a header line")
            raise UsageError(f"{path}: header is {got!r}, expected {header_line!r} ({_header_diff(full.split(','))})")
        body = body.replace(b"\r\n", b"\n")
        stray = body.find(b"\r")
        if stray >= 0:  # the CSV parser would end a row there, the line count would not
            line = body[:stray].count(b"\n") + 2
            raise UsageError(f"{path} line {line}: a carriage return (\\r) inside a row")
        if body and not body.endswith(b"\n"):
            body += b"\n"
        chunks.append(body)
        rows_per_file.append(body.count(b"\n"))
    buf = b"".join(chunks)
    counts = np.asarray(rows_per_file, dtype=np.int64)
    file_index = np.repeat(np.arange(len(paths)), counts)
    line = np.arange(len(file_index)) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + 2
    origin = Origin([str(p) for p in paths], file_index, line)
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == _LINE_END)
    commas = np.concatenate([[0], np.cumsum(arr == ord(","))[ends]])
    per_line = np.diff(commas)
    bad = np.flatnonzero(per_line != len(EPISODE_HEADER) - 1)
    if len(bad):
        raise UsageError(f"{origin.where(bad[0])}: {per_line[bad[0]] + 1} fields, expected {len(EPISODE_HEADER)} "
                         f"(truncated or malformed row)")
    if not len(buf):
        table = pd.DataFrame({c: pd.Series(dtype=object) for c in EPISODE_HEADER})
    else:
        import io

        try:
            table = pd.read_csv(io.BytesIO(buf), header=None, names=EPISODE_HEADER, dtype=str, keep_default_na=False,
                                na_filter=False)
        except UnicodeDecodeError:
            raise UsageError(_not_utf8(buf, "", origin.where)) from None
    hours = pd.to_numeric(table["Hours"], errors="coerce")
    bad = hours.isna() | ~np.isfinite(hours.fillna(0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UsageError(f"{origin.where(row)}: Hours is {table['Hours'].iloc[row]!r}, expected a finite number")
    table["Hours"] = hours.to_numpy(np.float64)
    table.insert(0, "file", file_index)
    return table, origin
