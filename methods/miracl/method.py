"""FlexCare + MIRACL: multimodal instance relabelling and correction (the paper's method, with the
reference code's behaviour as named switches; spec: reference/miracl_flexcare.md sections 3-9, 12).

Per epoch t, from the records of the epoch's own training passes:
  selection score   s = alpha N(D) + (1 - alpha) N(r)           (D: memorisation difficulty, r: rank)
  partition         per (label, observed class): 2-component GMM on s -> clean / uncertain / noisy
  correction        Eq. 3-5 towards p* = 0.6 p + 0.2 p_ehr + 0.2 p_note, negatives only inside Z-
  loss (t > t_w)    beta_t BCE(z, Y_corr) + (1 - beta_t) BCE(z, Y_noisy) + lambda_cons L_cons
Y_corr is rebuilt from the observed labels every epoch (non-cumulative). Switches, each marked
"Switch" where it acts: rank_only_selection, memorisation_includes_current_epoch, negative_rank_flip,
pstar_weights, beta_schedule, gmm, difficulty_dtype (and the backbone's structural_mask, handled by
Method.build_model).

One file because the registry loads a method by file path (no package, so no sibling imports); the
mixture fitting is shared in ``benchmark/gmm.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark import gmm
from benchmark.errors import UsageError
from benchmark.method import EpochView, Method

PARTITION = ("clean", "uncertain", "noisy")  # the codes 0, 1, 2 of the partition matrix
BETA_SCHEDULES = ("paper", "reference")
DIFFICULTY_DTYPES = {"float64": torch.float64, "float32": torch.float32}
GMM_RANDOM_STATE = 42  # the reference's (sklearn backend only)


# --- Selection score (spec section 4) ---------------------------------------------------------------

def minmax(a: torch.Tensor) -> torch.Tensor:
    """N(a): global min-max over the whole matrix, as the reference's ``normalize`` (not per label)."""
    return (a - a.min()) / (a.max() - a.min() + 1e-9)


def ranks(probs: torch.Tensor) -> torch.Tensor:
    """[N, C] long: r_il = position of label l when sample i's probabilities are sorted descending,
    1 = most probable; ties keep label order (a stable sort)."""
    order = probs.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(1, probs.shape[1] + 1, device=probs.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def difficulty(correct: torch.Tensor, forgetting_weight: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """D = M - lambda F per entry from a history ``correct`` [E, N, C] (bool: the epoch's hard
    prediction equals the observed label). M = mean length of the runs of wrong epochs ("how long it
    takes to memorise"), F = mean length of the runs of right epochs ("how long it stays"); 0 when
    there is no such run. Vectorised: a run's start is an epoch that differs from its predecessor,
    so mean run length = count / number of starts. No history (E = 0) gives D = 0.

    The two means and D are computed in ``dtype`` and returned as float64. Switch difficulty_dtype:
    float64 (default) is the reference's NumPy arithmetic, D = fl(fl(a / b) - lambda fl(c / d));
    float32 is version 1.0 of this method, whose rounding (~1e-7 relative) can reorder selection
    scores that agree to ~1e-9."""
    if len(correct) == 0:
        return torch.zeros(correct.shape[1:], dtype=torch.float64, device=correct.device)
    right, wrong = correct, ~correct
    starts_right = right[0].long() + (right[1:] & wrong[:-1]).sum(0)
    starts_wrong = wrong[0].long() + (wrong[1:] & right[:-1]).sum(0)
    mem = wrong.sum(0).to(dtype) / starts_wrong.clamp_min(1).to(dtype)  # a zero count has zero starts: 0 / 1
    forget = right.sum(0).to(dtype) / starts_right.clamp_min(1).to(dtype)
    return (mem - forgetting_weight * forget).double()


def selection_score(d: torch.Tensor, r: torch.Tensor, noisy: torch.Tensor, alpha: float = 0.5,
                    rank_only: bool = False, negative_rank_flip: bool = False) -> torch.Tensor:
    """s = alpha N(D) + (1 - alpha) N(r) in [0, 1]; high = suspicious (hard to fit, ranked low)."""
    if negative_rank_flip:
        # Switch negative_rank_flip (our fix of B6, off by default): for an observed negative a high
        # probability is what is suspicious, so rank it as L + 1 - r.
        r = torch.where(noisy == 0, r.shape[1] + 1 - r, r)
    rank = minmax(r.double())
    if rank_only:
        # Switch rank_only_selection (B2, the released code): there the difficulty term is multiplied
        # by score_coef * score = 0, leaving s = N(0.5 N(r)) = N(r).
        return minmax(rank)
    return alpha * minmax(d) + (1 - alpha) * rank


# --- Label-correlation gate Z- (spec section 5) -----------------------------------------------------

def correlation_gate(noisy: torch.Tensor, tau: float = 0.02) -> torch.Tensor:
    """[N, C] bool: the observed negatives (i, k) that the sample's observed positives point to,
    z_ik = sum_l y_il R_lk > tau, with R the row-normalised co-occurrence matrix (diagonal 0)."""
    y = noisy.double()
    co = y.t() @ y
    co.fill_diagonal_(0)
    rows = co.sum(1, keepdim=True)
    z = y @ (co / torch.where(rows == 0, 1.0, rows))
    return (noisy == 0) & (z > tau)


# --- Partition and correction (spec section 6) -------------------------------------------------------

def partition(s: torch.Tensor, noisy: torch.Tensor, mixtures: gmm.Mixtures) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean (0) s <= mu_lo, uncertain (1) mu_lo < s <= mu_hi, noisy (2) s > mu_hi, with the sorted
    means of the entry's (label, observed class) mixture (no posteriors, as the reference), and the
    uncertainty weight U = clip01((s - mu_lo) / (mu_hi - mu_lo + 1e-6)). An entry whose mixture had
    fewer than two values (the reference skips that fit) stays clean with U = 0."""
    c = s.shape[1]
    pick = lambda per_class: torch.where(noisy == 1, per_class[:, 1], per_class[:, 0])  # noqa: E731  [C, 2] -> [N, C]
    means = mixtures.means.view(c, 2, 2)  # [label, observed class, component]
    lo, hi, valid = pick(means[..., 0]), pick(means[..., 1]), pick(mixtures.valid.view(c, 2))
    part = (s > lo).long() + (s > hi).long()
    u = ((s - lo) / (hi - lo + 1e-6)).clamp(0, 1)
    return torch.where(valid, part, 0), torch.where(valid, u, 0.0)


def noisy_posterior(s: torch.Tensor, noisy: torch.Tensor, mixtures: gmm.Mixtures) -> torch.Tensor:
    """[N, C] float64: each entry's posterior of the high-score ("noisy") component of its (label,
    observed class) mixture at its selection score: 1 - the mixture's clean probability. The partition
    reads the same mixtures' means; this reads their responsibilities. 0 where the mixture had fewer
    than two values (``partition`` keeps such an entry clean)."""
    c = s.shape[1]
    x, _ = gmm.by_label_and_class(s, noisy)
    post = mixtures.posterior(x)[..., 1].view(c, 2, -1)  # [label, observed class, sample]
    valid = mixtures.valid.view(c, 2)
    picked = torch.where(noisy == 1, post[:, 1].t(), post[:, 0].t())
    return torch.where(torch.where(noisy == 1, valid[:, 1], valid[:, 0]), picked, 0.0)


def pstar(p: torch.Tensor, p_ehr: torch.Tensor, p_note: torch.Tensor, weights=(0.6, 0.2, 0.2)) -> torch.Tensor:
    """The correction target: a fixed mix of the fused and unimodal predictions (Switch pstar_weights:
    0.6/0.2/0.2 the released MIRACL code, 1/0/0 the earlier code and the supplementary's "prediction")."""
    return weights[0] * p + weights[1] * p_ehr + weights[2] * p_note


def correct(noisy: torch.Tensor, part: torch.Tensor, u: torch.Tensor, target: torch.Tensor,
            gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3-5 from the observed labels y (never from an earlier correction): clean -> y, uncertain
    -> U p* + (1 - U) y, noisy -> p*. Observed positives are always eligible, observed negatives only
    inside Z-; an ineligible entry keeps y and is reported as clean. Returns (labels, partition)."""
    y = noisy.to(target.dtype)
    soft = torch.where(part == 0, y, torch.where(part == 1, u * target + (1 - u) * y, target))
    eligible = (noisy == 1) | gate
    return torch.where(eligible, soft, y), torch.where(eligible, part, 0)


# --- Schedules (spec sections 7.1, 8) ----------------------------------------------------------------

def beta(epoch: int, epochs: int, warmup: int, schedule: str = "paper") -> float:
    """Weight of the corrected-label BCE in epoch ``epoch`` (> warmup)."""
    if schedule == "reference":
        # Switch beta_schedule = reference (B4): 1 - 0.5 t / (T + 1), 0.903 at t = 6, 0.516 at t = 30.
        return 1 - 0.5 * epoch / (epochs + 1)
    # The paper: from 1 at the first corrected epoch to 0.5 at the last, linearly.
    span = epochs - warmup - 1
    return 1.0 if span <= 0 else 1 - 0.5 * (epoch - warmup - 1) / span


def parse_weights(text: str) -> tuple[float, float, float]:
    try:
        weights = tuple(float(w) for w in str(text).split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3 or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
        raise UsageError(f"method 'miracl': pstar_weights = {text!r}: expected three non-negative weights "
                         f"'fused,ehr,note' that sum to 1 (e.g. 0.6,0.2,0.2)")
    return weights


# --- Losses (spec section 7) -------------------------------------------------------------------------

def masked_bce(logits: torch.Tensor, targets: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the samples whose modality is present (x labels); 0 if none is."""
    per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    w = available.to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum().clamp_min(1)  # no host read: the loss stays capturable


def align_loss(ehr: torch.Tensor, note: torch.Tensor, has_ehr: torch.Tensor, has_note: torch.Tensor,
               patient: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """L_align, OUR reconstruction (spec 7.3; the authors' code is not released): supervised
    contrastive loss over the 2B in-batch views (EHR and note projections, L2-normalised). The
    positives of a view are every other present view of the same patient: the other modality of the
    same stay (cross-modal) and both views of the patient's other stays in the batch (longitudinal).
    Missing views are neither anchors nor keys; the mean runs over anchors with a positive."""
    views = F.normalize(torch.cat([ehr, note]).float(), dim=-1)
    present = torch.cat([has_ehr, has_note])
    pid = torch.cat([patient, patient])
    keys = present.unsqueeze(0) & ~torch.eye(len(views), dtype=torch.bool, device=views.device)
    sim = (views @ views.t() / temperature).masked_fill(~keys, -1e4)  # finite: a lone view has no NaN
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (pid.unsqueeze(0) == pid.unsqueeze(1)) & keys & present.unsqueeze(1)
    count = positive.sum(1)
    per_anchor = -(log_prob * positive).sum(1) / count.clamp_min(1)
    has = (count > 0).to(per_anchor.dtype)
    return (per_anchor * has).sum() / has.sum().clamp_min(1)


# --- Model: FlexCare + unimodal heads + projections --------------------------------------------------

class MiraclModel(nn.Module):
    """FlexCare whose EHR-CLS and NOTE-CLS summary tokens also feed two unimodal heads (``Linear(d, C)``,
    p_ehr / p_note) and two projections for L_align (d -> d -> d/2, our reconstruction of 128-128-64).
    Adds ``ehr_logits``, ``note_logits``, ``ehr_embed``, ``note_embed`` to ``ModelOutput.extras``."""

    accepts_parts = True  # the backbone's: the heads act per sample

    def __init__(self, backbone: nn.Module, num_labels: int, hidden: int):
        super().__init__()
        self.backbone = backbone
        self.ehr_head, self.note_head = nn.Linear(hidden, num_labels), nn.Linear(hidden, num_labels)
        proj = lambda: nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, max(1, hidden // 2)))  # noqa: E731
        self.ehr_proj, self.note_proj = proj(), proj()

    def forward(self, batch):
        out = self.backbone(batch)
        ehr, note = out.extras["ehr_cls"], out.extras["note_cls"]
        out.extras.update(ehr_logits=self.ehr_head(ehr), note_logits=self.note_head(note),
                          ehr_embed=self.ehr_proj(ehr), note_embed=self.note_proj(note))
        return out


# --- The method ---------------------------------------------------------------------------------------

class MIRACL(Method):
    """Epochs 1..t_w: BCE + lambda_cons L_cons (warm-up). From the end of epoch t_w on, every epoch's
    records give a fresh Y_corr for the next epoch, trained with the beta_t mix and weight decay.
    t_w = min(warmup_epochs, E - 1), so any budget has a corrected epoch."""

    wants_train_logits = True  # p and the hard predictions of each epoch's training passes
    wants_output = True  # the unimodal logits, projections, modality flags and patient ids
    capturable = True  # stage = capture key; beta, Y_corr and the p_ehr / p_note records change in place

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        h = self.hparams
        self.weights = parse_weights(h["pstar_weights"])
        if h["beta_schedule"] not in BETA_SCHEDULES:
            raise UsageError(f"method 'miracl': beta_schedule must be one of {', '.join(BETA_SCHEDULES)}")
        if h["difficulty_dtype"] not in DIFFICULTY_DTYPES:
            raise UsageError(f"method 'miracl': difficulty_dtype must be one of {', '.join(DIFFICULTY_DTYPES)}")
        self.correcting = False  # Y_corr is ready and used by the loss
        self.buffers = None  # device state, allocated at the first loss call (the device is known then)
        self.history = None  # [E, N, C] bool: hard prediction == observed label, per epoch
        self.fitted = None  # this epoch's (selection score, observed labels, mixtures, eligible entries)

    def build_model(self) -> nn.Module:
        return MiraclModel(super().build_model(), self.task.num_labels, self.task.backbone.hidden)

    def warmup(self, epochs: int) -> int:
        return max(1, min(int(self.hparams["warmup_epochs"]), epochs - 1))

    def capture_key(self, epoch):
        return self.correcting

    def weight_decay(self, epoch):
        return float(self.hparams["weight_decay"]) if self.correcting else 0.0

    def _buffers(self, like: torch.Tensor) -> dict:
        if self.buffers is None:
            n, c = self.task.n_train, self.task.num_labels
            z = lambda dtype=torch.float32: torch.zeros(n, c, dtype=dtype, device=like.device)  # noqa: E731
            self.buffers = {"p_ehr": z(), "p_note": z(), "labels": z(), "partition": z(torch.int8),
                            "beta": torch.ones((), device=like.device)}
        return self.buffers

    def loss(self, logits, targets, index, epoch, output=None):
        if output is None:
            raise ValueError("MIRACL.loss needs the model output (wants_output = True)")
        b, ex = self._buffers(logits), output.extras
        z, y = logits.float(), targets.float()
        z_ehr, z_note = ex["ehr_logits"].float(), ex["note_logits"].float()
        # Unimodal probabilities for p*, written in place at the batch's rows. A sample without the
        # modality gets the fused p instead (its head saw only padding), so its p* leans on p.
        p = torch.sigmoid(z.detach())
        b["p_ehr"].index_copy_(0, index, torch.where(ex["has_ehr"].unsqueeze(1), torch.sigmoid(z_ehr.detach()), p))
        b["p_note"].index_copy_(0, index, torch.where(ex["has_note"].unsqueeze(1), torch.sigmoid(z_note.detach()), p))

        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        if self.correcting:
            corrected = F.binary_cross_entropy_with_logits(z, b["labels"][index], reduction="none")
            main = (b["beta"] * corrected + (1 - b["beta"]) * bce).mean()
        else:
            main = bce.mean()
        # L_cons on the observed labels (never the corrected ones), as the reference.
        cons = masked_bce(z_ehr, y, ex["has_ehr"]) + masked_bce(z_note, y, ex["has_note"]) + align_loss(
            ex["ehr_embed"], ex["note_embed"], ex["has_ehr"], ex["has_note"], ex["patient_id"],
            float(self.hparams["align_temperature"]))
        return main + float(self.hparams["lambda_cons"]) * cons

    def end_epoch(self, view: EpochView):
        h, t, epochs = self.hparams, view.epoch, view.epochs
        noisy = view.noisy_labels
        probs = torch.sigmoid(view.train_logits.double())
        if self.history is None:
            self.history = torch.zeros(epochs, *noisy.shape, dtype=torch.bool, device=noisy.device)
        self.history[t - 1] = (probs > 0.5) == (noisy > 0.5)
        warmup = self.warmup(epochs)
        if t < warmup:
            return {"stage": "warm-up"}
        # Switch memorisation_includes_current_epoch: True (the paper, default) uses epochs 1..t;
        # False reproduces the reference's off-by-one (B3), epochs 1..t-1.
        seen = t if h["memorisation_includes_current_epoch"] else t - 1
        # Switch difficulty_dtype: float64 (the reference's NumPy) or float32 (version 1.0).
        d = difficulty(self.history[:seen], float(h["forgetting_weight"]), DIFFICULTY_DTYPES[h["difficulty_dtype"]])
        s = selection_score(d, ranks(probs), noisy, float(h["alpha"]), h["rank_only_selection"], h["negative_rank_flip"])
        # Switch gmm: "torch" (batched EM on the device) or "sklearn" (the reference, random_state 42).
        mixtures = gmm.fit(*gmm.by_label_and_class(s, noisy), backend=h["gmm"], random_state=GMM_RANDOM_STATE)
        part, u = partition(s, noisy, mixtures)
        gate = correlation_gate(noisy, float(h["tau"]))
        b = self._buffers(noisy)
        target = pstar(probs, b["p_ehr"].double(), b["p_note"].double(), self.weights)
        labels, part = correct(noisy, part, u, target, gate)
        self.fitted = (s, noisy, mixtures, (noisy == 1) | gate)  # read by suspicion() only
        b["labels"].copy_(labels)
        b["partition"].copy_(part)
        if t < epochs:  # beta of the next epoch, in place (a captured loss reads it)
            b["beta"].fill_(beta(t + 1, epochs, warmup, h["beta_schedule"]))
        self.correcting = True
        return self._summary(noisy, part, gate, labels, mixtures, b["beta"])

    def corrections(self):
        """The current Y_corr and partition (0 clean, 1 uncertain, 2 noisy), for the harness to score."""
        if not self.correcting:
            return None
        return {"labels": self.buffers["labels"], "partition": self.buffers["partition"]}

    def suspicion(self):
        """The detection track: per entry, the posterior of the noisy component of the mixture this
        epoch's partition was read from (``noisy_posterior``), 0 for an entry MIRACL never corrects (an
        observed negative outside Z-). Computed from what ``end_epoch`` fitted anyway; None in the
        warm-up, before the first fit."""
        if self.fitted is None:
            return None
        s, noisy, mixtures, eligible = self.fitted
        return torch.where(eligible, noisy_posterior(s, noisy, mixtures), 0.0)

    @staticmethod
    def _summary(noisy, part, gate, labels, mixtures, beta_next):
        """What the record keeps of a correction (no clean labels here: the harness scores it)."""
        pos, neg = noisy == 1, noisy == 0
        share = lambda m, where: (m & where).sum() / where.sum().clamp_min(1)  # noqa: E731
        numbers = torch.stack([
            *(share(part == k, pos) for k in range(3)), *(share(part == k, neg) for k in range(3)),
            share(gate, neg), (labels - noisy).abs().mean(), beta_next.double(),
            mixtures.iterations.max().double(),
        ]).tolist()  # one host read
        keys = [f"pos_{p}" for p in PARTITION] + [f"neg_{p}" for p in PARTITION] + [
            "neg_in_z_minus", "mean_abs_change", "beta_next", "gmm_iterations_max"]
        out = {"stage": "corrected", **{k: round(v, 6) for k, v in zip(keys, numbers)}}
        out["gmm_iterations_max"] = int(out["gmm_iterations_max"])
        return out
