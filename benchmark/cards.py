"""Task cards: ``datasets/<task>/card.yaml``, found by name and validated before any work starts.

A card describes one task as data: its kind, its label names in column order, the on-disk layout and
folders of its real files, FlexCare's task loss weight, the CheXpert uncertain-label rule (diagnosis),
the scale statistics a synthetic twin reproduces, how the data is obtained and how to cite it. Its
``README.md`` is the preparation pipeline. The tracks in ``protocol`` are built from the cards.

``datasets/`` is data, not code: it has no ``__init__.py`` and is read by path, never imported, so it
never shadows Hugging Face's ``datasets`` package. Importing this module costs no more than PyYAML
(``protocol`` reads the cards at import, and records and the leaderboard import ``protocol`` without torch).

Every problem is one line naming the card file, the field and what was expected.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError, choices_hint
from .yamlfile import read_yaml

KINDS = ("phenotyping", "diagnosis")
# On-disk layouts (benchmark/data/loaders.py reads them).
LAYOUTS = ("mimic4", "mimic3-miracl", "mimic3-benchmark")
# MIMIC-IV diagnosis (CheXpert) labels: 1 positive, 0 negative, -1 uncertain, blank missing.
#   "negative" (MIRACL, default): uncertain and missing -> 0 (B12);  "positive": uncertain -> 1 (U-Ones), missing -> 0.
UNCERTAIN_POLICIES = ("negative", "positive")
ACCESS = ("physionet-credentialed", "open")
# Pipelines that build a card's vendored raw tables into its task files (benchmark/data/extract).
BUILDS = ("mimic3",)

_STR, _INT, _NUMBER, _LIST, _MAP = "a string", "an integer", "a number", "a list", "a mapping"
# field: (what it must be, what it means); all required.
REQUIRED = {
    "name": (_STR, "the task's name, the same as its folder"),
    "title": (_STR, "a short human-readable title"),
    "kind": (_STR, f"one of {', '.join(KINDS)}"),
    "layout": (_STR, f"the on-disk layout, one of {', '.join(LAYOUTS)}"),
    "task_dir": (_STR, "the folder of the listfiles under the data folder"),
    "data_dir": (_STR, "the real files' folder under $EHRBENCH_DATA"),
    "num_labels": (_INT, "the number of labels"),
    "labels": (_LIST, "the label names, in the listfiles' column order"),
    "task_weight": (_NUMBER, "FlexCare's per-task loss weight"),
    "scale": (_MAP, "the statistics a synthetic twin reproduces: n_total, cardinality, missing_ehr, missing_note"),
    "access": (_STR, f"how the data is obtained, one of {', '.join(ACCESS)}"),
    "license": (_STR, "the data's licence"),
    "citation": (_STR, "how to cite the data and the task"),
}
OPTIONAL = {
    "uncertain": (_STR, f"the uncertain-label rule, one of {', '.join(UNCERTAIN_POLICIES)} (required for diagnosis)"),
    "sources": (_LIST, "the databases (with versions) the pipeline reads"),
    # Task settings beyond the defaults of protocol.TaskSpec (a track may still override them).
    "max_hours": (_INT, "hourly bins kept per stay"),
    "note_tokens": (_INT, "tokens kept per note"),
    "encoder": (_STR, "the frozen note encoder"),
    "normaliser": (_STR, "the time-series normaliser"),
    # A card whose raw database tables ship beside it (open data): built into the cache on first use.
    "raw_tables": (_STR, "the folder, beside the card, of vendored raw tables with their SHA256SUMS"),
    "build": (_STR, f"the pipeline that builds the raw tables, one of {', '.join(BUILDS)} (with raw_tables)"),
}
SCALE = {
    "n_total": (_INT, "samples over all splits"),
    "cardinality": (_NUMBER, "mean positive labels per sample"),
    "missing_ehr": (_NUMBER, "share of samples without a time series"),
    "missing_note": (_NUMBER, "share of samples without a note"),
}
# Card fields that are TaskSpec fields of the same name, when the card sets them.
TASK_FIELDS = ("uncertain", "max_hours", "note_tokens", "encoder", "normaliser")


@dataclass(frozen=True)
class Scale:
    """Statistics of the real task (all splits) that its synthetic twin reproduces."""

    n_total: int
    cardinality: float
    missing_ehr: float
    missing_note: float


@dataclass(frozen=True)
class Card:
    path: Path
    name: str
    title: str
    kind: str
    layout: str
    task_dir: str
    data_dir: str
    labels: tuple[str, ...]
    task_weight: float
    scale: Scale
    access: str
    license: str
    citation: str
    sources: tuple[str, ...] = ()
    raw_tables: str = ""  # vendored raw tables (folder beside the card), '' if none
    build: str = ""  # their pipeline
    task_fields: dict = field(default_factory=dict, hash=False)  # TASK_FIELDS the card sets

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def datasets_dir() -> Path:
    """``$EHRBENCH_DATASETS``, else ``datasets/`` beside the ``benchmark`` package."""
    env = os.environ.get("EHRBENCH_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "datasets"


def available_cards(root: Path | None = None) -> list[str]:
    root = root or datasets_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "card.yaml").is_file() and not p.name.startswith(("_", ".")))


def get_card(name: str) -> Card:
    """The card of task ``name`` under ``datasets_dir()``."""
    path = datasets_dir() / name / "card.yaml"
    if not path.is_file():
        available = available_cards()
        raise UsageError(f"{path}: no task card '{name}'{choices_hint(name, available)} "
                         f"(EHRBENCH_DATASETS, if set, must point at the project's datasets/ folder)")
    return read_card(path)


def read_card(path: str | Path) -> Card:
    """The validated card at ``path`` (``.../<name>/card.yaml``), or a one-line error."""
    path = Path(path)
    raw = read_yaml(path, what="the task card")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping of fields, got {_type(raw)}")
    known = {**REQUIRED, **OPTIONAL}
    for key in raw:
        if key not in known:
            raise UsageError(f"{path}: unknown field '{key}'{choices_hint(str(key), known)}")
    for key, (what, meaning) in REQUIRED.items():
        if key not in raw:
            raise UsageError(f"{path}: missing field '{key}' ({what}: {meaning})")
    for key, (what, _) in known.items():
        if key in raw:
            _check_type(path, key, raw[key], what)
    if raw["name"] != path.parent.name:
        raise UsageError(f"{path}: field 'name' is '{raw['name']}' but the folder is '{path.parent.name}'")
    for key, choices in (("kind", KINDS), ("layout", LAYOUTS), ("access", ACCESS), ("uncertain", UNCERTAIN_POLICIES),
                         ("build", BUILDS)):
        if key in raw and raw[key] not in choices:
            raise UsageError(f"{path}: field '{key}' is '{raw[key]}'{choices_hint(raw[key], choices)}")
    if raw["kind"] == "diagnosis" and "uncertain" not in raw:
        raise UsageError(f"{path}: missing field 'uncertain' (a diagnosis card states its rule for uncertain "
                         f"CheXpert labels: {', '.join(UNCERTAIN_POLICIES)})")
    for key in ("name", "title", "task_dir", "data_dir", "license", "citation"):
        if not raw[key].strip():
            raise UsageError(f"{path}: field '{key}' is empty, expected {REQUIRED[key][1]}")
    labels = _strings(path, "labels", raw["labels"])
    if not labels:
        raise UsageError(f"{path}: field 'labels' is empty, expected {REQUIRED['labels'][1]}")
    if len(labels) != raw["num_labels"]:
        raise UsageError(f"{path}: field 'labels' lists {len(labels)} names but 'num_labels' is {raw['num_labels']}")
    repeated = next((x for i, x in enumerate(labels) if x in labels[:i]), None)
    if repeated is not None:
        raise UsageError(f"{path}: field 'labels' lists '{repeated}' twice; label names must be unique")
    if not raw["task_weight"] > 0:
        raise UsageError(f"{path}: field 'task_weight' is {raw['task_weight']}, expected a number > 0")
    if ("raw_tables" in raw) != ("build" in raw):
        raise UsageError(f"{path}: fields 'raw_tables' and 'build' go together (vendored tables and their pipeline)")
    if "raw_tables" in raw and not (path.parent / raw["raw_tables"]).is_dir():
        raise UsageError(f"{path}: field 'raw_tables' is '{raw['raw_tables']}', but {path.parent / raw['raw_tables']} "
                         f"is not a folder")
    for key in ("max_hours", "note_tokens"):
        if key in raw and raw[key] < 1:
            raise UsageError(f"{path}: field '{key}' is {raw[key]}, expected an integer >= 1")
    return Card(
        path=path, name=raw["name"], title=raw["title"].strip(), kind=raw["kind"], layout=raw["layout"],
        task_dir=raw["task_dir"], data_dir=raw["data_dir"], labels=tuple(labels),
        task_weight=float(raw["task_weight"]), scale=_scale(path, raw["scale"], len(labels)), access=raw["access"],
        license=raw["license"].strip(), citation=" ".join(raw["citation"].split()),
        sources=tuple(_strings(path, "sources", raw.get("sources", []))),
        raw_tables=raw.get("raw_tables", ""), build=raw.get("build", ""),
        task_fields={k: raw[k] for k in TASK_FIELDS if k in raw},
    )


def _scale(path: Path, raw: dict, num_labels: int) -> Scale:
    for key in raw:
        if key not in SCALE:
            raise UsageError(f"{path}: unknown field 'scale.{key}'{choices_hint(str(key), SCALE)}")
    for key, (what, meaning) in SCALE.items():
        if key not in raw:
            raise UsageError(f"{path}: missing field 'scale.{key}' ({what}: {meaning})")
        _check_type(path, f"scale.{key}", raw[key], what)
    if raw["n_total"] < 1:
        raise UsageError(f"{path}: field 'scale.n_total' is {raw['n_total']}, expected an integer >= 1")
    if not 0 < raw["cardinality"] < num_labels:
        raise UsageError(f"{path}: field 'scale.cardinality' is {raw['cardinality']}, expected a number in "
                         f"(0, {num_labels}) (the mean positive labels per sample, fewer than the labels)")
    if not 0 <= raw["missing_ehr"] < 1:
        raise UsageError(f"{path}: field 'scale.missing_ehr' is {raw['missing_ehr']}, expected a share in [0, 1)")
    # 1 is allowed for notes: a database without notes (the PhysioNet demos) is a task with the note modality absent.
    if not 0 <= raw["missing_note"] <= 1:
        raise UsageError(f"{path}: field 'scale.missing_note' is {raw['missing_note']}, expected a share in [0, 1]")
    # Floats stay floats whatever YAML made of them: a task spec (hence a run id) must not depend on "1" vs "1.0".
    return Scale(raw["n_total"], float(raw["cardinality"]), float(raw["missing_ehr"]), float(raw["missing_note"]))


def _check_type(path: Path, key: str, value, what: str) -> None:
    ok = {
        _STR: isinstance(value, str),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _NUMBER: isinstance(value, (int, float)) and not isinstance(value, bool),
        _LIST: isinstance(value, list),
        _MAP: isinstance(value, dict),
    }[what]
    if not ok:
        raise UsageError(f"{path}: field '{key}' must be {what}, got {_type(value)} ({value!r:.60})")


def _strings(path: Path, key: str, values: list) -> list[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise UsageError(f"{path}: field '{key}' entry {i + 1} must be a non-empty string, got {_type(v)} ({v!r:.60})")
    return [v.strip() for v in values]


def _type(value) -> str:
    return "nothing" if value is None else type(value).__name__


def label_names(kind: str) -> list[str]:
    """The label names of ``kind``, in column order, as its cards list them.

    The loaders and the generator read labels by kind, so every card of one kind must list the same
    names in the same order. The order is part of the data: changing it changes every task's arrays, and
    the tensor cache is not keyed by it, so it goes with a bump of LOADER_VERSION and GENERATOR_VERSION.
    """
    by_kind = _labels_by_kind(str(datasets_dir()))
    if kind not in by_kind:
        raise UsageError(f"no task card of kind '{kind}' under {datasets_dir()}{choices_hint(kind, by_kind)}")
    return list(by_kind[kind][1])


@functools.lru_cache(maxsize=8)
def _labels_by_kind(root: str) -> dict[str, tuple[Path, tuple[str, ...]]]:
    by_kind: dict[str, tuple[Path, tuple[str, ...]]] = {}
    for name in available_cards(Path(root)):
        card = read_card(Path(root) / name / "card.yaml")
        if card.kind not in by_kind:
            by_kind[card.kind] = (card.path, card.labels)
        elif by_kind[card.kind][1] != card.labels:
            first = by_kind[card.kind][0]
            raise UsageError(f"{card.path}: field 'labels' differs from {first} (cards of kind '{card.kind}' must "
                             f"list the same labels in the same order)")
    return by_kind
