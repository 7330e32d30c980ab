"""Statistics of a task's files, as the paper's dataset table reports them.

Read straight from the listfiles (and the note tokenizer), without discretising or encoding, so it
is cheap even at MIMIC scale: N per split, labels, mean label cardinality, prevalence, the most
frequent label pairs, modality missingness, series / note length quantiles (note tokens up to the 512 an
encoder is given, and as the task keeps them), the share of notes at the 512-token cap and, for a
synthetic task, the note length law it follows (``note_lengths``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tabulate import tabulate

from ..cards import label_names
from ..protocol import TaskSpec
from . import note_lengths, notes
from .loaders import read_split
from .timeseries import MAX_BINS, n_bins

NOTE_CAP = 512  # the reference truncates notes at 512 tokens


def describe(spec: TaskSpec, root: Path) -> dict:
    names = label_names(spec.kind)
    raw = {s: read_split(root, spec.layout, spec.task_dir, s, names, spec.uncertain) for s in ("train", "test")}
    labels = np.concatenate([raw[s].labels for s in raw])
    has_series = np.concatenate([[x is not None for x in raw[s].series] for s in raw])
    ends = np.concatenate([raw[s].ends for s in raw])
    texts = [t for s in raw for t in raw[s].notes]
    tokenizer = notes.load_tokenizer(spec.encoder)
    # Up to 512 tokens, the most any encoder is given (notes.encode); the task keeps note_tokens of them.
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=NOTE_CAP)["input_ids"] if texts else []
    token_counts = np.array([len(x) for x in ids], dtype=np.int64)
    written = token_counts[token_counts > 0]
    bins = np.minimum(n_bins(ends[has_series]), min(spec.max_hours, MAX_BINS))
    co = labels.T.astype(np.int64) @ labels.astype(np.int64)
    pairs = [(co[a, b], a, b) for a in range(len(names)) for b in range(a + 1, len(names))]
    pairs.sort(reverse=True)
    return {
        "task": spec.name,
        "n": {s: len(raw[s].keys) for s in raw} | {"total": len(labels)},
        "patients": int(len(np.unique(np.concatenate([raw[s].patient_id for s in raw])))),
        "labels": len(names),
        "cardinality": float(labels.sum(1).mean()),
        "cardinality_train": float(raw["train"].labels.sum(1).mean()),
        "prevalence": dict(zip(names, labels.mean(0).round(4).tolist())),
        "top_pairs": [(names[a], names[b], int(c), float(c / max(co[a, a], 1))) for c, a, b in pairs[:5]],
        "missing_series": float(1 - has_series.mean()),
        "missing_note": float(np.mean(token_counts == 0)) if len(token_counts) else 1.0,
        "series_bins": _quantiles(bins),
        "note_tokens": _quantiles(np.minimum(written, spec.note_tokens)),
        "note_tokens_written": _quantiles(written),
        "notes_at_512": float(np.mean(written >= NOTE_CAP)) if len(written) else None,
        "note_law": note_lengths.describe(spec.layout, spec.note_scale) if spec.source == "synthetic" else None,
    }


def _quantiles(x: np.ndarray) -> dict:
    if not len(x):
        return {}
    q = np.percentile(x, [10, 50, 90]).tolist()
    return {"p10": q[0], "p50": q[1], "p90": q[2], "max": float(np.max(x))}


def render(stats: dict) -> str:
    n = stats["n"]
    rows = [
        ["samples (train / test / total)", f"{n['train']:,} / {n['test']:,} / {n['total']:,}"],
        ["patients", f"{stats['patients']:,}"],
        ["labels", stats["labels"]],
        ["mean label cardinality (all / train)", f"{stats['cardinality']:.3f} / {stats['cardinality_train']:.3f}"],
        ["no time series", f"{100 * stats['missing_series']:.1f} %"],
        ["no note", f"{100 * stats['missing_note']:.1f} %"],
        ["hourly bins kept (p10 / p50 / p90 / max)", _fmt_q(stats["series_bins"])],
        [f"note tokens, up to {NOTE_CAP} (p10 / p50 / p90 / max)", _fmt_q(stats["note_tokens_written"])],
        [f"notes at the {NOTE_CAP}-token cap",
         "-" if stats["notes_at_512"] is None else f"{100 * stats['notes_at_512']:.1f} %"],
        ["note tokens kept (p10 / p50 / p90 / max)", _fmt_q(stats["note_tokens"])],
    ]
    if stats.get("note_law"):
        rows.append(["note length law (synthetic)", stats["note_law"]])
    out = [f"task {stats['task']}", tabulate(rows, tablefmt="simple", disable_numparse=True)]
    out.append(tabulate([[k, f"{v:.3f}"] for k, v in stats["prevalence"].items()], ["label", "prevalence"],
                        tablefmt="simple", disable_numparse=True))
    out.append(tabulate([[a, b, c, f"{p:.2f}"] for a, b, c, p in stats["top_pairs"]],
                        ["label A", "label B", "both positive", "P(B | A)"], tablefmt="simple", disable_numparse=True))
    return "\n\n".join(out)


def _fmt_q(q: dict) -> str:
    return " / ".join(f"{q[k]:.0f}" for k in ("p10", "p50", "p90", "max")) if q else "-"
