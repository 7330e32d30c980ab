"""``ehrbench noise show``: what a noise setting does to a task's training labels.

Per label and direction, the realised flip rates (and, for under-coding, its twin's beside them); the
noisy matrix's checksum; for under-coding the evidence's source and checksum and the evidence-vs-flip
curve: the share of positives dropped by decile of their evidence, under the setting, under its
twin and as the law expects it. A terminal table and a PNG (matplotlib's object API, no pyplot).

Deciles are taken within each label, over its clean positives, by mid-rank (so tied evidence shares a
decile; a label whose evidence does not vary puts all its positives in the middle one), then pooled
over labels: decile 1 holds each label's least evident tenth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .noise import NoisyLabels, standardised
from .protocol import UNDER_STRENGTH, NoiseSetting

DECILES = 10


def evidence_deciles(clean: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """[N, L] decile (0-9) of each clean positive's evidence within its label; -1 on negatives."""
    from scipy.stats import rankdata

    y = np.asarray(clean)
    out = np.full(y.shape, -1, dtype=np.int64)
    for label in range(y.shape[1]):
        pos = np.flatnonzero(y[:, label] == 1)
        if len(pos):
            ranks = rankdata(np.asarray(evidence)[pos, label], method="average")
            out[pos, label] = np.minimum(DECILES - 1, np.floor(DECILES * (ranks - 0.5) / len(pos))).astype(np.int64)
    return out


def expected_miss(clean: np.ndarray, evidence: np.ndarray, rates: np.ndarray,
                  strength: float = UNDER_STRENGTH) -> np.ndarray:
    """[N, L] the law's limit P(missed | z) = sigmoid(tau_l - strength * z) on positives (NaN elsewhere),
    with tau_l solving mean sigmoid(tau_l - strength * z) = ``rates[l]`` (by bisection)."""
    y = np.asarray(clean)
    out = np.full(y.shape, np.nan)
    for label in range(y.shape[1]):
        pos = np.flatnonzero(y[:, label] == 1)
        rate = rates[label]
        if not len(pos) or rate is None:
            continue
        z = strength * standardised(np.asarray(evidence)[pos, label])
        if rate <= 0 or rate >= 1:
            out[pos, label] = float(rate >= 1)
            continue
        lo, hi = -50.0, 50.0
        for _ in range(100):
            tau = (lo + hi) / 2
            lo, hi = (tau, hi) if _sigmoid(tau - z).mean() < rate else (lo, tau)
        out[pos, label] = _sigmoid((lo + hi) / 2 - z)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Report:
    task: str
    track: str
    setting: NoiseSetting
    noisy: NoisyLabels
    label_names: list[str]
    clean: np.ndarray
    twin: NoiseSetting | None = None
    twin_noisy: NoisyLabels | None = None
    evidence: object | None = None  # data.evidence.Evidence, under-coding only

    def per_label(self) -> list[dict]:
        rows = []
        pos, neg = self.clean.sum(0), (1 - self.clean).sum(0)
        for j, name in enumerate(self.label_names):
            row = {"label": name, "positives": int(pos[j]), "negatives": int(neg[j]),
                   "rho_plus": self.noisy.realised_rho_plus_per_label[j],
                   "rho_minus": self.noisy.realised_rho_minus_per_label[j],
                   "se": math.sqrt(self.noisy.rho_plus * (1 - self.noisy.rho_plus) / pos[j]) if pos[j] else None}
            if self.twin_noisy is not None:
                row["twin_rho_plus"] = self.twin_noisy.realised_rho_plus_per_label[j]
                row["twin_rho_minus"] = self.twin_noisy.realised_rho_minus_per_label[j]
            rows.append(row)
        return rows

    def curve(self) -> list[dict]:
        """Flip rate of clean positives by evidence decile (under-coding only)."""
        if self.evidence is None:
            return []
        values = self.evidence.values
        dec = evidence_deciles(self.clean, values)
        z = np.full(self.clean.shape, np.nan)
        for j in range(self.clean.shape[1]):
            pos = self.clean[:, j] == 1
            z[pos, j] = standardised(values[pos, j])
        expected = expected_miss(self.clean, values, self.noisy.realised_rho_plus_per_label)
        dropped = (self.clean == 1) & (self.noisy.labels == 0)
        twin = (self.clean == 1) & (self.twin_noisy.labels == 0) if self.twin_noisy is not None else None
        rows = []
        for d in range(DECILES):
            cell = dec == d
            n = int(cell.sum())
            if not n:
                continue
            rows.append({"decile": d + 1, "positives": n, "mean_evidence": float(values[cell].mean()),
                         "mean_z": float(z[cell].mean()), "flip_rate": float(dropped[cell].mean()),
                         "twin_flip_rate": float(twin[cell].mean()) if twin is not None else None,
                         "law": float(expected[cell].mean())})
        return rows

    def render(self, fmt: str = "simple") -> str:
        from tabulate import tabulate

        s, n = self.setting, self.noisy
        lines = [f"{self.task} ({self.track} track), {len(self.clean):,} training samples x {self.clean.shape[1]} labels",
                 f"noise {s.name} {s.label()}, noise seed {n.seed}: nominal rho+ {n.rho_plus:.4g}, rho- {n.rho_minus:.4g}",
                 f"noisy-label checksum {n.checksum}"]
        if self.twin_noisy is not None:
            lines.append(f"twin {self.twin.name}: checksum {self.twin_noisy.checksum}")
        if self.evidence is not None:
            lines.append(f"evidence: {self.evidence.source} (version {self.evidence.summary()['version']}), "
                         f"checksum {self.evidence.checksum}")
        headers = ["label", "pos", "neg", "rho+ realised", "rho- realised"]
        if self.twin_noisy is not None:
            headers = ["label", "pos", "rho+ realised", f"{self.twin.name} rho+", "|diff| / SE", "rho- realised"]
        rows = []
        for r in self.per_label():
            if self.twin_noisy is not None:
                gap = (abs(r["rho_plus"] - n.rho_plus) / r["se"]) if r["se"] else None
                rows.append([r["label"][:48], r["positives"], _f(r["rho_plus"]), _f(r["twin_rho_plus"]),
                             _f(gap, 2), _f(r["rho_minus"])])
            else:
                rows.append([r["label"][:48], r["positives"], r["negatives"], _f(r["rho_plus"]), _f(r["rho_minus"])])
        total = ["all labels", int(self.clean.sum())]
        if self.twin_noisy is not None:
            total += [_f(n.realised_rho_plus), _f(self.twin_noisy.realised_rho_plus), "", _f(n.realised_rho_minus)]
        else:
            total += [int((1 - self.clean).sum()), _f(n.realised_rho_plus), _f(n.realised_rho_minus)]
        rows.append(total)
        lines += ["", "realised flip rates per label (rho+ = P(1->0) among clean positives, rho- = P(0->1) among "
                      "clean negatives)" + ("; |diff| / SE: distance of rho+ from the nominal in binomial "
                                            "standard errors" if self.twin_noisy is not None else ""),
                  tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)]
        curve = self.curve()
        if curve:
            table = [[c["decile"], c["positives"], f"{c['mean_evidence']:.3f}", f"{c['mean_z']:+.2f}",
                      f"{c['flip_rate']:.4f}", _f(c["twin_flip_rate"]), f"{c['law']:.4f}"] for c in curve]
            lines += ["", "flip rate of clean positives by evidence decile (within each label, pooled; 1 = least "
                          "evident); law: its limit sigmoid(tau_l - 2 z)",
                      tabulate(table, headers=["decile", "positives", "mean evidence", "mean z", f"{s.name}",
                                               f"{self.twin.name}", "law"], tablefmt=fmt, disable_numparse=True)]
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        import matplotlib
        from matplotlib.figure import Figure

        rc = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "font.family": "DejaVu Sans"}
        path = Path(path)
        curve = self.curve()
        with matplotlib.rc_context(rc):
            fig = Figure(figsize=(11 if curve else 8, 4.2))
            axes = fig.subplots(1, 2 if curve else 1, squeeze=False,
                                width_ratios=[1, 1.6] if curve else None)[0]
            if curve:
                ax = axes[0]
                x = [c["decile"] for c in curve]
                ax.plot(x, [c["flip_rate"] for c in curve], "o-", color="C3", label=self.setting.name)
                ax.plot(x, [c["law"] for c in curve], ":", color="C3", alpha=0.7, label="law (limit)")
                ax.plot(x, [c["twin_flip_rate"] for c in curve], "s-", color="C0", label=self.twin.name)
                ax.axhline(self.noisy.rho_plus, color="grey", lw=0.8, ls="--")
                ax.set_xticks(range(1, DECILES + 1))
                ax.set_ylim(0, 1)
                ax.set_xlabel("evidence decile within label (1 = least evident)")
                ax.set_ylabel("share of clean positives dropped")
                ax.set_title("evidence vs flip", fontsize=9)
                ax.legend(frameon=False, fontsize=8)
            ax = axes[-1]
            rows = self.per_label()
            x = np.arange(len(rows))
            if self.twin_noisy is not None:
                ax.bar(x - 0.2, [r["rho_plus"] for r in rows], 0.4, color="C3", label=f"{self.setting.name} rho+")
                ax.bar(x + 0.2, [r["twin_rho_plus"] for r in rows], 0.4, color="C0", label=f"{self.twin.name} rho+")
            else:
                ax.bar(x - 0.2, [r["rho_plus"] or 0 for r in rows], 0.4, color="C3", label="rho+ (1->0)")
                ax.bar(x + 0.2, [r["rho_minus"] or 0 for r in rows], 0.4, color="C0", label="rho- (0->1)")
            top = max([r[k] or 0 for r in rows for k in ("rho_plus", "rho_minus", "twin_rho_plus") if k in r] + [0.05])
            ax.set_ylim(0, min(1.0, 1.3 * top))  # room for the legend above the bars
            for nominal in {self.noisy.rho_plus, self.noisy.rho_minus} - {0.0}:
                ax.axhline(nominal, color="grey", lw=0.8, ls="--")
            ax.set_xticks(x, [str(i + 1) for i in x], fontsize=7)
            ax.set_xlabel("label (column of the task card)")
            ax.set_ylabel("realised flip rate")
            ax.set_title(f"{self.task}: {self.setting.name}, noise seed {self.noisy.seed}", fontsize=9)
            ax.legend(frameon=False, fontsize=8, loc="upper right", ncols=2)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, format="png", dpi=120, metadata={"Software": None}, bbox_inches="tight")
        return path


def _f(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(spec, track: str, setting: NoiseSetting, seed: int, data=None) -> Report:
    """The report of ``setting`` on task ``spec`` (its data materialised unless given) for noise seed ``seed``."""
    from .data import materialise
    from .data.evidence import train_evidence
    from .noise import make_noisy

    data = data if data is not None else materialise(spec)
    clean = data.train.labels.numpy()
    if setting.family != "under":
        return Report(spec.name, track, setting, make_noisy(clean, setting, seed), list(data.label_names), clean)
    evidence = train_evidence(spec, data)
    twin = setting.twin()
    return Report(spec.name, track, setting, make_noisy(clean, setting, seed, evidence), list(data.label_names), clean,
                  twin, make_noisy(clean, twin, seed), evidence)
