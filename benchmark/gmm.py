"""Many independent one-dimensional two-component Gaussian mixtures, fitted at once.

Sample-selection methods fit one 2-component GMM per (label, observed class) on a per-entry score:
2C mixtures per epoch (50 on phenotyping), each over tens of thousands of values. Fitting them one
by one with scikit-learn costs seconds per epoch on the host; here all of them run as one batched EM
on the scores' device, with the same algorithm as scikit-learn's ``GaussianMixture`` in 1-D:

- initialisation: sklearn's ``init_params="kmeans"``, i.e. ``KMeans(2, n_init=1)`` on the group's
  values, then one M-step on its one-hot labels. Selection scores are discrete (ranks, run lengths),
  so their mixtures have several local optima and the start decides which one EM reaches. On such
  scores a value often lies exactly (in exact arithmetic) at the midpoint of the two centres, e.g.
  0.5 between the k-means++ centres 0 and 1 of rank-only scores, and then only rounding decides its
  cluster (sklearn's argmin gives a tie to the first centre, but the two distances are rarely equal
  to the bit). So the start (``_kmeans_high``) runs on the host in float64 NumPy with sklearn's
  arithmetic, operation for operation: the tolerance from the variance of the raw values; centring by
  NumPy's own mean (pairwise summation; a torch sum differs in the last bit, and moves the ties); the
  first centre by ``RandomState(random_state).choice(n, p=w / w.sum())`` (NumPy's cdf search) and the
  2 + floor(log 2) = 2 candidates from the same generator; distances as max((-2 c x + c^2) + x^2, 0);
  Lloyd's labels from c^2 - 2 x c, centres as (sequential sum) x (1 / count), its stopping rules and
  relocation of an empty cluster. The labels then go to the scores' device. On rank-only scores with
  such ties it gives sklearn's labels and, after EM, its fit (``tests/test_gmm.py``; the earlier
  start, with a torch mean and floor(u n), differed on 4 of 80 such groups by up to 0.52).

  Where the start cannot follow sklearn, and why:
  * Lloyd's centre sums. sklearn adds a cluster's values in OpenMP threads, one thread-local
    sequential sum per thread over blocks of 256 values (static schedule), then adds the partial
    sums under a lock in the order the threads finish. We add them one by one in data order, i.e.
    sklearn with one thread, which is every thread count for groups of at most 256 values (one
    block, one thread). For a larger group sklearn's result depends on its thread count, and from
    three threads on the lock order, so it need not be reproducible even on one machine: where a
    value lies exactly at the midpoint of the centres after a Lloyd step, the rounding of the sums
    decides it. ``tests/test_gmm.py`` holds such a group (380 values): sklearn with one thread and we
    put its 27 tied values in one cluster, sklearn with two or more threads in the other. This
    depends on sklearn's threading, not on its random stream (which is replayed exactly), and a
    batched sum cannot follow a run-time thread schedule.
  * The two k-means++ potentials are NumPy matrix-vector products, as in sklearn, so two candidates
    whose potentials are equal in exact arithmetic are ordered by NumPy's BLAS kernel: the same as
    sklearn with the same NumPy on the same CPU, not necessarily across BLAS builds.
  * Relocating an empty cluster takes the first of the farthest values (``argmax``), sklearn the one
    ``argpartition`` returns; they differ only between equally far values, and an empty cluster
    needs a group of duplicates in the first place.
- EM: E-step, M-step (``reg_covar`` added to each variance, ``10 * eps`` to each component mass), stop
  when the mean log-likelihood changes by less than ``tol`` (each mixture stops on its own). From the
  moments of 1, x and x^2 rather than sklearn's two-pass variance, so the parameters agree with
  sklearn's to about 1e-12, not to the bit (a continuous difference: only a log-likelihood change
  within rounding of ``tol`` could change the iteration count).

``backend="sklearn"`` fits the same mixtures one by one with scikit-learn (the reference's
implementation). Components are returned sorted by mean.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BACKENDS = ("torch", "sklearn")
EPS = float(np.finfo(np.float64).eps)  # sklearn adds 10 * eps to every component's mass


@dataclass
class Mixtures:
    """M mixtures of two 1-D Gaussians, components sorted by mean: each field is [M, 2], float64.
    ``valid`` [M] is False for a mixture fitted on fewer than two values (its numbers mean nothing)."""

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    valid: torch.Tensor
    iterations: torch.Tensor  # [M] EM iterations run

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """[M, n, 2] responsibilities of the (sorted) components for values ``x`` [M, n]."""
        logp = _component_log_prob(x.to(self.means.dtype), self.weights, self.means, self.variances)
        return torch.softmax(logp, dim=-1)


def fit(x: torch.Tensor, mask: torch.Tensor, backend: str = "torch", *, max_iter: int = 100, tol: float = 1e-3,
        reg_covar: float = 1e-6, random_state: int = 42) -> Mixtures:
    """Fit mixture m on the values ``x[m][mask[m]]``; ``x``, ``mask`` [M, n]. The defaults are
    scikit-learn's; ``random_state`` seeds the k-means++ start of both backends."""
    if backend == "torch":
        return fit_em(x, mask, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=random_state)
    if backend == "sklearn":
        return fit_sklearn(x, mask, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=random_state)
    raise ValueError(f"gmm backend must be one of {BACKENDS}, got {backend!r}")


def by_label_and_class(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (label, observed class) groups of an [N, C] score matrix as rows of ``fit``'s input:
    row 2l + v holds label l's scores with ``mask`` on the entries whose observed label is v."""
    x = scores.t().repeat_interleave(2, dim=0)  # [2C, N]
    cls = torch.arange(2, device=scores.device).repeat(scores.shape[1]).unsqueeze(1)
    return x, labels.t().repeat_interleave(2, dim=0) == cls


# --- batched EM ------------------------------------------------------------------------------------

def fit_em(x: torch.Tensor, mask: torch.Tensor, max_iter: int = 100, tol: float = 1e-3,
           reg_covar: float = 1e-6, random_state: int = 42) -> Mixtures:
    """All M mixtures at once on ``x``'s device, in float64 (the means of near-identical scores and
    sklearn's tol of 1e-3 on the log-likelihood need it), from the k-means start computed on the host.

    With two components everything an iteration needs is a per-mixture quadratic in x: the log-odds
    d = log p_1(x) - log p_0(x) gives the responsibility sigmoid(d) and log(p_0 + p_1) = log p_0 +
    softplus(d); the M-step needs only the responsibility-weighted moments of 1, x, x^2, and the
    log-likelihood's log p_0 part follows from the unweighted moments. So one iteration is a handful
    of elementwise passes and one batched matrix product."""
    w = mask.double()
    x = torch.where(mask, x.double(), 0.0)
    moments = torch.stack([w, w * x, w * x * x], -1)  # [M, n, 3]
    total = moments.sum(1)  # [M, 3]: count, sum x, sum x^2
    count = total[:, 0]
    high = _kmeans_high(x, mask, random_state).unsqueeze(1)
    weights, means, variances = _from_moments(total, (high @ moments).squeeze(1), reg_covar)
    prev = torch.full_like(count, -math.inf)
    active = count >= 2
    iterations = torch.zeros_like(count, dtype=torch.long)
    for _ in range(max_iter):
        a, b, c = _quadratic(weights, means, variances)  # [M, 2] each: log p_k(x) = a x^2 + b x + c
        d = ((a[:, 1:] - a[:, :1]) * x + (b[:, 1:] - b[:, :1])) * x + (c[:, 1:] - c[:, :1])
        stats = torch.stack([torch.sigmoid(d), F.softplus(d)], 1) @ moments  # [M, 2, 3]
        # Mean log-likelihood under the current parameters (sklearn's lower bound).
        lower = ((total * torch.stack([c[:, 0], b[:, 0], a[:, 0]], -1)).sum(-1) + stats[:, 1, 0]) / count.clamp_min(1)
        new = _from_moments(total, stats[:, 0], reg_covar)
        keep = active.unsqueeze(-1)
        weights, means, variances = (torch.where(keep, n, o) for n, o in zip(new, (weights, means, variances)))
        iterations += active.long()
        active = active & ~((lower - prev).abs() < tol)
        prev = lower
        if not bool(active.any()):  # one host read per iteration: end-of-epoch code, never captured
            break
    order = means.argsort(-1)
    pick = lambda t: t.gather(-1, order)  # noqa: E731
    return Mixtures(pick(weights), pick(means), pick(variances), count >= 2, iterations)


def _from_moments(total, high, reg_covar):
    """sklearn's M-step (``_estimate_gaussian_parameters``) in 1-D from the moments (1, x, x^2) of all
    values (``total``) and their responsibility-weighted moments for component 1 (``high``), [M, 3]."""
    parts = torch.stack([total - high, high], 1)  # [M, 2 components, 3]
    nk = parts[..., 0] + 10 * EPS
    means = parts[..., 1] / nk
    variances = (parts[..., 2] / nk - means * means).clamp_min(0) + reg_covar
    return nk / nk.sum(-1, keepdim=True), means, variances


def _quadratic(weights, means, variances):
    """Coefficients of log(weight_k N(x | mean_k, variance_k)) = a x^2 + b x + c, each [M, 2]."""
    a = -0.5 / variances
    b = means / variances
    c = torch.log(weights) - 0.5 * torch.log(2 * math.pi * variances) + a * means * means
    return a, b, c


def _kmeans_high(x: torch.Tensor, mask: torch.Tensor, random_state: int) -> torch.Tensor:
    """[M, n] float on ``x``'s device, 1 for the values in the second cluster of sklearn's
    ``KMeans(2, n_init=1, random_state=RandomState(random_state))`` as ``GaussianMixture`` runs it,
    computed on the host in float64 NumPy with scikit-learn's arithmetic, operation for operation
    (the module docstring says where that cannot hold). Per mixture, on its values in data order:
    the tolerance 1e-4 x the variance of the raw values, centring by their mean, then the k-means++
    seeding (``_kmeans_plusplus``); then Lloyd (``_lloyd``), for mixtures of similar size at once."""
    values = x.detach().double().cpu().numpy()
    keep = mask.detach().cpu().numpy().astype(bool)
    count = keep.sum(1)
    high = np.zeros(values.shape)
    rows = np.flatnonzero(count >= 2)
    rows = rows[np.argsort(-count[rows], kind="stable")]
    while len(rows):  # buckets of mixtures with at least half the largest one's values (less padding)
        bucket, rows = rows[count[rows] * 2 >= count[rows[0]]], rows[count[rows] * 2 < count[rows[0]]]
        n = int(count[bucket[0]])
        xc = np.zeros((n, len(bucket)))  # column k: mixture bucket[k]'s centred values, in data order
        centres, tol = np.zeros((len(bucket), 2)), np.zeros(len(bucket))
        for k, m in enumerate(bucket):
            group = values[m, keep[m]][:, None]  # [n_m, 1], as sklearn sees it
            tol[k] = np.mean(np.var(group, axis=0)) * 1e-4  # KMeans._tol: before centring
            group = group - group.mean(axis=0)  # NumPy's pairwise sum: the mean must be sklearn's to the bit
            centres[k] = _kmeans_plusplus(group, np.random.RandomState(random_state))
            xc[:len(group), k] = group[:, 0]
        labels = _lloyd(xc, count[bucket].astype(np.float64), centres, tol)
        for k, m in enumerate(bucket):
            high[m, keep[m]] = labels[:count[m], k]
    return torch.from_numpy(high).to(x.device)


def _squared_distances(centres: np.ndarray, group: np.ndarray, group_sq: np.ndarray) -> np.ndarray:
    """sklearn's ``_euclidean_distances(..., squared=True)`` in float64: max((-2 c x + c^2) + x^2, 0)
    in that order of rounding (not (x - c)^2, which rounds differently)."""
    d = -2 * (centres @ group.T)
    d += np.einsum("ij,ij->i", centres, centres)[:, None]
    d += group_sq[None, :]
    return np.maximum(d, 0, out=d)


def _kmeans_plusplus(group: np.ndarray, rng: np.random.RandomState) -> tuple[float, float]:
    """The two k-means++ centres of one centred group [n, 1] (sklearn's ``_kmeans_plusplus`` with
    unit sample weights): the first centre drawn by ``rng.choice(n, p=w / w.sum())`` (NumPy's cdf
    search, not floor(u n)), then 2 + floor(log 2) = 2 candidates drawn in proportion to the squared
    distance to it (a search of the draws in the running sum of the distances), of which the one with
    the smaller potential wins (the first on a tie). The two potentials are matrix-vector products,
    as in sklearn, so they round as NumPy's BLAS does there."""
    n = len(group)
    weight = np.ones(n)
    group_sq = np.einsum("ij,ij->i", group, group)
    first = rng.choice(n, p=weight / weight.sum())
    closest = _squared_distances(group[[first]], group, group_sq)  # [1, n]
    potential = closest @ weight
    draws = rng.uniform(size=2 + int(np.log(2))) * potential
    candidates = np.searchsorted(np.cumsum(weight * closest), draws)
    np.clip(candidates, None, closest.size - 1, out=candidates)
    to_candidates = np.minimum(closest, _squared_distances(group[candidates], group, group_sq))
    best = candidates[np.argmin(to_candidates @ weight.reshape(-1, 1))]
    return float(group[first, 0]), float(group[best, 0])


def _assign(xc: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[n, R] True where centre 1 is strictly nearer: sklearn's c^2 - 2 x c per centre, computed as
    its Lloyd step does (c^2 plus the matrix product -2 x c; one product per entry in 1-D, so BLAS
    rounds it as NumPy does), and its argmin, which gives a tie to centre 0. ``centres`` [R, 2]."""
    c0, c1 = centres[:, 0], centres[:, 1]
    return (c1 * c1 + -2.0 * (xc * c1)) < (c0 * c0 + -2.0 * (xc * c0))


def _sequential_sum(a: np.ndarray) -> np.ndarray:
    """Column sums of ``a`` [n, R], adding the rows one after the other from 0 (as each OpenMP thread
    of sklearn's Lloyd step accumulates its values). NumPy reduces along a non-contiguous axis row by
    row (pairwise summation applies only along the contiguous one); a single column would become a
    1-D pairwise sum, so it takes a cumulative sum instead (``tests/test_gmm.py`` checks both)."""
    if a.shape[1] >= 2:
        return np.add.reduce(a, axis=0)
    return np.cumsum(a, axis=0)[-1] if len(a) else np.zeros(a.shape[1])


def _lloyd(xc: np.ndarray, count: np.ndarray, centres: np.ndarray, tol: np.ndarray, max_iter: int = 300) -> np.ndarray:
    """sklearn's ``_kmeans_single_lloyd`` for R groups at once (column k of ``xc`` [n, R]: group k's
    ``count[k]`` centred values in data order, then zeros; ``centres`` [R, 2], updated in place):
    label, then each centre = (sum of its values, added one by one in data order) x (1 / its count);
    stop when the labels repeat (strict convergence) or the squared centre shift is <= ``tol``, then
    label once more with the last centres unless the stop was strict. An empty cluster takes the
    value farthest from its centre (sklearn's relocation; with every distance 0 it is left empty and
    sits on the other centre, as sklearn's ``_average_centers`` places it). Returns [n, R] labels."""
    valid = np.arange(len(xc))[:, None] < count[None, :]
    labels = np.zeros(xc.shape, dtype=bool)
    strict, active = np.zeros(len(count), dtype=bool), np.ones(len(count), dtype=bool)
    for iteration in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        every = len(idx) == len(count)  # no copies while every group is still running
        x, m, old = (xc, valid, centres.copy()) if every else (xc[:, idx], valid[:, idx], centres[idx])
        high = _assign(x, old) & m
        size = np.stack([count[idx] - high.sum(0), high.sum(0)], 1).astype(np.float64)
        sums = np.stack([_sequential_sum(np.where(high, 0.0, x)), _sequential_sum(np.where(high, x, 0.0))], 1)
        for r in np.flatnonzero((size == 0).any(1)):  # sklearn's _relocate_empty_clusters_dense
            empty = int(np.argmin(size[r]))
            far = np.where(m[:, r], (x[:, r] - old[r][high[:, r].astype(int)]) ** 2, -1.0)
            if far.max() > 0:
                j = int(np.argmax(far))
                sums[r, 1 - empty] -= x[j, r]
                sums[r, empty] = x[j, r]
                size[r, empty], size[r, 1 - empty] = 1.0, size[r, 1 - empty] - 1.0
        new = sums * (1.0 / np.where(size > 0, size, 1.0))  # sklearn multiplies by the reciprocal
        # _average_centers: an empty cluster sits where the larger one is (a raw sum if that one comes later).
        new[:, 0] = np.where(size[:, 0] > 0, new[:, 0], sums[:, 1])
        new[:, 1] = np.where(size[:, 1] > 0, new[:, 1], new[:, 0])
        shift = np.sqrt((new - old) * (new - old)) ** 2  # _center_shift, then squared and summed
        same = (high == labels[:, idx]).all(0) if iteration else np.zeros(len(idx), dtype=bool)
        labels[:, idx], centres[idx], strict[idx] = high, new, same
        active[idx[same | (shift.sum(1) <= tol[idx])]] = False
    rest = np.flatnonzero(~strict)
    labels[:, rest] = _assign(xc[:, rest], centres[rest]) & valid[:, rest]
    return labels.astype(np.float64)


def _component_log_prob(x, weights, means, variances):
    """[M, n, 2] log(weight_k * N(x | mean_k, variance_k))."""
    diff = x.unsqueeze(-1) - means.unsqueeze(1)
    return (torch.log(weights) - 0.5 * (math.log(2 * math.pi) + torch.log(variances))).unsqueeze(1) \
        - 0.5 * diff * diff / variances.unsqueeze(1)


# --- scikit-learn, one mixture at a time ----------------------------------------------------------

def fit_sklearn(x: torch.Tensor, mask: torch.Tensor, max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
                random_state: int = 42) -> Mixtures:
    """The reference's way: ``GaussianMixture(n_components=2, random_state=...)`` per row, on the host."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    values, keep = x.detach().double().cpu().numpy(), mask.cpu().numpy()
    out = np.zeros((3, len(values), 2))
    out[0] = 0.5
    out[2] = 1.0
    valid, iterations = keep.sum(1) >= 2, np.zeros(len(values), dtype=np.int64)
    for m in np.flatnonzero(valid):
        with warnings.catch_warnings():  # a capped max_iter (MultiT's 10) is meant not to converge
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                                  random_state=random_state).fit(values[m, keep[m]][:, None])
        order = np.argsort(gmm.means_.ravel())
        out[:, m] = np.stack([gmm.weights_, gmm.means_.ravel(), gmm.covariances_.ravel()])[:, order]
        iterations[m] = gmm.n_iter_
    t = torch.from_numpy(out).to(x.device)
    return Mixtures(t[0], t[1], t[2], torch.from_numpy(valid).to(x.device), torch.from_numpy(iterations).to(x.device))
