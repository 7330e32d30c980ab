"""Many independent one-dimensional two-component Gaussian mixtures, fitted at once.

Sample-selection methods fit one 2-component GMM per (label, observed class) on a per-entry score:
2C mixtures per epoch (50 on phenotyping), each over tens of thousands of values. Fitting them one
by one with scikit-learn costs seconds per epoch on the host; here all of them run as one batched EM
on the scores' device, with the same algorithm as scikit-learn's ``GaussianMixture`` in 1-D:

- initialisation: sklearn's ``init_params="kmeans"``, replayed batched: k-means++ seeding with the
  same three draws of ``RandomState(random_state)`` that sklearn makes for every mixture, Lloyd
  iterations with its stopping rules, then one M-step on the one-hot responsibilities. Selection
  scores are discrete (ranks, run lengths), so their mixtures have several local optima and the
  start decides which one EM reaches: replaying sklearn's start is what makes the backends agree.
- EM: E-step, M-step (``reg_covar`` added to each variance, ``10 * eps`` to each component mass), stop
  when the mean log-likelihood changes by less than ``tol`` (each mixture stops on its own).

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
    sklearn's tol of 1e-3 on the log-likelihood need it).

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
    high = _kmeans_high(x, mask, count, random_state).unsqueeze(1)
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


def _kmeans_high(x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, random_state: int) -> torch.Tensor:
    """[M, n] float, 1 for the values in the second cluster of sklearn's ``KMeans(2, n_init=1)`` run
    as ``GaussianMixture`` runs it: k-means++ seeding, then Lloyd iterations, on centred data.

    The seeding reads three uniforms of ``RandomState(random_state)`` (sklearn draws the same three for
    every mixture, each fit making its own generator): the first centre is the value at position
    floor(u0 n) of the group (in data order), the second the better of two candidates drawn with
    probability proportional to the squared distance to the first. Lloyd stops when the labels no
    longer change or the centres move less than 1e-4 times the group's variance (sklearn's rules).
    An empty cluster keeps its centre (sklearn relocates it; only duplicate-heavy groups get there)."""
    u = torch.from_numpy(np.random.RandomState(random_state).random_sample(3)).to(x)
    n = count.clamp_min(1)
    mean = (x * mask).sum(1) / n
    xc = torch.where(mask, x - mean.unsqueeze(1), 0.0)  # sklearn subtracts the mean first
    pos = mask.cumsum(1) - 1  # each value's position within its group
    at = lambda p: (xc * (mask & (pos == p.unsqueeze(1)))).sum(1)  # noqa: E731  value at group position p

    first = at(torch.floor(u[0] * n).long())
    closest = torch.where(mask, (xc - first.unsqueeze(1)) ** 2, 0.0)
    cum = closest.cumsum(1)
    picks = torch.searchsorted(cum, u[1:].unsqueeze(0) * closest.sum(1, keepdim=True))  # [M, 2] row positions
    picks = torch.minimum(pos.gather(1, picks.clamp_max(x.shape[1] - 1)), (count.long() - 1).clamp_min(0).unsqueeze(1))
    candidates = torch.stack([at(picks[:, 0]), at(picks[:, 1])], 1)
    potential = torch.stack([torch.minimum(closest, torch.where(mask, (xc - candidates[:, k:k + 1]) ** 2, 0.0)).sum(1)
                             for k in range(2)], 1)
    centres = torch.stack([first, candidates.gather(1, potential.argmin(1, keepdim=True)).squeeze(1)], 1)

    tol = 1e-4 * ((xc * xc).sum(1) / n)  # sklearn's tol relative to the mean variance
    labels = _nearest(xc, centres)
    active = count >= 2
    for _ in range(300):  # sklearn's max_iter
        high = (labels & mask).double()
        size = torch.stack([count - high.sum(1), high.sum(1)], 1)
        sums = torch.stack([(xc * (1 - high)).sum(1), (xc * high).sum(1)], 1)
        new = torch.where(size > 0, sums / size.clamp_min(1), centres)
        shift = ((new - centres) ** 2).sum(1)
        centres = torch.where(active.unsqueeze(1), new, centres)
        relabel = _nearest(xc, centres)
        same = ((relabel != labels) & mask).sum(1) == 0
        # Strict convergence (same labels), else labels follow the final centres (sklearn's last E-step).
        labels = torch.where(active.unsqueeze(1), relabel, labels)
        active = active & ~same & ~(shift <= tol)
        if not bool(active.any()):
            break
    return (labels & mask).double()


def _nearest(xc, centres):
    """True where centre 1 is strictly nearer (ties go to centre 0, as sklearn's argmin)."""
    c0, c1 = centres[:, :1], centres[:, 1:]
    return (c1 * c1 - 2 * xc * c1) < (c0 * c0 - 2 * xc * c0)


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
