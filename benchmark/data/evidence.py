"""The evidence for each (training stay, label): how strongly what a coder reads supports the label.

Instance-dependent under-coding (``noise.under_code``) drops a clean positive more often the weaker its
evidence. The evidence is the harness's, computed once per task from the clean training data and cached
with its checksum; it is never handed to a method (a method sees ``TaskInfo``, batches and noisy labels).

Synthetic tasks (``source="generator"``): the generator knows what it planted. For stay i and label l,

    e[i, l] = m[i, l] + s[i, l]        in [0, 2)

- ``m`` (the note, 0 or 1): 1 iff the note as written affirms label l, i.e. the generator put one of the
  label's terms in it (a true mention of a positive, or a false mention of a negative) and it survived
  the note's cut to its first ten mentions. Negated and family-history mentions are not affirmations. A
  stay without a note has m = 0.
- ``s`` (the series, in [0, 1)): ``t+ / (t+ + 2)`` with ``t+ = max(0, t)``, of the matched-filter
  statistic ``t`` of the label's planted shifts in the stay's series as charted. For each signal the label shifts (its vital and
  lab effects in ``generator.PHENOTYPES`` / ``DIAGNOSES``, the Glasgow coma scale and heart-rate
  variability included) and the stay charts, ``d = (mean - normal) / sd`` standardises the stay's mean
  (sd = sqrt(between-patient sd^2 + charting noise^2 / values charted)); the label's expected shift in
  the same units is ``delta = c * shift / sd`` (c = 0.75 for the signals whose shift fades over the stay,
  0.5 for the admission weight, 1 for the sd of the heart rate; the GCS total, normal 14.8 with charting
  sd 0.65, falls about 1.7 points per unit of the generator's severity shift); then
  ``t = sum(delta * d) / sqrt(sum(delta^2))``, about N(0, 1) where nothing is planted and N(|delta|, 1)
  where it is; so s is 0 where the series shows nothing (or the opposite), 1/3 at one sd of the planted
  pattern, 0.6 at three, and approaches 1 without reaching it as the signal grows (no ties among strongly
  planted labels). A stay without a series, or a label without series effects, has s = 0. The statistic is
  realised: a patient's own baseline and the other labels' shifts are in it, as they are in the chart.
  A diagnosis study reads its whole ICU stay's series (not only the part before the study).

Real tasks (``source="model"``): a frozen model the harness fits on the clean training labels. Features
per stay: the mean and the last row of the 76 discretised (normalised) series columns over the kept
hours, the standard deviation of the 12 continuous columns, log(1 + hours) and a has-series flag; the
mean of the note's frozen token embeddings and a has-note flag; standardised on the training split. One
L2 logistic regression per label (C = 1, lbfgs), cross-fitted over five folds of patients (fold =
crc32(patient id) mod 5): a stay's evidence is the held-out log-odds of a model that never saw its own
label, so the draw is made against the record rather than against the label itself. A fold whose
training part has one class only gives 0. Values are rounded to 1e-4, so that the checksum does not
depend on the last bits of the floating-point sums.

The law turns e into drops through its standardisation within each label's positives, so only each
label's own ordering and spread of e matter (``noise.under_code``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import generator, timeseries
from .cache import TensorCache, sha256_array, writing

from ..protocol import EVIDENCE_VERSION
SOURCES = ("generator", "model")
FOLDS = 5
SERIES_HALF = 2.0  # the matched-filter statistic at which the series' share of the evidence is 1/2
# The GCS total of an unshifted stay: 14.8 on average, charting sd 0.65; a planted shift of the generator's
# severity lowers it by about 1.7 points per unit, intubation included (its law, simulated once).
_GCS_NORMAL, _GCS_NOISE, _GCS_POINTS = 14.8, 0.65, 1.7


@dataclass(frozen=True)
class Evidence:
    values: np.ndarray  # [N_train, C] float32, rows as the task's training split
    source: str  # "generator" | "model"
    checksum: str  # sha256 of ``values``
    manifest: dict  # what was computed and how (written beside the values in the cache)

    def summary(self) -> dict:
        return {"source": self.source, "version": EVIDENCE_VERSION, "checksum": self.checksum}


def default_source(spec) -> str:
    """The generator's evidence for a synthetic task, the frozen model's for real (and vendored) ones."""
    return "generator" if spec.source == "synthetic" else "model"


def train_evidence(spec, data, cache: TensorCache | None = None, source: str | None = None) -> Evidence:
    """The evidence of ``data``'s training split (``data`` = ``materialise(spec)``), from the cache or
    computed and cached (once: concurrent runs wait for the first)."""
    source = source or default_source(spec)
    if source not in SOURCES:
        raise ValueError(f"evidence source must be one of {SOURCES}, got {source!r}")
    if source == "generator" and spec.source != "synthetic":
        raise ValueError(f"task '{spec.name}' is not synthetic: no generator knows its evidence")
    cache = cache or TensorCache()
    key = evidence_key(spec, data.fingerprint, source)
    hit = load(spec, data.fingerprint, cache, source)
    if hit is not None:
        return hit
    with cache.lock(f"evidence-{spec.name}", key):
        hit = load(spec, data.fingerprint, cache, source)
        if hit is None:
            values, details = (generator_evidence(spec, data, cache) if source == "generator"
                               else model_evidence(data))
            _save(cache, _folder(cache, spec, key), values, {
                "evidence_version": EVIDENCE_VERSION, "key": key, "source": source, "task": spec.name,
                "data_fingerprint": data.fingerprint, **details})
            hit = load(spec, data.fingerprint, cache, source)
    return hit


def evidence_key(spec, fingerprint: str, source: str) -> str:
    return hashlib.sha256(json.dumps([EVIDENCE_VERSION, source, spec.name, fingerprint]).encode()).hexdigest()


def _folder(cache: TensorCache, spec, key: str) -> Path:
    return cache.root / "evidence" / f"{spec.name}-{key[:16]}"


def load(spec, fingerprint: str, cache: TensorCache | None = None, source: str | None = None) -> Evidence | None:
    """The cached evidence of the task whose data has ``fingerprint``, or None. A corrupt entry (values
    that do not match their checksum) is reported and removed."""
    cache = cache or TensorCache()
    source = source or default_source(spec)
    key = evidence_key(spec, fingerprint, source)
    folder = _folder(cache, spec, key)
    if not (folder / "manifest.json").exists():
        return None
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        values = np.load(folder / "values.npy")
        if manifest.get("key") != key or sha256_array(values) != manifest.get("sha256"):
            raise ValueError("values do not match the manifest's checksum")
    except (OSError, ValueError) as e:
        print(f"warning: evidence cache {folder} is corrupt ({e}); computing it again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return Evidence(values, source, manifest["sha256"], manifest)


def _save(cache: TensorCache, folder: Path, values: np.ndarray, meta: dict) -> None:
    with writing(cache.root, "evidence"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            np.save(tmp / "values.npy", values)
            manifest = {**meta, "shape": list(values.shape), "sha256": sha256_array(values)}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# --- synthetic tasks: what the generator planted --------------------------------------------------

def generator_evidence(spec, data=None, cache: TensorCache | None = None) -> tuple[np.ndarray, dict]:
    """([N_train, C] evidence, details) of a synthetic task, rows in the order of its training split
    (train, then val where the layout has one, as the loaders read them). With ``data``, its clean
    training labels must be the generator's (checked)."""
    gen = generator.generate(spec)
    parts = [p for p in ("train", "val") if p in gen.splits]
    frame = pd.concat([gen.splits[p] for p in parts], ignore_index=True)
    mentioned = np.concatenate([gen.mentioned[p] for p in parts]).astype(np.float32)
    series = series_strength(gen, frame["series"].tolist(), generator._table(spec.kind))
    values = np.round(mentioned + series, 4).astype(np.float32)
    if data is not None:
        if len(frame) != len(data.train):
            raise ValueError(f"task '{spec.name}': the generator's training split has {len(frame)} samples, the "
                             f"cached one {len(data.train)}")
        if spec.uncertain == "negative" and not np.array_equal(frame[gen.label_names].to_numpy(np.uint8),
                                                               data.train.labels.numpy()):
            raise ValueError(f"task '{spec.name}': the cached training labels are not the generator's")
    details = {"definition": "note affirmation (0/1) + t+ / (t+ + 2) of the series' matched filter t",
               "note_share": float(mentioned.mean()), "series_share": float((series > 0).mean())}
    return values, details


def series_strength(gen, series: list[str], table) -> np.ndarray:
    """[N, C] ``t+ / (t+ + 2)`` of each sample's series (a file name of ``gen.events``, '' = none)
    and label (a row of ``table``): the module docstring's definition."""
    stats, index = _stay_statistics(gen.events)
    stay = np.array([index.get(s, -1) if s else -1 for s in series])
    n, out = len(series), np.zeros((len(series), len(table)), np.float32)
    has = stay >= 0
    for j, row in enumerate(table):
        effects = dict(row[3])
        num, den = np.zeros(n), np.zeros(n)
        for signal, shift in effects.items():
            if signal not in stats:
                continue
            mean, count = stats[signal]
            m, c = np.where(has, mean[np.maximum(stay, 0)], np.nan), np.where(has, count[np.maximum(stay, 0)], 0)
            normal, between, noise, share = _signal_scale(signal)
            with np.errstate(divide="ignore", invalid="ignore"):
                sd = np.sqrt(between ** 2 + (noise(c) if callable(noise) else noise) ** 2 / np.maximum(c, 1))
                d = (m - normal) / sd
                delta = share * shift / sd
            seen = c > 0
            num += np.where(seen, delta * d, 0.0)
            den += np.where(seen, delta ** 2, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(den > 0, num / np.sqrt(den), 0.0)
        tp = np.maximum(t, 0.0)
        out[:, j] = tp / (tp + SERIES_HALF)
    return out


def _signal_scale(signal: str):
    """(normal value, between-patient sd, charting noise sd (a number, or of the count for hr_var), share)."""
    if signal == "gcs":  # the total; its shift does not fade
        return _GCS_NORMAL, 0.0, _GCS_NOISE, _GCS_POINTS
    if signal == "hr_var":
        # The sample sd of n heart rates of noise sd 6 varies by about 6 / sqrt(2 n); the other labels'
        # fading shifts spread the stays' sds by about 1 more.
        return 6.0, 1.0, lambda c: 6.0 / np.sqrt(2.0) * np.ones_like(c, dtype=float), 1.0
    normal, between, noise = generator.SIGNALS[signal][:3]
    share = 0.5 if signal == "weight" else 0.75  # weight: the admission row's half shift; the others fade to half
    return normal, between, noise, share


def _gcs_points() -> dict[str, float]:
    """Points of each spelling of the three GCS components (both charting systems)."""
    points = {}
    for table in (generator.GCS_EYE, generator.GCS_MOTOR, generator.GCS_VERBAL):
        for spellings in table.values():
            points.update({text: float(k + 1) for k, text in enumerate(spellings)})
    points.update({text: 1.0 for text in generator.GCS_INTUBATED.values()})
    return points


def _stay_statistics(events: pd.DataFrame) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """Per series file: (mean, count) of each signal as charted, the GCS total and the heart rate's sd."""
    codes, files = pd.factorize(events["series"], sort=False)
    k = len(files)

    def mean_count(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(values)
        count = np.bincount(codes[ok], minlength=k).astype(float)
        total = np.bincount(codes[ok], weights=values[ok], minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan), count

    stats = {}
    for signal, channel in generator.CHANNEL_OF.items():
        stats[signal] = mean_count(pd.to_numeric(events[channel], errors="coerce").to_numpy(float))
    points = _gcs_points()
    parts = [events[c].map(points).to_numpy(float) for c in ("Glascow coma scale eye opening",
                                                               "Glascow coma scale motor response",
                                                               "Glascow coma scale verbal response")]
    stats["gcs"] = mean_count(parts[0] + parts[1] + parts[2])
    hr = pd.to_numeric(events[generator.CHANNEL_OF["hr"]], errors="coerce").to_numpy(float)
    mean, count = mean_count(hr)
    ok = np.isfinite(hr)
    sq = np.bincount(codes[ok], weights=(hr[ok] - mean[codes[ok]]) ** 2, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.where(count > 1, np.sqrt(sq / np.maximum(count - 1, 1)), np.nan)
    stats["hr_var"] = (sd, np.where(count > 1, count, 0.0))
    return stats, {f: i for i, f in enumerate(files)}


# --- real tasks: a frozen model fitted on the clean training labels ----------------------------------

def summary_features(split) -> np.ndarray:
    """[N, F] per-stay features of a split: series mean and last row (76 + 76), sd of the 12 continuous
    columns, log(1 + hours), has-series; note embedding mean (D), has-note."""
    ehr, off = np.asarray(split.ehr), np.asarray(split.ehr_offsets, dtype=np.int64)
    note, noff = np.asarray(split.note), np.asarray(split.note_offsets, dtype=np.int64)
    lengths, nlengths = np.diff(off), np.diff(noff)
    cont = timeseries.CONTINUOUS_COLUMNS
    mean = _segment_means(ehr, off)
    sq = _segment_means(ehr[:, cont].astype(np.float64) ** 2, off)
    sd = np.sqrt(np.maximum(sq - mean[:, cont] ** 2, 0))
    last = np.where((lengths > 0)[:, None], ehr[np.maximum(off[1:] - 1, 0)], 0)
    return np.hstack([mean, last, sd, np.log1p(lengths)[:, None], (lengths > 0)[:, None],
                      _segment_means(note, noff), (nlengths > 0)[:, None]]).astype(np.float64)


def _segment_means(rows: np.ndarray, offsets: np.ndarray, block_rows: int = 1 << 17) -> np.ndarray:
    """[N, W] mean of ``rows[offsets[i]:offsets[i + 1]]`` (0 for an empty segment), in float64 over blocks of
    whole segments of about ``block_rows`` rows (a float16 note array is never widened whole)."""
    n = len(offsets) - 1
    out = np.zeros((n, rows.shape[1]))
    a = 0
    while a < n:
        b = max(a + 1, int(np.searchsorted(offsets, offsets[a] + block_rows, side="right")) - 1)
        b = min(b, n)
        block = np.asarray(rows[offsets[a]:offsets[b]], dtype=np.float64)
        if len(block):
            c = np.vstack([np.zeros((1, block.shape[1])), np.cumsum(block, axis=0)])
            rel = offsets[a:b + 1] - offsets[a]
            out[a:b] = (c[rel[1:]] - c[rel[:-1]]) / np.maximum(np.diff(rel), 1)[:, None]
        a = b
    return out


def patient_folds(patient_id: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    return np.array([zlib.crc32(str(int(p)).encode()) % folds for p in patient_id], dtype=np.int64)


def model_evidence(data) -> tuple[np.ndarray, dict]:
    """([N_train, C] held-out log-odds, details) of per-label logistic regressions on
    ``summary_features``, cross-fitted over patient folds on the clean training labels."""
    from sklearn.linear_model import LogisticRegression

    x = summary_features(data.train)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    y = np.asarray(data.train.labels, dtype=np.uint8)
    fold = patient_folds(np.asarray(data.train.patient_id))
    out = np.zeros(y.shape, np.float64)
    for f in range(FOLDS):
        held, fit = fold == f, fold != f
        if not held.any():
            continue
        for j in range(y.shape[1]):
            target = y[fit, j]
            if target.min() == target.max():
                continue
            model = LogisticRegression(C=1.0, max_iter=500).fit(x[fit], target)
            out[held, j] = model.decision_function(x[held])
    return np.round(out, 4).astype(np.float32), {
        "definition": f"held-out log-odds of per-label L2 logistic regression (C=1) on {x.shape[1]} summary "
                      f"features, {FOLDS} patient folds", "features": int(x.shape[1])}
