"""Harutyunyan's discretiser and normaliser: 17 clinical variables -> 76 hourly channels, vectorised.

Semantics follow the mimic3-benchmarks ``Discretizer`` as the reference uses it (spec §11.6):
timestep 1 h, start time zero, ``impute_strategy='previous'``, masks stored.

- ``n_bins = int(end + 1 - 1e-6)`` where ``end`` is the period length (48 h if it is not positive);
  an event at hour ``h`` goes to bin ``int(h - 1e-6)`` (truncation toward zero, so (-1, 1] -> bin 0);
  events after ``end`` are dropped, and so are events at or before hour -1, where the reference would
  fail an assertion;
- within a bin the last value of a channel wins; empty bins take the last observed value of the stay,
  or the channel's normal value before the first observation;
- categorical channels are one-hot over the config's ``possible_values`` (both spellings of MIMIC-III
  CareVue and MetaVision have their own column, as in the reference); an unknown spelling is an error;
- 17 observed-in-this-bin masks follow the 59 value columns; only the last 512 bins are kept.

Instead of a Python loop per row, every channel is forward-filled for all stays at once with a
``searchsorted`` over (stay, bin) keys.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from ..errors import UsageError

EPS = 1e-6
MAX_BINS = 512
_CONFIG = json.loads(resources.files(__package__).joinpath("resources/discretizer_config.json").read_text())
CHANNELS: list[str] = _CONFIG["id_to_channel"]
IS_CATEGORICAL: dict[str, bool] = _CONFIG["is_categorical_channel"]
POSSIBLE_VALUES: dict[str, list[str]] = _CONFIG["possible_values"]
NORMAL_VALUES: dict[str, str] = _CONFIG["normal_values"]


def _layout() -> tuple[dict[str, int], list[str]]:
    begin, header = {}, []
    for ch in CHANNELS:
        begin[ch] = len(header)
        header += [f"{ch}->{v}" for v in POSSIBLE_VALUES[ch]] if IS_CATEGORICAL[ch] else [ch]
    header += [f"mask->{ch}" for ch in CHANNELS]
    return begin, header


BEGIN, HEADER = _layout()
WIDTH = len(HEADER)  # 76
MASK_BEGIN = WIDTH - len(CHANNELS)  # 59
CONTINUOUS_COLUMNS = np.array([i for i, h in enumerate(HEADER) if "->" not in h])  # the 12 z-scored ones


@dataclass
class Origin:
    """Where each event row came from, so that an error can name the file and line."""

    files: list[str]
    file_index: np.ndarray  # [rows] index into files
    line: np.ndarray  # [rows] 1-based line number in its file

    def where(self, row: int) -> str:
        return f"{self.files[self.file_index[row]]} line {self.line[row]}"


def n_bins(ends: np.ndarray) -> np.ndarray:
    ends = np.where(np.isfinite(ends) & (ends > 0), ends, 48.0)
    return (ends + 1.0 - EPS).astype(np.int64)


def parse_channel(channel: str, raw: np.ndarray, origin: Origin | None, rows: np.ndarray) -> np.ndarray:
    """Strings of one channel -> float values (continuous) or category indices (categorical)."""
    if IS_CATEGORICAL[channel]:
        lookup = {v: i for i, v in enumerate(POSSIBLE_VALUES[channel])}
        codes = np.array([lookup.get(v, -1) for v in raw], dtype=np.int64)
        bad = np.flatnonzero(codes < 0)
        if len(bad):
            where = origin.where(rows[bad[0]]) if origin else f"row {rows[bad[0]]}"
            raise UsageError(
                f"{where}: unknown value {str(raw[bad[0]])!r} for categorical channel '{channel}'; "
                f"expected one of {POSSIBLE_VALUES[channel]}"
            )
        return codes
    values = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        where = origin.where(rows[bad[0]]) if origin else f"row {rows[bad[0]]}"
        raise UsageError(f"{where}: value {str(raw[bad[0]])!r} of channel '{channel}' is not a finite number")
    return values


def _normal_code(channel: str) -> float:
    normal = NORMAL_VALUES[channel]
    return float(POSSIBLE_VALUES[channel].index(normal)) if IS_CATEGORICAL[channel] else float(normal)


def discretise(
    stay: np.ndarray,
    hours: np.ndarray,
    values: dict[str, np.ndarray],
    ends: np.ndarray,
    max_bins: int = MAX_BINS,
    origin: Origin | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Events in long format -> (flat [R, 76] float32, offsets [N+1]) of the last ``max_bins`` bins.

    ``stay[r]`` is the stay index (0..N-1) of event row ``r`` at ``hours[r]``; ``values[ch][r]`` is its
    raw string for channel ``ch`` ('' = not measured). Rows must be in file order within a stay.
    """
    n = len(ends)
    nb = n_bins(np.asarray(ends, dtype=np.float64))
    first = np.maximum(nb - max_bins, 0)
    length = nb - first
    offsets = np.concatenate([[0], np.cumsum(length)])
    pos_stay = np.repeat(np.arange(n), length)
    pos_bin = first[pos_stay] + np.arange(offsets[-1]) - offsets[pos_stay]
    pos_key = (pos_stay << 32) | pos_bin

    hours = np.asarray(hours, dtype=np.float64)
    ev_bin = np.trunc(hours - EPS).astype(np.int64)
    in_range = (ev_bin >= 0) & (hours <= np.where(np.isfinite(ends) & (ends > 0), ends, 48.0)[stay] + EPS)
    out = np.zeros((offsets[-1], WIDTH), dtype=np.float32)
    rows_all = np.arange(len(stay))
    for c, channel in enumerate(CHANNELS):
        raw = np.asarray(values[channel], dtype=object)
        present = in_range & ~pd.isna(raw) & (raw != "")
        rows = rows_all[present]
        parsed = parse_channel(channel, raw[present].astype(str), origin, rows)
        key = (stay[present].astype(np.int64) << 32) | ev_bin[present]
        order = np.argsort(key, kind="stable")
        key, parsed = key[order], parsed[order]
        last = np.append(key[1:] != key[:-1], True)[: len(key)]  # the last value in a bin wins
        key, parsed = key[last], parsed[last]
        val = np.full(len(out), _normal_code(channel))
        if len(key):
            idx = np.searchsorted(key, pos_key, side="right") - 1
            found = idx >= 0
            found[found] = (key[idx[found]] >> 32) == pos_stay[found]
            val = np.where(found, parsed[np.maximum(idx, 0)], val)
            out[:, MASK_BEGIN + c] = found & (key[np.maximum(idx, 0)] == pos_key)
        if IS_CATEGORICAL[channel]:
            out[np.arange(len(out)), BEGIN[channel] + val.astype(np.int64)] = 1.0
        else:
            out[:, BEGIN[channel]] = val
    return out, offsets


@dataclass
class Normaliser:
    """z-scores the 12 continuous columns; one-hots and masks are left as they are."""

    means: np.ndarray  # [76]
    stds: np.ndarray  # [76]
    source: str  # "train" (fitted on the training split) or a file path

    @classmethod
    def fit(cls, flat: np.ndarray) -> "Normaliser":
        """Statistics over every kept bin of the training split (std with ddof=1, floored at 1e-7)."""
        x = flat.astype(np.float64)
        means = x.mean(0)
        stds = x.std(0, ddof=1) if len(x) > 1 else np.ones(WIDTH)
        return cls(means, np.maximum(stds, 1e-7), "train")

    @classmethod
    def from_file(cls, path) -> "Normaliser":
        """A JSON file with 'means' and 'stds' of the 76 columns (e.g. the published ph_ts1.0 one)."""
        try:
            stats = json.loads(open(path).read()) if not hasattr(path, "read_text") else json.loads(path.read_text())
            means, stds = np.asarray(stats["means"], float), np.asarray(stats["stds"], float)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{path}: expected a JSON object with 'means' and 'stds' lists ({e})") from None
        if means.shape != (WIDTH,) or stds.shape != (WIDTH,):
            raise UsageError(f"{path}: 'means' and 'stds' must each have {WIDTH} values")
        return cls(means, np.maximum(stds, 1e-7), str(path))

    @classmethod
    def reference(cls) -> "Normaliser":
        """The published MIMIC-III phenotyping statistics the reference uses for every dataset (B18)."""
        return cls.from_file(resources.files(__package__).joinpath("resources/ph_ts1.0_normalizer.json"))

    def transform(self, flat: np.ndarray) -> np.ndarray:
        out = flat.copy()
        c = CONTINUOUS_COLUMNS
        out[:, c] = ((flat[:, c] - self.means[c]) / self.stds[c]).astype(np.float32)
        return out
