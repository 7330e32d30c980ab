"""The leaderboard's statistics, each a thin layer over SciPy so that tests can check it against SciPy.

Conventions (stated in every caption): std with ddof=1; one-sided tests of "the best is better";
significance stars from the (optionally corrected) p-value; average ranks with rank 1 = highest mAP.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

DDOF = 1
ALPHA = 0.05
POWER = 0.8
TESTS = ("paired", "welch")
CORRECTIONS = ("none", "holm", "bh")
STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def describe(values) -> dict:
    """n, mean, std (ddof=1; None under 2 values) and standard error of a cell's seeds."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    std = float(np.std(x, ddof=DDOF)) if n > DDOF else None
    return {"n": n, "mean": float(np.mean(x)) if n else None, "std": std,
            "se": std / math.sqrt(n) if std is not None else None}


def one_sided_p(best: dict, other: dict, test: str = "paired") -> float:
    """p of H1 "best > other" from per-seed values ({seed: mAP}); NaN when the test is undefined.

    Paired uses only the seeds both have: with the reference noise seed every method sees the same
    noisy labels per seed, so the seed is the natural pairing. Welch uses every seed of each side.
    """
    if test == "paired":
        seeds = sorted(set(best) & set(other))
        if len(seeds) < 2:
            return math.nan
        a, b = [best[s] for s in seeds], [other[s] for s in seeds]
        if np.allclose(np.subtract(a, b), np.subtract(a, b)[0]):
            # Constant differences: t is infinite or undefined; SciPy warns and gives 0/NaN.
            return 0.0 if a[0] > b[0] else math.nan
        return float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    if test == "welch":
        a, b = list(best.values()), list(other.values())
        if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
            return math.nan
        return float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    raise ValueError(f"unknown test '{test}', expected one of {TESTS}")


def paired_mde(sd_diff: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable effect of the one-sided paired t-test over ``n`` seeds: the true mean
    difference it detects with probability ``power`` at level ``alpha`` when the per-seed differences
    have std ``sd_diff``. Exact, from the non-central t: the non-centrality d with
    P(T(n-1, d) > t_{1-alpha, n-1}) = power, times sd_diff / sqrt(n) (the normal approximation
    z_{1-alpha} + z_power understates it badly at 3 seeds). None under 2 seeds or without a spread."""
    if n < 2 or sd_diff is None or not math.isfinite(sd_diff):
        return None
    df = n - 1
    critical = stats.t.ppf(1 - alpha, df)
    # Power rises with d from alpha (d = 0); the root is below critical + 10 for any power < 1 - 1e-9.
    d = optimize.brentq(lambda d: stats.nct.sf(critical, df, d) - power, 0.0, critical + 50.0, xtol=1e-12)
    return float(d * sd_diff / math.sqrt(n))


def pooled_sd(groups: list[list[float]]) -> tuple[float | None, int]:
    """The std (ddof=1) pooled over groups of values (each about its own mean), and its degrees of freedom."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if not df:
        return None, 0
    ss = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups if len(g) > 1)
    return math.sqrt(ss / df), df


def adjust(pvalues, correction: str = "none") -> list[float]:
    """Multiple-comparison adjusted p-values (NaNs are left out of the family and stay NaN).

    holm: step-down family-wise error control; bh: Benjamini-Hochberg false discovery rate (SciPy's).
    """
    p = np.asarray(pvalues, dtype=float)
    out = p.copy()
    ok = ~np.isnan(p)
    if correction == "none" or not ok.any():
        return out.tolist()
    if correction == "bh":
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
        return out.tolist()
    if correction == "holm":
        q = p[ok]
        order = np.argsort(q, kind="stable")
        m = len(q)
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
        out[ok] = adjusted
        return out.tolist()
    raise ValueError(f"unknown correction '{correction}', expected one of {CORRECTIONS}")


def stars(p: float | None) -> str:
    if p is None or math.isnan(p):
        return ""
    return next((mark for level, mark in STARS if p < level), "")


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Mean rank per method (columns) over cells (rows); rank 1 = highest score, ties averaged."""
    ranks = stats.rankdata(-np.asarray(scores, dtype=float), axis=1)
    return ranks.mean(axis=0)


def friedman(scores: np.ndarray) -> tuple[float, float]:
    """Friedman chi-square statistic and p over cells (rows) x methods (columns); needs 3+ methods."""
    result = stats.friedmanchisquare(*np.asarray(scores, dtype=float).T)
    return float(result.statistic), float(result.pvalue)


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of average ranks (Demsar 2006): q_alpha * sqrt(k (k+1) / (6 N))."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))
