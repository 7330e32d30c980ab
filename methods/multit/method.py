"""FlexCare + MultiT (Li et al., NeurIPS 2022): warm up with BCE, select clean samples per label,
estimate each label's 2x2 noise transition matrix from label correlations, then train with the
transition-reweighted BCE, all inside the harness's one epoch budget.

Notation: rho_plus = P(noisy 0 | clean 1), rho_minus = P(noisy 1 | clean 0), the benchmark's names;
label j's transition matrix is T_j = [[1 - rho_minus, rho_minus], [rho_plus, 1 - rho_plus]].
"""
import numpy as np
import torch
import torch.nn.functional as F

from benchmark import gmm
from benchmark.method import EpochView, Method

GMM = dict(max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=0)  # the reference's (2 components)


# --- Stage 1a: per-label clean-sample selection (small loss + 2-component GMM) --------------------

def select_clean(probs, noisy, threshold=0.5):
    """[N, C] bool: sample n is taken as clean for label j. ``probs`` [E, N, C] are sigmoid outputs
    of the window's epochs. Per label and noisy value, each epoch's BCE is min-max normalised, the
    epochs averaged, and a sample is clean if the low-loss GMM component's posterior > threshold.
    The 2C mixtures are fitted by ``benchmark.gmm`` (scikit-learn, one per group, as the reference)."""
    score = small_loss_scores(probs, noisy)
    x, mask = gmm.by_label_and_class(torch.from_numpy(score), torch.from_numpy(noisy))
    mixtures = gmm.fit(x, mask, "sklearn", **GMM)
    low = mixtures.posterior(x)[..., 0] > threshold  # [2C, N], low-loss component = the lower mean
    low &= mask & mixtures.valid.unsqueeze(1)  # a group of fewer than two samples selects nothing
    return low.view(noisy.shape[1], 2, -1).any(1).t().numpy()  # each entry sits in one class's row


def small_loss_scores(probs, noisy):
    """[N, C] mean over epochs of each entry's BCE, min-max normalised per epoch within its
    (label, noisy value) group."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = -np.log(np.where(noisy == 1, p, 1 - p))
    score = np.zeros(noisy.shape)
    for value in (0, 1):
        group = noisy == value
        lo = np.where(group, loss, np.inf).min(axis=1, keepdims=True)
        hi = np.where(group, loss, -np.inf).max(axis=1, keepdims=True)
        score = np.where(group, ((loss - lo) / (hi - lo + 1e-30)).mean(axis=0), score)
    return score


# --- Stage 1b: transition estimate of label i from each auxiliary label k -------------------------

def pairwise(noisy, selected, i):
    """Closed-form (rho_minus, rho_plus) of label i from every other label k, as arrays over k.

    N[a,b] = P(noisy_i=a, noisy_k=b) on all samples; c[a,b] = P(noisy_k=b | clean_i=a) on the
    samples selected clean for i; the clean prior of i follows from k's marginal, Q[a,b] =
    P(clean_i=a, noisy_k=b), and N = T_i^T Q gives T_i^T = N Q^-1. Also returns the pieces the
    residual needs: det(Q) and the two numerators, so that rho * det = num."""
    yi, yk = noisy[:, i][:, None] == 1, noisy == 1
    n = {(a, b): np.mean((yi == a) & (yk == b), axis=0) for a in (0, 1) for b in (0, 1)}
    sel = selected[:, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = {a: yk[sel & (noisy[:, i] == a)].mean(axis=0) for a in (0, 1)}  # P(noisy_k=1 | clean_i=a)
        c = {(a, b): c1[a] if b else 1 - c1[a] for a in (0, 1) for b in (0, 1)}
        pi1 = (n[0, 0] + n[1, 0] - c[0, 0]) / (c[1, 0] - c[0, 0])
        q = {(a, b): c[a, b] * (pi1 if a else 1 - pi1) for a in (0, 1) for b in (0, 1)}
        det = q[0, 0] * q[1, 1] - q[0, 1] * q[1, 0]
        num_minus = q[1, 1] * n[1, 0] - q[1, 0] * n[1, 1]
        num_plus = q[0, 0] * n[0, 1] - q[0, 1] * n[0, 0]
        est = dict(rho_minus=num_minus / det, rho_plus=num_plus / det, pi1=pi1, det=det,
                   num_minus=num_minus, num_plus=num_plus)
    others = np.arange(noisy.shape[1]) != i
    return {key: v[others] for key, v in est.items()}


def estimate_label(noisy, selected, i, min_selected=50):
    """(rho_minus, rho_plus) of label i, or None when too few clean samples or no valid candidate.

    Candidates come from each auxiliary label whose estimate is a valid transition matrix (values
    within -0.3/C of 0 are snapped to 0); the winner has the smallest residual |rho * det - num|
    summed over every auxiliary label with a finite estimate."""
    sel = selected[:, i]
    if (sel & (noisy[:, i] == 1)).sum() < min_selected or (sel & (noisy[:, i] == 0)).sum() < min_selected:
        return None
    e = pairwise(noisy, selected, i)
    tol = 0.3 / noisy.shape[1]
    rm, rp = (np.where((-tol < r) & (r < 0), 0.0, r) for r in (e["rho_minus"], e["rho_plus"]))
    ok = (0 <= e["pi1"]) & (e["pi1"] <= 1) & (0 <= rm) & (rm <= 1) & (0 <= rp) & (rp <= 1) & (rm + rp < 1)
    if not ok.any():
        return None
    finite = np.isfinite(e["det"]) & np.isfinite(e["num_minus"]) & np.isfinite(e["num_plus"]) & (e["det"] != 0)
    det, num_m, num_p = e["det"][finite], e["num_minus"][finite], e["num_plus"][finite]
    cand_m, cand_p = rm[ok], rp[ok]
    residual = (np.abs(cand_m[:, None] * det - num_m).sum(1) + np.abs(cand_p[:, None] * det - num_p).sum(1))
    best = int(np.argmin(residual))
    return float(cand_m[best]), float(cand_p[best])


def dual_t(p, noisy_i):
    """Fallback (Dual-T) for one label from its probabilities ``p`` [N]: anchor estimate (row c =
    prediction at the most confident sample of class c) times the transition from the argmax
    prediction to the noisy label. Returns (rho_minus, rho_plus)."""
    probs = np.stack([1 - p, p], axis=1)
    anchor = probs[np.argmax(probs, axis=0)]  # row c: the sample most confidently of class c
    pred = probs.argmax(axis=1)
    counts = np.array([[np.sum((pred == a) & (noisy_i == b)) for b in (0, 1)] for a in (0, 1)], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    to_noisy = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    t = anchor @ to_noisy
    return float(t[0, 1]), float(t[1, 0])


def estimate_transitions(noisy, selected, p_last, min_selected=50):
    """Per label (rho_minus, rho_plus, source): pairwise estimate, else Dual-T, else identity."""
    out = []
    for i in range(noisy.shape[1]):
        est, source = estimate_label(noisy, selected, i, min_selected), "pairwise"
        if est is None:
            est, source = dual_t(p_last[:, i], noisy[:, i]), "dual-t"
            if not (np.isfinite(est).all() and min(est) >= 0 and sum(est) < 1):
                est, source = (0.0, 0.0), "identity"  # no usable estimate: plain BCE for this label
        out.append((*est, source))
    return out


# --- Stage 2: importance-reweighted BCE --------------------------------------------------------

def importance_weights(logits, targets, rho_minus, rho_plus):
    """beta = P(clean label = noisy label | x) / P(noisy label | x), per entry, without gradient.
    P(noisy 1 | x) = (1 - p) rho_minus + p (1 - rho_plus); p clamped so that 0/0 cannot occur."""
    z = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
    p = torch.sigmoid(z).clamp(1e-6, 1 - 1e-6)
    noisy_pos = (1 - p) * rho_minus + p * (1 - rho_plus)
    noisy_neg = (1 - p) * (1 - rho_minus) + p * rho_plus
    return torch.where(targets == 1, p / noisy_pos, (1 - p) / noisy_neg)


def noise_posterior(logits, targets, rho_minus, rho_plus):
    """P(clean label != observed label | x, observed label) per entry, by Bayes' rule from the same
    pieces as ``importance_weights``: the model's p = P(clean 1 | x) and label j's transition matrix.
    Observed 1: (1 - p) rho_minus / P(noisy 1 | x); observed 0: p rho_plus / P(noisy 0 | x)."""
    z = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
    p = torch.sigmoid(z).clamp(1e-6, 1 - 1e-6)
    noisy_pos = (1 - p) * rho_minus + p * (1 - rho_plus)
    noisy_neg = (1 - p) * (1 - rho_minus) + p * rho_plus
    return torch.where(targets == 1, (1 - p) * rho_minus / noisy_pos, p * rho_plus / noisy_neg).clamp(0, 1)


def reweighted_bce(logits, targets, beta):
    """mean over batch x labels of beta * BCE(z, y), from logits."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return (beta * F.binary_cross_entropy_with_logits(z, targets.to(z.dtype), reduction="none")).mean()


class MultiT(Method):
    """Epochs 1..W: BCE (warm-up), predictions of epochs s-window+1..s kept; after epoch W: estimate;
    epochs W+1..E: reweighted BCE. W = min(warmup_epochs, E - 1) so at least one epoch is
    reweighted, s = min(sample_epoch, W); the window shrinks to s epochs when s < window."""

    wants_train_logits = True
    capturable = True  # the stage (estimated or not) is the capture key; rho is set once

    def capture_key(self, epoch):
        return self.rho is not None

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.probs = {}  # epoch -> [N, C] sigmoid outputs (numpy), only the window's epochs
        self.rho = None  # (rho_minus [C], rho_plus [C]) on the device, once estimated
        self.posterior = None  # [N, C] noise_posterior of this epoch's training passes, once estimated

    def stages(self, epochs):
        warmup = max(1, min(int(self.hparams["warmup_epochs"]), epochs - 1))
        sample = min(int(self.hparams["sample_epoch"]), warmup)
        return warmup, sample, range(max(1, sample - int(self.hparams["window"]) + 1), sample + 1)

    def loss(self, logits, targets, index, epoch):
        if self.rho is None:
            return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        beta = importance_weights(logits, targets, *self.rho)
        return reweighted_bce(logits, targets, beta)

    def end_epoch(self, view: EpochView):
        warmup, sample, window = self.stages(view.epochs)
        if view.epoch in window:
            self.probs[view.epoch] = torch.sigmoid(view.train_logits).cpu().double().numpy()
        if view.epoch != warmup:
            self._keep_posterior(view)
            return {"stage": "warm-up" if view.epoch < warmup else "reweighted"}
        noisy = view.noisy_labels.cpu().numpy().astype(np.int64)
        probs = np.stack([self.probs[e] for e in window])
        selected = select_clean(probs, noisy, float(self.hparams["sample_threshold"]))
        est = estimate_transitions(noisy, selected, probs[-1], int(self.hparams["min_selected"]))
        self.probs = {}
        rho_minus, rho_plus, source = zip(*est)
        device = view.noisy_labels.device
        self.rho = (torch.tensor(rho_minus, device=device), torch.tensor(rho_plus, device=device))
        self._keep_posterior(view)
        return {
            "stage": "estimated",
            "window": [window[0], window[-1]],
            "selected_pos": (selected & (noisy == 1)).sum(0).tolist(),
            "selected_neg": (selected & (noisy == 0)).sum(0).tolist(),
            "estimator": list(source),
            "rho_plus": [round(r, 5) for r in rho_plus],
            "rho_minus": [round(r, 5) for r in rho_minus],
            "mean_rho_plus": round(float(np.mean(rho_plus)), 5),
            "mean_rho_minus": round(float(np.mean(rho_minus)), 5),
            "transition": [[[round(1 - m, 5), round(m, 5)], [round(p, 5), round(1 - p, 5)]]
                           for m, p in zip(rho_minus, rho_plus)],
        }

    def _keep_posterior(self, view: EpochView):
        """From the estimate on: the epoch's posterior that each observed label is wrong (what the
        transition matrices and the epoch's predictions say; never read by the loss)."""
        if self.rho is not None:
            self.posterior = noise_posterior(view.train_logits, view.noisy_labels, *self.rho)

    def suspicion(self):
        """The detection track: ``noise_posterior`` of the last epoch's training passes under the
        estimated transition matrices; None before the estimate."""
        return self.posterior
