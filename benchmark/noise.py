"""Label noise for training labels: class-conditional flips per (sample, label) entry.

The default draw reproduces the reference exactly (spec §2): NumPy's legacy ``RandomState(123)``,
one uniform ``u`` per entry drawn label-major (all samples of label 0, then label 1, ...), and an
entry is kept iff ``u < 1 - rho_c`` where ``c`` is its clean value. A draw is consumed even when
the rate is 0, so every setting sees the same uniforms.

Flips are therefore nested: for one draw, the entries of a class flipped at rate rho are a subset of
those flipped at any rate rho' >= rho of that class (``u >= 1 - rho`` implies ``u >= 1 - rho'``), for
every label. Within a noise seed, a method's mAP across the grid's rates is measured on nested label
sets, so the curves of mAP against rho are paired (tests/test_noise.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .protocol import REFERENCE_NOISE_SEED, NoiseSetting

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
    n, num_labels = y.shape
    u = np.random.RandomState(seed).random_sample(num_labels * n).reshape(num_labels, n).T
    keep = np.where(y == 1, u < 1.0 - rho_plus, u < 1.0 - rho_minus)
    return np.where(keep, y, 1 - y).astype(y.dtype)


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

    def summary(self) -> dict:
        return {
            "rho_plus": self.rho_plus,
            "rho_minus": self.rho_minus,
            "seed": self.seed,
            "checksum": self.checksum,
            "realised_rho_plus": self.realised_rho_plus,
            "realised_rho_minus": self.realised_rho_minus,
        }


def make_noisy(clean: np.ndarray, setting: NoiseSetting, seed: int) -> NoisyLabels:
    """Apply a protocol noise setting to clean training labels (never to test labels)."""
    y = np.asarray(clean)
    rp, rm = setting.rates(y.shape[1], float(y.sum(axis=1).mean()))
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
    )
