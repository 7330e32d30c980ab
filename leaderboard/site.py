"""Write the static site: ``index.html`` (tables, inline SVG plots, a few lines of sorting script)
and the downloads beside it (``runs.csv``, ``board.json``, ``board.tex``, ``board.md``).

No server, no CDN, no absolute link: the folder works from ``file://``, offline, and on any
static host. Output is byte-stable for the same records (no timestamp unless published).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from benchmark.marks import describe_collapse

from . import detection, plots, robustness, secondary, sources, tables, variance
from .aggregate import PROTOCOL_LEGEND
from .report import LAYOUT_LEGEND, LAYOUT_MARK

DOWNLOADS = {"runs.csv": "every run, one row per seed", "board.json": "aggregates, raw and adjusted p-values",
             "board.tex": "LaTeX tables", "board.md": "Markdown tables"}


def _environment() -> Environment:
    # Autoescaped: titles hold commands, paths and method names, whose quotes must not end an attribute.
    env = Environment(loader=PackageLoader("leaderboard", "templates"), autoescape=select_autoescape(("html", "html.j2")),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(cell_value=tables.cell_value, mde_text=tables.mde_text, metric_text=secondary.metric_text,
                       map_cells=tables.map_cells, cell_title=_cell_title, collapse_title=_collapse_title,
                       layout_title=_layout_title, num=_num, realised=_realised, pct=lambda x: f"{100 * x:.1f}",
                       thousands=lambda n: f"{n:,}", mib=lambda b: f"{b / 2**20:.0f}", slug=_slug,
                       det_value=detection.value_text, base_text=detection.base_text, vnum=variance.fmt,
                       share=variance.share_text, split_title=_split_title)
    return env


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


def _num(x, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _cell_title(cell: dict) -> str:
    if not cell["n"]:
        return f"no finished run ({cell['failed']} failed)" if cell["failed"] else "no run"
    parts = [f"n={cell['n']} seeds: " + ", ".join(str(s) for s, _ in cell["values"])]
    if cell["p"] is not None:
        parts.append(f"one-sided p vs {cell['vs']}: {cell['p']:.3g} (adjusted {cell['p_adjusted']:.3g})")
    if cell["secondary"]["intervals"]:
        parts.append(_bootstrap_title(cell["secondary"]))
    if cell.get("mde") is not None:
        parts.append(f"MDE of its paired test vs {cell['vs']}: {cell['mde']:.3f}")
    parts += [f"flag: {f}" for f in cell["flags"]]
    if cell["collapsed"]:
        parts.append(_collapse_title(cell))
    if cell["old_layout"]:
        parts.append(_layout_title(cell))
    if cell["failed"]:
        parts.append(f"{cell['failed']} failed run(s) not averaged in")
    if cell.get("source_marks") or cell.get("twins"):
        parts.append(f"runs from: {sources.label(cell['sources'])}")
    lines = [f"in both sources, counted once (the published run): {sources.twin_text(t)}"
             for t in cell.get("twins", ())]
    return "\n".join(["; ".join(parts), *lines, _reproduce_title(cell)])


def _reproduce_title(cell: dict) -> str:
    """The lines of a cell's tooltip that say how to make it again."""
    commits = ", ".join(c[:12] for c in cell["commits"]) + (" (with uncommitted changes)" if cell["dirty"] else "")
    lines = [f"reproduce: {cell['command']}",
             f"harness {', '.join(cell['harness_versions'])} at commit {commits}",
             f"runs: {' '.join(cell['run_ids'])}"]
    if cell["command_gaps"]:
        lines.insert(1, f"not planned by this checkout as recorded: {cell['command_gaps']}; check out the commit")
    return "\n".join(lines)


def _bootstrap_title(summary: dict) -> str:
    """Each run's test-set interval: sampling error of the test patients, apart from the seeds' spread."""
    how = ", ".join(f"B={b}, RNG seed {seed}" for b, seed in summary["resamples"])
    runs = ", ".join(f"seed {s} [{low:.3f}, {high:.3f}]" for s, low, high in summary["intervals"])
    return f"test-set 95 % bootstrap interval of each run's mAP (patients resampled, {how}): {runs}"


def _collapse_title(cell: dict) -> str:
    """Each collapsed run of the cell: its seed, the epoch it fell and its macro AUC."""
    return "; ".join(describe_collapse(c["seed"], c) for c in cell["collapsed"]) + " (still averaged in)"


def _realised(noise: dict) -> str:
    """The column's realised flip rates, 'rho+ / rho-', each a value or a min-max range."""
    def span(v):
        return "-" if not v else (f"{v[0]:.3f}" if abs(v[1] - v[0]) < 5e-4 else f"{v[0]:.3f}-{v[1]:.3f}")
    return f"{span(noise.get('realised_rho_plus'))} / {span(noise.get('realised_rho_minus'))}"


def _split_title(entry: dict) -> str:
    """A variance row's tooltip: its runs by seed and draw, and the noise seed of each draw."""
    runs = ", ".join(f"seed {s} draw {d}: {v:.4f}" for s, d, v in entry["values"])
    seeds = ", ".join(f"draw {d}: {seed}" for d, seed in entry["noise_seeds"])
    sp = entry["split"]
    ms = (f"; mean squares seed {sp['ms']['seed']:.3g} (df {sp['df']['seed']}), draw {sp['ms']['draw']:.3g} "
          f"(df {sp['df']['draw']}), residual {sp['ms']['residual']:.3g} (df {sp['df']['residual']})") if sp else ""
    return f"runs: {runs}\nnoise seeds: {seeds}{ms}"


def _layout_title(cell: dict) -> str:
    return f"{LAYOUT_MARK} {LAYOUT_LEGEND} (fusion layout: {', '.join(cell['fusion_layouts'])})"


def figures(board: dict) -> dict:
    """{key: inline SVG}: mAP against noise and relative to the baseline per task, cost against mAP per
    hardware, CD per track."""
    out = {}
    for track in board["tracks"]:
        colors = plots.color_map({r["method"] for t in track["tasks"] for r in t["rows"]}
                                 | {r["method"] for b in track["compute"] for r in b["rows"]})
        for table in track["tasks"]:
            key = f"map/{track['track']}/{table['task']}"
            out[key] = plots.map_vs_noise(table, colors, _slug(key))
            if table["robustness"]["baseline"]:
                key = f"relative/{track['track']}/{table['task']}"
                out[key] = plots.relative_to_baseline(table, colors, _slug(key))
        for block in track["compute"]:
            key = f"cost/{track['track']}/{block['title']}"
            out[key] = plots.cost_vs_map(block["rows"], colors, block["title"], _slug(key))
        if "ranks" in track["summary"]:
            key = f"cd/{track['track']}"
            out[key] = plots.critical_difference(track["summary"], _slug(key))
    return out


def runs_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        columns = list(rows[0])
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (r["track"], r["task"], r["method"], r["noise"], r["seed"], r["run_id"])):
            writer.writerow(row)
    return buf.getvalue()


def write(out: Path, board: dict, rows: list[dict], skipped: list[tuple[str, str]], build: dict,
          releases: list[dict] = ()) -> Path:
    """Render everything into ``out`` (created); returns the page's path. ``releases``
    (``release.listed``) are linked from the page."""
    out.mkdir(parents=True, exist_ok=True)
    page = _environment().get_template("index.html.j2").render(
        board=board, figures=figures(board), skipped=skipped, build=build, downloads=DOWNLOADS,
        phases=tables.RUN_PHASES, releases=list(releases), secondary_metrics=secondary.METRICS,
        robustness_legend=robustness.LEGEND, protocol_legend=PROTOCOL_LEGEND, detection_directions=detection.DIRECTIONS,
        detection_metrics=detection.METRICS)
    files = {
        "index.html": page,
        "runs.csv": runs_csv(rows),
        "board.json": json.dumps({**board, "skipped": [{"file": f, "error": e} for f, e in skipped], "build": build},
                                 indent=1, sort_keys=True, allow_nan=False) + "\n",
        "board.tex": tables.render(board, "latex_raw"),
        "board.md": tables.render(board, "github"),
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return out / "index.html"


def write_releases(out: Path, releases: list[dict]) -> Path:
    """``releases/index.html``: every release of the site, newest first, the latest marked."""
    from .release import FOLDER

    path = out / FOLDER / "index.html"
    path.write_text(_environment().get_template("releases.html.j2").render(releases=releases), encoding="utf-8")
    return path
