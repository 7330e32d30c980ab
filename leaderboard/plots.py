"""Figures as inline SVG strings, byte-stable: a fixed hash salt, no date, text kept as text.

matplotlib's object API only (no pyplot): no global figure state, no GUI backend.
"""
from __future__ import annotations

import io

import matplotlib
from matplotlib.figure import Figure

RC = {"svg.hashsalt": "ehrbench", "svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
      "axes.spines.right": False, "font.family": "DejaVu Sans"}
COLORS = matplotlib.colormaps["tab10"].colors


def color_map(methods) -> dict:
    return {m: COLORS[i % len(COLORS)] for i, m in enumerate(sorted(methods))}


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as an inline ``<svg>``; its element ids get ``prefix`` so that several figures
    on one page do not share ids (matplotlib numbers them from 1 in every file)."""
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # inline: drop the XML declaration and doctype
    for old in ('id="', 'url(#', 'href="#'):
        text = text.replace(old, f"{old}{prefix}-")
    return text


def _figure(width: float, height: float, widths: list[float] | None = None):
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(1, len(widths or [1]), squeeze=False, width_ratios=widths)[0]
    return fig, axes


def map_vs_noise(table: dict, colors: dict, prefix: str) -> str:
    """One panel per noise family: mean mAP per setting, a band of +-1 std over seeds, the seeds as dots."""
    spans = table["families"]
    with matplotlib.rc_context(RC):
        widths = [max(fam["span"], 2) for fam in spans]  # panels as wide as their settings need
        fig, axes = _figure(0.85 * sum(widths) + 2.5, 2.8, widths)
        start = 0
        for ax, fam in zip(axes, spans):
            noises = table["noises"][start:start + fam["span"]]
            for row in table["rows"]:
                cells = row["cells"][start:start + fam["span"]]
                _family_line(ax, cells, colors[row["method"]], row["method"])
            ax.set_xticks(range(len(noises)), [n["label"] for n in noises])
            ax.set_title(f"{fam['name']} noise", fontsize=9)
            ax.set_xlabel("(rho+, rho-) in %")
            start += fam["span"]
        axes[0].set_ylabel("last-epoch test mAP")
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
        return to_svg(fig, prefix)


def _family_line(ax, cells: list[dict], color, label: str) -> None:
    xs = [i for i, c in enumerate(cells) if c["mean"] is not None]
    means = [cells[i]["mean"] for i in xs]
    stds = [cells[i]["std"] or 0.0 for i in xs]
    ax.plot(xs, means, marker="o", ms=3, color=color, label=label, lw=1.2)
    ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                    color=color, alpha=0.15, lw=0)
    for i in xs:
        ys = [v for _, v in cells[i]["values"]]
        ax.scatter([i] * len(ys), ys, s=5, color=color, alpha=0.6, lw=0)


def relative_to_baseline(table: dict, colors: dict, prefix: str) -> str:
    """Each row's mean mAP over the baseline's per setting (``robustness.summary``), 1 = as good."""
    summary, noises = table["robustness"], table["noises"]
    with matplotlib.rc_context(RC):
        fig, (ax,) = _figure(0.7 * len(noises) + 3.0, 2.6)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        for row in summary["rows"]:
            points = [(i, row["relative"][n["name"]]) for i, n in enumerate(noises) if row["relative"][n["name"]]]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", ms=3, lw=1.2, color=colors[row["method"]], label=row["method"])
        ax.set_xticks(range(len(noises)), [n["label"] for n in noises])
        ax.set_xlabel("noise setting (rho+, rho-) in %")
        ax.set_ylabel(f"mAP / {summary['baseline']}")
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
        return to_svg(fig, prefix)


def cost_vs_map(points: list[dict], colors: dict, hardware: str, prefix: str) -> str:
    """Median wall time per run against mean mAP over the method's cells on that hardware."""
    with matplotlib.rc_context(RC):
        fig, (ax,) = _figure(4.8, 3.0)
        for p in (p for p in points if p["mean_map"] is not None):
            ax.scatter([p["median_s"]], [p["mean_map"]], color=colors[p["method"]], s=24, zorder=3)
            ax.annotate(p["method"], (p["median_s"], p["mean_map"]), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)
        ax.set_xlabel(f"median wall time per run (s) on {hardware}")
        ax.set_ylabel("mean mAP over its cells")
        ax.grid(alpha=0.3)
        return to_svg(fig, prefix)


def critical_difference(summary: dict, prefix: str) -> str:
    """Demsar's diagram: methods at their average rank; a red bar joins methods whose ranks differ by
    less than the Nemenyi critical difference (not distinguishable)."""
    ranks, methods, cd = summary["ranks"], summary["methods"], summary["cd"]
    k, half = len(methods), (len(methods) + 1) // 2
    cliques = _cliques([ranks[m] for m in methods], cd)
    top = -0.6 - 0.3 * len(cliques)  # clique bars under the axis, then one label row per method
    bottom = top - 0.55 * half
    with matplotlib.rc_context(RC):
        fig, (ax,) = _figure(6.4, 0.75 * (1.8 - bottom))
        ax.set_xlim(k + 0.3, 0.7)  # rank 1 (best) on the right, as in Demsar's figures
        ax.set_ylim(bottom - 0.2, 1.7)
        ax.axis("off")
        ax.hlines(0, 1, k, color="black", lw=1)
        for r in range(1, k + 1):
            ax.vlines(r, 0, 0.2, color="black", lw=1)
            ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=8)
        ax.hlines(1.2, 1, 1 + cd, color="black", lw=2)
        ax.text(1 + cd / 2, 1.3, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
        for i, m in enumerate(methods):  # best half labelled on the right, the rest on the left
            right = i < half
            y = top - 0.55 * ((i if right else k - 1 - i) + 0.5)
            edge = 0.7 if right else k + 0.3
            ax.plot([ranks[m], ranks[m], edge], [0, y, y], color="black", lw=0.8)
            ax.text(edge, y, f" {m} ({ranks[m]:.2f}) ", ha="left" if right else "right", va="center", fontsize=8)
        for j, (lo, hi) in enumerate(cliques):
            ax.hlines(-0.45 - 0.3 * j, lo - 0.05, hi + 0.05, color="tab:red", lw=3)
        return to_svg(fig, prefix)


def _cliques(sorted_ranks: list[float], cd: float) -> list[tuple[float, float]]:
    """Maximal runs of consecutive methods whose rank spread is below the critical difference."""
    spans = []
    for i in range(len(sorted_ranks)):
        j = i
        while j + 1 < len(sorted_ranks) and sorted_ranks[j + 1] - sorted_ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return [(sorted_ranks[a], sorted_ranks[b]) for a, b in spans]
