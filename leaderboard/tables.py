"""The board's tables as text: terminal and Markdown (tabulate) and LaTeX (``board.tex``)."""
from __future__ import annotations

from tabulate import tabulate

from . import detection, variance
from .report import LAYOUT_MARK, mean_std

PHASE_ORDER = ("data", "noise", "train", "method_hooks", "eval")
RUN_PHASES = PHASE_ORDER[1:]  # a run's own work: the compute tables show preparing the task apart
STYLES = {  # how bold (best) and the tie group show in each format
    "simple": ("{} <", "{} ="),
    "github": ("**{}**", "_{}_"),
    "latex_raw": (r"\textbf{{{}}}", r"\underline{{{}}}"),
}


MDE_ROW = "MDE (paired, power 0.8)"


def mde_text(mde: dict | None) -> str:
    """A column's minimum detectable effect and the seeds it is for, or '-' where no pair was tested."""
    return "-" if not mde or mde["mde"] is None else f"{mde['mde']:.3f} (n={mde['seeds']})"


def cell_value(cell: dict) -> str:
    """The number of a cell: mean (std), one value, 'failed' (only failed runs) or '-' (none, or mixed)."""
    if not cell["n"]:
        return "failed" if cell["failed"] else "-"
    return "-" if cell["mean"] is None else mean_std([v for _, v in cell["values"]])


def cell_text(cell: dict, fmt: str = "simple") -> str:
    """The value with bold/tie styling, significance stars, flags and marks in the format's own markup."""
    if not cell["n"] and not cell["failed"]:
        return "-"
    text = cell_value(cell)
    bold, tie = STYLES[fmt]
    if cell["best"]:
        text = bold.format(text)
    elif cell["tie"]:
        text = tie.format(text)
    if cell["stars"]:
        text += {"simple": cell["stars"], "github": cell["stars"].replace("*", r"\*"),
                 "latex_raw": f"$^{{{cell['stars']}}}$"}[fmt]
    text += "".join(f" [{f}]" for f in cell["flags"] + cell["marks"] + cell.get("source_marks", []))
    if cell["old_layout"]:
        text += r" $^\dagger$" if fmt == "latex_raw" else f" {LAYOUT_MARK}"
    return text + (" !" if cell["failed"] else "")


def result_table(table: dict, fmt: str = "simple") -> str:
    headers = ["method"] + [f"{n['name']}\n{n['label']}" if fmt == "simple" else f"{n['name']} {n['label']}"
                            for n in table["noises"]]
    body = [[_escape(row_name(r, table), fmt)] + [cell_text(c, fmt) for c in r["cells"]] for r in table["rows"]]
    body.append([_escape(MDE_ROW, fmt)] + [mde_text(n["mde"]) for n in table["noises"]])
    return tabulate(body, [_escape(h, fmt) for h in headers], tablefmt=fmt, disable_numparse=True,
                    colalign=_align(headers))


def row_name(row: dict, table: dict) -> str:
    """A result table's row: its label, and whose runs it holds where the table holds published runs."""
    return f"{row['method']} [{row['source']}]" if table.get("show_sources") else row["method"]


def published_line(track: dict) -> str:
    """What the board read of the track's published set ('' when none was looked for)."""
    found = track.get("published")
    if not found:
        return ""
    if not found["present"]:
        return (f"No published set for track {track['track']} ({found['folder']}): the tables hold your records "
                f"only.")
    marked = "; result-table rows are marked [published], [yours] or [published + yours]" if found["records"] else ""
    return (f"Track {track['track']}: {found['records']} published record(s) from {found['folder']} beside your "
            f"records{marked}.")


def robustness_table(table: dict, fmt: str = "simple") -> str:
    """Per row: area under mAP against the noise rate (sym, asym), then mAP relative to the baseline."""
    rb = table["robustness"]
    num = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    headers = ["method", "area sym", "area asym"] + [n["label"] for n in table["noises"]]
    body = [[_escape(r["method"], fmt), num(r["area"]["sym"]), num(r["area"]["asym"])]
            + [num(r["relative"][n["name"]]) for n in table["noises"]] for r in rb["rows"]]
    return tabulate(body, [_escape(h, fmt) for h in headers], tablefmt=fmt, disable_numparse=True,
                    colalign=_align(headers))


def summary_table(summary: dict, fmt: str = "simple") -> str:
    if "ranks" not in summary:
        return "(no cell that at least two methods share without flags)"
    body = [[_escape(m, fmt), f"{summary['ranks'][m]:.2f}"] for m in summary["methods"]]
    headers = ["method", f"average rank over {summary['cells']} cells"]
    return tabulate(body, headers, tablefmt=fmt, disable_numparse=True, colalign=_align(headers))


def summary_line(summary: dict) -> str:
    parts = []
    if "friedman" in summary:
        f = summary["friedman"]
        parts.append(f"Friedman chi2 = {f['statistic']:.2f}, p = {f['p']:.3g}")
    if "cd" in summary:
        parts.append(f"Nemenyi CD = {summary['cd']:.2f} at alpha = {summary['alpha']:g}")
    if summary.get("left_out"):
        parts.append("left out (fewer cells): " + ", ".join(summary["left_out"]))
    return "; ".join(parts)


def compute_table(block: dict, fmt: str = "simple") -> str:
    unit = "GPU-h" if block["gpu"] else "CPU-h"
    phases = (f"% {p.replace('_', ' ')}" for p in RUN_PHASES)
    headers = ["method", "runs", "mean mAP (shared cells)", "median s/run", unit, "data prep s", "peak MiB", *phases,
               f"x {block['baseline'] or 'baseline'}"]
    body = [[_escape(r["method"], fmt), r["runs"], map_cells(r), f"{r['median_s']:.1f}", f"{r['hours']:.3f}",
             f"{r['data_s']:.1f}", f"{r['peak_memory_bytes'] / 2**20:.0f}",
             *(f"{100 * r['phases'][p]:.1f}" for p in RUN_PHASES),
             "-" if r["ratio"] is None else f"{r['ratio']:.2f}"] for r in block["rows"]]
    return tabulate(body, [_escape(h, fmt) for h in headers], tablefmt=fmt, disable_numparse=True,
                    colalign=_align(headers))


def detection_table(table: dict, fmt: str = "simple") -> str:
    """One noise setting's detection scores: per method and direction P, R, F1, AUPRC (mean (std))."""
    headers = ["method", "n"] + [f"{short} {m}" for d, short in (("missed_positive", "missed"),
                                                                  ("spurious_positive", "spurious"))
                                 for _, m in detection.METRICS]
    body = [[_escape(r["method"], fmt), str(r["n"]) + "".join(f" [{f}]" for f in r["flags"])]
            + [detection.value_text(r["directions"][d][m]) for d, *_ in detection.DIRECTIONS for m, _ in detection.METRICS]
            for r in table["rows"]]
    body.append([_escape("base rate (AUPRC of no knowledge)", fmt), ""]
                + [text for d, *_ in detection.DIRECTIONS
                   for text in ("", "", "", detection.base_text(table["base_rate"][d]))])
    return tabulate(body, [_escape(h, fmt) for h in headers], tablefmt=fmt, disable_numparse=True,
                    colalign=_align(headers))


def variance_table(entries: list[dict], fmt: str = "simple") -> str:
    """Per cell with more than one noise draw: the split of its mAP's variance into seeds and draws."""
    headers = ["method", "noise", "seeds x draws", "mean mAP", "protocol std", "std seed", "std draw",
               "std residual", "std total", "share seed", "share draw", "share residual"]
    body = []
    for e in entries:
        sp = e["split"]
        head = [_escape(e["method"], fmt), f"{e['noise']} {e['label']}"]
        if sp is None:
            why = "; ".join(e["flags"]) or "no complete block of 2 seeds x 2 draws"
            body.append(head + [_escape(why, fmt)] + [""] * (len(headers) - 3))
            continue
        size = f"{len(sp['seeds'])} x {len(sp['draws'])}" + (f" ({sp['left_out']} left out)" if sp["left_out"] else "")
        body.append(head + [size, variance.fmt(sp["mean"], 3), variance.fmt(sp["protocol_std"])]
                    + [variance.fmt(sp["std"][k]) for k in ("seed", "draw", "residual")]
                    + [variance.fmt(sp["std_total"])]
                    + [_escape(variance.share_text(sp["share"][k]), fmt) for k in ("seed", "draw", "residual")])
    return tabulate(body, [_escape(h, fmt) for h in headers], tablefmt=fmt, disable_numparse=True,
                    colalign=("left", "left") + ("right",) * (len(headers) - 2))


def encoder_lines(encoders: list[dict]) -> str:
    return "\n".join(f"record set {e['record_set']}: {e['encoder']}, {e['runs']} run(s)"
                     + (f", {e['about']}" if e["timing_only"] else "")
                     + ("" if e["in_results"] else "; left out of the result tables (--timing-encoders)")
                     for e in encoders)


def _align(headers: list[str]) -> tuple[str, ...]:
    """Method names left, numbers right (also in LaTeX, where tabulate would left-align text)."""
    return ("left",) + ("right",) * (len(headers) - 1)


def map_cells(line: dict) -> str:
    return "-" if line["mean_map"] is None else f"{line['mean_map']:.3f} ({line['cells']})"


def _escape(text: str, fmt: str) -> str:
    if fmt == "latex_raw":
        return "".join("\\" + ch if ch in "&%$#_{}" else ch for ch in text)
    return text


def _block(title: str, body: str, fmt: str, note: str = "") -> str:
    """A titled table: a line above it in the terminal, a heading in Markdown, a float in LaTeX."""
    if fmt == "latex_raw":
        caption = _escape(title + (f". {note}" if note else ""), fmt)
        return f"\\begin{{table}}[ht]\n\\centering\\small\n\\caption{{{caption}}}\n{body}\n\\end{{table}}\n"
    heading = f"## {title}\n" if fmt == "github" else title
    return "\n".join([heading, body] + ([note] if note else [])) + "\n"


def render(board: dict, fmt: str = "simple") -> str:
    """Every table of the board in one text: ``simple`` (terminal), ``github`` (Markdown), ``latex_raw``."""
    if not board["tracks"]:
        return "% no run records yet\n" if fmt == "latex_raw" else "no run records yet\n"
    out = []
    for track in board["tracks"]:
        name = track["track"]
        if line := published_line(track):
            out.append((f"% {line}" if fmt == "latex_raw" else line) + "\n")
        for t in track["tasks"]:
            out.append(_block(f"Track {name}, task {t['task']}: last-epoch test mAP", result_table(t, fmt), fmt))
            out.append(_block(f"Track {name}, task {t['task']}: robustness (areas; mAP relative to "
                              f"{t['robustness']['baseline'] or 'the baseline'})", robustness_table(t, fmt), fmt))
            for d in t.get("detection", []):
                out.append(_block(f"Track {name}, task {t['task']}, {d['noise']} {d['label']}: detection of the "
                                  f"wrong training labels at the last epoch", detection_table(d, fmt), fmt))
            if t.get("variance"):
                out.append(_block(f"Track {name}, task {t['task']}: variance of mAP over training seeds and noise "
                                  f"draws", variance_table(t["variance"], fmt), fmt))
        out.append(_block(f"Track {name}: average rank", summary_table(track["summary"], fmt), fmt,
                          summary_line(track["summary"])))
        out += [_block(f"Track {name}: compute on {b['title']}", compute_table(b, fmt), fmt)
                for b in track["compute"]]
        out.append(_block(f"Track {name}: note encoders", encoder_lines(track["encoders"]), fmt))
    caption = board["caption"] + (" Best: '<', tie group: '='." if fmt == "simple" else "")
    if any(t.get("detection") for track in board["tracks"] for t in track["tasks"]):
        caption += " " + board["detection_legend"]
    if any(t.get("variance") for track in board["tracks"] for t in track["tasks"]):
        caption += " " + board["variance_legend"]
    out.append(caption if fmt != "latex_raw" else "% " + caption)
    return "\n".join(out) + "\n"
