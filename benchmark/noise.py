"""Label noise for training labels: class-conditional flips, and instance-dependent under-coding.

Class-conditional flips (families sym, asym, bal). The default draw reproduces the reference exactly
(spec §2): NumPy's legacy ``RandomState(123)``, one uniform ``u`` per entry drawn label-major (all samples
of label 0, then label 1, ...), and an entry is kept iff ``u < 1 - rho_c`` where ``c`` is its clean value.
A draw is consumed even when the rate is 0, so every setting sees the same uniforms.

Flips are therefore nested: for one draw, the entries of a class flipped at rate rho are a subset of
those flipped at any rate rho' >= rho of that class (``u >= 1 - rho`` implies ``u >= 1 - rho'``), for
every label. Within a noise seed, a method's mAP across the grid's rates is measured on nested label
sets, so the curves of mAP against rho are paired (tests/test_noise.py).

Under-coding (family under, ``under-RP``): a coder misses a clean positive more often the weaker the
stay's evidence for the label (``data.evidence``); negatives are never touched (rho- = 0). The law, per
label l, with the same ``RandomState(seed)``:

1. Counts. The first N*L uniforms are the reference draw above: ``k_l`` = the positives of l with
   ``u >= 1 - rho``, exactly the entries the class-conditional twin ``asym-RP-0`` flips. So each label's
   realised rho+ is the twin's, to the entry: the nominal rate up to the binomial sampling of the draw.
2. Which positives. The next N*L uniforms ``v`` (label-major too) give each entry a standard logistic
   ``eps = log(v / (1 - v))``. With ``z`` the evidence standardised over the label's positives (mean 0,
   sd 1; 0 for every positive of a label whose evidence does not vary), the coder's propensity is
   ``strength * z + eps`` (strength = ``UNDER_STRENGTH``, 2); the ``k_l`` positives of lowest propensity
   are dropped (ties, of probability 0, to the lower row).

This is a latent-threshold coder: a positive is missed iff its propensity falls below a per-label
threshold set so that the miss count is ``k_l``. For many positives, P(missed | z) -> sigmoid(tau_l -
strength * z), with ``tau_l`` solving mean_i sigmoid(tau_l - strength * z_i) = rho: a logistic curve
falling in the evidence, the odds of a miss divided by e^2 (7.4) per sd of evidence.

Nested too: the counts are the twin's, which are nested across rates, and the propensities do not depend
on the rate, so for one draw the positives dropped by under-20 are a subset of those dropped by under-40
(any rho <= rho'), for every label.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .protocol import REFERENCE_NOISE_SEED, UNDER_STRENGTH, NoiseSetting

# Named switch: where the noise seed comes from.
#   "reference" — seed 123 for every run seed, as the reference code does (B8);
#   "per-seed"  — the run seed, so that seeds also vary the noisy label matrix.
NOISE_SEED_POLICIES = ("reference", "per-seed")


def noise_seed_for(policy: str, run_seed: int) -> int:
    if policy == "reference":
        return REFERENCE_NOISE_SEED
    if policy == "per-seed":
        return run_seed
    raise ValueError(f"noise seed policy must be one of {NOISE_SEED_POLICIES}, got {policy!r}")


# Noise draws (``ehrbench bench --noise-draws K``): draw 0 is the policy's seed above, so its runs keep
# their spec and run id; draw d >= 1 enters the spec as {"index": d, "policy": NOISE_DRAW_POLICY} and
# draws with ``noise_draw_seed``. Under the reference policy draw d is one noisy matrix for every run
# seed, so a grid of seeds x draws crosses training seeds with noise draws (leaderboard/variance.py).
NOISE_DRAW_POLICY = "seed-sequence"


def noise_draw_seed(base_seed: int, draw: int) -> int:
    """The noise seed of draw ``draw`` of a run whose draw-0 seed is ``base_seed``: ``base_seed`` itself
    for draw 0, else the first 32-bit word of ``numpy.random.SeedSequence([base_seed, draw])`` (a
    well-mixed seed for ``RandomState``, reproducible from the two numbers alone)."""
    if draw == 0:
        return base_seed
    return int(np.random.SeedSequence([base_seed, draw]).generate_state(1)[0])


def spec_noise_seed(spec: dict) -> int:
    """The noise seed a run spec draws its noisy labels with: its policy's, then its noise draw's."""
    base = noise_seed_for(spec["noise_seed_policy"], spec["seed"])
    draw = spec.get("noise_draw")
    if draw is None:
        return base
    if not (isinstance(draw, dict) and draw.get("policy") == NOISE_DRAW_POLICY and isinstance(draw.get("index"), int)
            and not isinstance(draw.get("index"), bool) and draw["index"] >= 1):
        raise ValueError(f"spec.noise_draw must be {{'index': d >= 1, 'policy': '{NOISE_DRAW_POLICY}'}}, got {draw!r}")
    return noise_draw_seed(base, draw["index"])


def flip_labels(clean: np.ndarray, rho_plus: float, rho_minus: float, seed: int) -> np.ndarray:
    """Noisy copy of a binary ``[N, L]`` label matrix, drawn by the reference's rule."""
    y = np.asarray(clean)
    if y.ndim != 2 or not np.isin(y, (0, 1)).all():
        raise ValueError("clean labels must be a binary [samples, labels] matrix")
    u = _uniforms(np.random.RandomState(seed), *y.shape)
    keep = np.where(y == 1, u < 1.0 - rho_plus, u < 1.0 - rho_minus)
    return np.where(keep, y, 1 - y).astype(y.dtype)


def _uniforms(rs: np.random.RandomState, n: int, num_labels: int) -> np.ndarray:
    """One uniform per entry of an ``[n, num_labels]`` matrix, drawn label-major as the reference does."""
    return rs.random_sample(num_labels * n).reshape(num_labels, n).T


def under_code(clean: np.ndarray, rho_plus: float, evidence: np.ndarray, seed: int,
               strength: float = UNDER_STRENGTH) -> np.ndarray:
    """Noisy copy of a binary ``[N, L]`` label matrix: per label, the twin's count of positives
    dropped, the least evident first up to logistic noise (the module docstring's law)."""
    y = np.asarray(clean)
    if y.ndim != 2 or not np.isin(y, (0, 1)).all():
        raise ValueError("clean labels must be a binary [samples, labels] matrix")
    e = np.asarray(evidence, dtype=np.float64)
    if e.shape != y.shape:
        raise ValueError(f"evidence has shape {e.shape}, the labels {y.shape}: one score per (sample, label) expected")
    if not np.isfinite(e[y == 1]).all():
        raise ValueError("evidence must be finite for every positive")
    num_labels = y.shape[1]
    counts = (flip_labels(y, rho_plus, 0.0, seed) != y).sum(0)  # the twin's flips, label by label
    rs = np.random.RandomState(seed)
    _uniforms(rs, *y.shape)  # the twin's draw; the coder's noise is the stream's next one
    v = _uniforms(rs, *y.shape)
    with np.errstate(divide="ignore"):
        eps = np.log(v) - np.log1p(-v)
    noisy = y.copy()
    for label in range(num_labels):
        pos = np.flatnonzero(y[:, label] == 1)
        if not counts[label]:
            continue
        propensity = strength * standardised(e[pos, label]) + eps[pos, label]
        dropped = pos[np.lexsort((pos, propensity))[:counts[label]]]
        noisy[dropped, label] = 0
    return noisy.astype(y.dtype)


def standardised(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / sd`` (population sd); zeros where ``x`` does not vary."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return np.zeros_like(x)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 * max(1.0, abs(x).max()) else np.zeros_like(x)


def label_checksum(labels: np.ndarray) -> str:
    """sha256 of a label matrix's shape and bytes, as uint8: identical matrices, identical sums."""
    a = np.ascontiguousarray(np.asarray(labels), dtype=np.uint8)
    h = hashlib.sha256(f"{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class NoisyLabels:
    labels: np.ndarray  # [N, L] noisy training labels, the only training labels a method sees
    rho_plus: float
    rho_minus: float
    seed: int
    checksum: str
    realised_rho_plus: float  # share of clean positives flipped to 0
    realised_rho_minus: float  # share of clean negatives flipped to 1
    # Per label (None where the label has no clean positive, or no clean negative).
    realised_rho_plus_per_label: tuple[float | None, ...] = ()
    realised_rho_minus_per_label: tuple[float | None, ...] = ()
    under: dict | None = None  # under-coding only: the law's strength, the twin, the evidence (source, checksum)

    def summary(self) -> dict:
        out = {
            "rho_plus": self.rho_plus,
            "rho_minus": self.rho_minus,
            "seed": self.seed,
            "checksum": self.checksum,
            "realised_rho_plus": self.realised_rho_plus,
            "realised_rho_minus": self.realised_rho_minus,
            "realised_rho_plus_per_label": list(self.realised_rho_plus_per_label),
            "realised_rho_minus_per_label": list(self.realised_rho_minus_per_label),
        }
        if self.under is not None:
            out["under_coding"] = self.under
        return out


def make_noisy(clean: np.ndarray, setting: NoiseSetting, seed: int, evidence=None) -> NoisyLabels:
    """Apply a protocol noise setting to clean training labels (never to test labels). Under-coding
    needs ``evidence``: a ``data.evidence.Evidence`` of these training labels, or its ``[N, L]`` values."""
    y = np.asarray(clean)
    rp, rm = setting.rates(y.shape[1], float(y.sum(axis=1).mean()))
    under = None
    if setting.family == "under":
        if evidence is None:
            raise ValueError(f"noise setting {setting.name} (under-coding) needs the task's evidence")
        values = getattr(evidence, "values", evidence)
        noisy = under_code(y, rp, values, seed)
        under = {"strength": UNDER_STRENGTH, "twin": setting.twin().name}
        if hasattr(evidence, "summary"):
            under["evidence"] = evidence.summary()
    else:
        noisy = flip_labels(y, rp, rm, seed)
    pos, neg = y == 1, y == 0
    flipped = noisy != y
    return NoisyLabels(
        labels=noisy,
        rho_plus=rp,
        rho_minus=rm,
        seed=seed,
        checksum=label_checksum(noisy),
        realised_rho_plus=float(flipped[pos].mean()) if pos.any() else 0.0,
        realised_rho_minus=float(flipped[neg].mean()) if neg.any() else 0.0,
        realised_rho_plus_per_label=_per_label(flipped, pos),
        realised_rho_minus_per_label=_per_label(flipped, neg),
        under=under,
    )


def _per_label(flipped: np.ndarray, entries: np.ndarray) -> tuple[float | None, ...]:
    counts = entries.sum(0)
    hits = (flipped & entries).sum(0)
    return tuple(float(h / c) if c else None for h, c in zip(hits, counts))
