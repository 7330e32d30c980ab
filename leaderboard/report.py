"""Result tables from run records: rows methods, columns noise settings, mean (std) over seeds.

``run_row`` flattens a record into one tidy row (the leaderboard's ``runs.csv`` has one per run)
and ``collect`` groups the rows into cells; the terminal table below and the leaderboard
(the rest of this package) both read that one aggregation.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict

import numpy as np
from tabulate import tabulate

from benchmark.environment import hardware_class
from benchmark.marks import (COLLAPSE_AUC, RELEASED, TIMING_ENCODERS, TWO_MODALITY, encoder_of, fusion_layout,
                             record_collapse)
from benchmark.protocol import EXTRA_NOISE_SETTINGS, NOISE_SETTINGS, parse_noise

from . import reproduce, secondary, sources
from .defaults import method_defaults, track_defaults

MIN_SEEDS = 3
LAYOUT_MARK = "\u2020"  # a dagger: FlexCare runs of the two-modality fusion layout
LAYOUT_LEGEND = f"FlexCare {TWO_MODALITY.replace('_', '-')} layout of harness < 0.3.0, not the released function"
# Which runs are rows of their own (``row_label``), for the terminal's caption and the board's.
ROWS_LEGEND = (f"'{LAYOUT_MARK}': {LAYOUT_LEGEND}; a row is one run spec less its seed: runs that differ in anything "
               f"else (hyper-parameters, noise-seed policy, encoder, budget, ...) are separate rows, and a row that "
               f"differs from the method's default spec names what differs in brackets (a fusion layout other "
               f"than '{RELEASED}' by its name); '[compiled]' rows hold runs trained with --compile on (other "
               f"random draws than the default eager runs)")
CAPTION = (
    "Last-epoch test mAP (macro, clean test labels): mean (std) over seeds, std with ddof=1 "
    "(sample standard deviation). '[n=k]' marks a cell with fewer than {min_seeds} seeds; "
    "'[mixed data]', '[mixed harness]', '[mixed code]' and '[mixed layout]' mark a cell whose runs differ in data "
    "fingerprint, harness version, method code or FlexCare fusion layout (its runs are not averaged); '!' marks a cell "
    "whose runs had failed records (not averaged in). "
    "'[collapsed k/n]': k of the cell's n runs collapsed, their last-epoch macro AUC below {collapse_auc:g} "
    "(still averaged in: the protocol keeps the last epoch). " + ROWS_LEGEND + "."
)
PHASES = ("data", "noise", "train", "method_hooks", "eval")


def run_row(record: dict) -> dict:
    """One flat row per run record: what the tables, the statistics and ``runs.csv`` need."""
    spec, env, timings = record["spec"], record["environment"], record["timings"]
    done = record["status"] == "done"
    layout, fell = fusion_layout(spec), record_collapse(record)
    return {
        "track": spec["track"],
        "task": spec["task"],
        "method": spec["method"]["name"],
        "display_name": record["method"]["display_name"],
        "label": row_label(record["method"]["display_name"], layout, compiled(env), spec_differences(spec)),
        "cell_key": cell_key(spec, compiled(env)),
        # The row's spec (seed, noise, track, task aside) as canonical JSON: what label_rows compares.
        "cell_spec": json.dumps({k: v for k, v in spec.items() if k not in _NOT_ROW}, sort_keys=True),
        "fusion_layout": layout,
        "noise": noise_column(spec["noise"]["name"]),
        "seed": spec["seed"],
        # --noise-draws: 0 for the protocol's draw (the spec has no noise_draw), else the draw's index.
        "noise_draw": (spec.get("noise_draw") or {}).get("index", 0),
        "noise_seed": record["noise"].get("seed"),
        "realised_rho_plus": record["noise"].get("realised_rho_plus"),
        "realised_rho_minus": record["noise"].get("realised_rho_minus"),
        "encoder": encoder_of(spec),
        "encoder_path": env.get("encoder_path"),  # provenance only: a folder enters the spec by its content
        "timing_encoder": encoder_of(spec) in TIMING_ENCODERS,
        "status": record["status"],
        "map": record["metrics"]["final"]["map"] if done else None,
        "macro_auc": record["metrics"]["final"].get("macro_auc") if done else None,
        # Collapsed (marks.collapse): None for a failed run, else whether, and if so when and from where.
        "collapsed": (fell is not None) if done else None,
        "collapsed_epoch": fell and fell["epoch"],
        "collapsed_peak_macro_auc": fell and fell["peak_macro_auc"],
        "collapsed_peak_epoch": fell and fell["peak_epoch"],
        "never_learned": fell and fell["never_learned"],
        "failure": record["failure"],
        "run_id": record["run_id"],
        "data_fingerprint": record["fingerprints"].get("data"),
        "harness_version": env.get("harness_version"),
        "git_sha": (env.get("git") or {}).get("sha"),
        "git_dirty": (env.get("git") or {}).get("dirty"),
        # The bench command that plans this run again, and what of its spec no flag sets here (reproduce).
        "command": reproduce.command(spec, compiled(env), env.get("encoder_path")),
        "command_gaps": "; ".join(reproduce.gaps(spec)),
        "hardware": hardware_class(env),
        "precision": env.get("precision"),
        "packed_runs": env.get("packed_runs", 1),
        "token_layout": env.get("token_layout", "padded"),  # records before the switch ran padded
        "compile": env.get("compile", "off"),
        "parameters": record["method"].get("parameters"),
        "parameters_frozen": record["method"].get("parameters_frozen"),
        "encoder_parameters": env.get("encoder_parameters"),
        "code_hash": record["method"].get("code_hash"),
        "peak_memory_bytes": record["peak_memory_bytes"],
        **secondary.row_fields(record["metrics"]),
        **detection_fields(record["metrics"] if done else {}),
        **{f"time_{phase}": timings.get(phase) for phase in (*PHASES, "total")},
    }


# The last epoch's detection scores (benchmark/detection.py) as row fields det_<direction>_<metric>; the
# detection tables are leaderboard/detection.py's.
DETECTION_DIRECTIONS = ("missed_positive", "spurious_positive")
DETECTION_METRICS = ("precision", "recall", "f1", "auprc", "base_rate")


def detection_fields(metrics: dict) -> dict:
    """The last curve row's detection scores as flat fields (None where that row has none: a method
    without suspicion(), or one whose last epoch gave no scores)."""
    curve = metrics.get("curve") or []
    det = (curve[-1].get("detection") if curve and isinstance(curve[-1], dict) else None) or {}
    return {f"det_{d}_{m}": (det.get(d) or {}).get(m) for d in DETECTION_DIRECTIONS for m in DETECTION_METRICS}


def row_label(display_name: str, layout: str | None, is_compiled: bool = False,
              differences: list[str] | None = None) -> str:
    """A table row: the method's display name, the FlexCare fusion layout unless it is the released
    one (or the method is not on FlexCare), what else of the spec differs from the method's default
    (``spec_differences``, e.g. ``[modalities=ehr]``, ``[noise seed per-seed]``), and ``[compiled]``
    for compiled runs, so that runs of two layouts, of two specs, or of the two execution modes that
    draw other random numbers, are never one cell."""
    label = display_name if layout in (None, RELEASED) else f"{display_name} [{layout}]"
    if differences:
        label += f" [{', '.join(differences)}]"
    return f"{label} [compiled]" if is_compiled else label


# Spec keys that are not part of a row: the seed (a cell's runs), the noise (its column), the table's
# track and task, and the noise draw (a row's runs on other draws than the protocol's are the variance
# split's, ``leaderboard/variance.py``; ``collect`` keeps draw 0 in the cells). Everything else of the spec
# separates rows (``cell_key``).
_NOT_ROW = ("seed", "noise", "track", "task", "noise_draw")


def cell_key(spec: dict, is_compiled: bool = False) -> str:
    """What one row of a table holds: a hash of the run spec less its seed, noise, track and task (the
    column and the table), and whether the runs trained compiled (in ``environment``, not the spec).
    Runs with one key differ only in their seed: they are one cell per noise setting."""
    rest = {k: v for k, v in spec.items() if k not in _NOT_ROW}
    canonical = json.dumps({"spec": rest, "compiled": is_compiled}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def noise_column(name: str) -> str:
    """A table's column: the noise setting by its rates (``parse_noise``'s canonical name), so
    ``sym-20.0`` and ``sym-20`` are one column and two columns never share a header."""
    try:
        return parse_noise(name).name
    except Exception:  # records are validated on read; a name parse_noise refuses stays as written
        return name


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def spec_differences(spec: dict) -> list[str]:
    """What of ``spec`` (seed, noise, track and task aside) differs from the default spec the planner
    gives the method on that track and task today, as short labels: ``modalities=ehr`` for a
    hyper-parameter, ``noise seed per-seed`` for the noise-seed policy, ``encoder=...``,
    ``epochs=3`` for other fields. The default is read from this checkout without
    training code: the method's manifest (``registry``) and the track's definition (``protocol``).
    Only keys the record has are compared (records of older harnesses lack keys added since, and the
    leaderboard's small test records lack whole sections), and ``fusion_layout`` is left to
    ``row_label``, which names it. Fields the defaults do not cover (the data generator, a method
    that is not checked in) and the method's version (a table holding one version's records of a
    method is not relabelled when the method moves on) are told apart within a table by ``label_rows``."""
    out = []
    method = spec["method"]
    defaults = method_defaults(method["name"])
    if defaults is not None:
        _, hparams = defaults
        for key, value in sorted((method.get("hparams") or {}).items()):
            if key != "fusion_layout" and (key not in hparams or hparams[key] != value):
                out.append(f"{key}={_value(value)}")
    if spec.get("noise_seed_policy", "reference") != "reference":
        out.append(f"noise seed {spec['noise_seed_policy']}")
    sections = track_defaults(spec["track"], spec["task"])
    if sections is not None:
        for section, default in sections.items():
            for key, value in sorted((spec.get(section) or {}).items()):
                if key in default and default[key] != value:
                    out.append(f"{key}={_value(value)}")
    return out


def _flat(spec: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in spec.items():
        if not prefix and key in _NOT_ROW:
            continue
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def label_rows(rows: list[dict]) -> list[dict]:
    """Make every row label of a (track, task) name one ``cell_key``. ``run_row``'s labels already name
    what differs from the method's default spec; rows of one label but different keys (a field the
    defaults do not cover, e.g. the data generator) get the fields that differ from the label's most
    run key appended, and, should that not tell them apart, the key itself. Idempotent; returns ``rows``."""
    by_label: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_label[(row["track"], row["task"], row["label"])][row["cell_key"]].append(row)
    for (_, _, label), keys in by_label.items():
        if len(keys) < 2:
            continue
        counts = Counter({k: len(v) for k, v in keys.items()})
        reference = min(keys, key=lambda k: (-counts[k], k))
        ref_flat = _flat(json.loads(keys[reference][0]["cell_spec"]))
        seen: set[str] = set()
        for key in sorted(keys, key=lambda k: (k != reference, k)):
            if key == reference:
                new = label
            else:
                flat = _flat(json.loads(keys[key][0]["cell_spec"]))
                diffs = [f"{k.rpartition('.')[2]}={_value(flat.get(k))}" for k in sorted(set(flat) | set(ref_flat))
                         if flat.get(k) != ref_flat.get(k) and k != "method.hparams.fusion_layout"]
                new = f"{label} [{', '.join(diffs)}]" if diffs else label
            if new in seen:
                new = f"{new} [spec {key[:8]}]"
            seen.add(new)
            for row in keys[key]:
                row["label"] = new
    return rows


def compiled(env: dict) -> bool:
    """Whether the run trained compiled: the same function with other random draws, a mode of its own
    (docs/reliability.md). A run that fell back to eager says ``compile: off`` (``runner.run_one``)."""
    return env.get("compile") == "on"


def collect(rows: list[dict]) -> dict:
    """{(track, task): {row label: {noise name: {"runs": [done rows], "maps": [...], "failed": int}}}}: a
    row is one run spec less its seed (``cell_key``), labelled by the method's display name and what
    differs from its default spec (``row_label``, ``label_rows``); a column is a noise setting by its rates.
    A cell holds the protocol's noise draw only (draw 0): runs of ``--noise-draws``' other draws get their
    labels here too but go to the variance split (``leaderboard/variance.py``), never into a mean.
    A cell also holds the sources of its runs (``sources``: the user's results, the published set) and, in
    ``twins``, the user's runs of a published run id, which count once (``sources.pair``)."""
    label_rows(rows)
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(
        lambda: {"runs": [], "maps": [], "failed": 0, "sources": set()})))
    for row in rows:
        if row.get("noise_draw", 0):
            continue
        cell = table[(row["track"], row["task"])][row["label"]][row["noise"]]
        cell["sources"].add(sources.source_of(row))
        if row["status"] == "done":
            cell["runs"].append(row)
            cell["maps"].append(row["map"])
        else:
            cell["failed"] += 1
    for labels in table.values():
        for cells in labels.values():
            for cell in cells.values():
                sources.pair(cell)
    return table


def cell_flags(cell: dict) -> list[str]:
    """Why a cell's mean must not be read as a comparable number ([] when it can)."""
    runs, flags = cell["runs"], []
    if runs and len(runs) < MIN_SEEDS:
        flags.append(f"n={len(runs)}")
    # Runs on different data or a different harness measure different things: never averaged together.
    if len({r["data_fingerprint"] for r in runs}) > 1:
        flags.append("mixed data")
    if len({r["harness_version"] for r in runs}) > 1:
        flags.append("mixed harness")
    # The run id has the method's version, not its code: code edited mid-grid shows here.
    if len({r["code_hash"] for r in runs}) > 1:
        flags.append("mixed code")
    # Two FlexCare fusion layouts are two functions. ``collect`` keeps them in separate rows, so only a
    # caller grouping runs some other way can meet this; then it is loud, and nothing is averaged.
    if len({r.get("fusion_layout") for r in runs}) > 1:
        flags.append("mixed layout")
    # A user's run of a published run id whose mAP is not the published one's (sources.CPU_MAP_TOLERANCE).
    return flags + sources.twin_flags(cell)


def cell_marks(cell: dict) -> list[str]:
    """What a reader must see beside a cell's number that does not take it out of the ranking ([] when
    nothing): how many of its runs collapsed (last-epoch protocol: they count in the mean). The page's
    tooltip on a mark lists the collapsed runs: a new kind of mark needs its own there."""
    runs = cell["runs"]
    collapsed = sum(1 for r in runs if r["collapsed"])
    return [f"collapsed {collapsed}/{len(runs)}"] if collapsed else []


def old_layout(cell: dict) -> bool:
    """Whether the cell has runs of FlexCare's two-modality layout (``LAYOUT_MARK``)."""
    return any(r.get("fusion_layout") == TWO_MODALITY for r in cell["runs"])


def noise_order(names) -> list[str]:
    paper = [n.name for n in NOISE_SETTINGS + EXTRA_NOISE_SETTINGS]
    return [n for n in paper if n in names] + sorted(n for n in names if n not in paper)


def mean_std(maps: list[float]) -> str:
    return f"{maps[0]:.3f}" if len(maps) == 1 else f"{np.mean(maps):.3f} ({np.std(maps, ddof=1):.3f})"


def format_cell(cell: dict | None) -> str:
    if not cell:
        return "-"
    maps, flags = cell["maps"], cell_flags(cell)
    mixed = [f for f in flags if f.startswith("mixed")]
    text = "failed" if not maps else ("-" if mixed else mean_std(maps))
    text += "".join(f" [{f}]" for f in flags + cell_marks(cell))
    if old_layout(cell):
        text += f" {LAYOUT_MARK}"
    if cell["failed"]:
        text += " !"
    return text


def render(records: list[dict], fmt: str = "simple") -> str:
    """One table per (track, task), with the caption; ``fmt`` is a tabulate format."""
    blocks = []
    flat = [run_row(r) for r in records]
    for (track, task), rows in sorted(collect(flat).items()):
        noises = noise_order({n for cells in rows.values() for n in cells})
        headers = ["method"] + [f"{n}\n{parse_noise(n).label()}" for n in noises]
        body = [[m] + [format_cell(cells.get(n)) for n in noises] for m, cells in sorted(rows.items())]
        blocks.append(f"track {track} / task {task}\n" + tabulate(body, headers, tablefmt=fmt, disable_numparse=True))
    if not blocks:
        return "no finished runs yet"
    caption = CAPTION.format(min_seeds=MIN_SEEDS, collapse_auc=COLLAPSE_AUC)
    if any(r["noise_draw"] for r in flat):
        caption += (" Cells hold the protocol's noise draw (draw 0) only; the runs of other noise draws "
                    "(--noise-draws) are in the leaderboard's variance split.")
    return "\n\n".join(blocks) + "\n" + caption
