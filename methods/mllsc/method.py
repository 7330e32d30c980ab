"""FlexCare + MLLSC (Ghiassi, Birke, Chen, ACML 2022): a focal-margin loss that corrects labels it
finds missing (false negatives) or corrupted (false positives) from the model's own confidence."""
import torch
import torch.nn.functional as F

from benchmark.method import EpochView, Method


def corrected_targets(logits, targets, tau_pos=0.55, tau_neg=0.6):
    """A labelled negative with p > tau_neg becomes positive; a labelled positive with
    1 - p > tau_pos (p < 1 - tau_pos) becomes negative. p is the unshifted sigmoid, no gradient."""
    p = torch.sigmoid(logits.detach())
    y = targets.to(p.dtype)
    to_pos = (y == 0) & (p > tau_neg)
    to_neg = (y == 1) & (1 - p > tau_pos)
    return torch.where(to_pos, 1.0, torch.where(to_neg, 0.0, y)).to(p.dtype), to_neg, to_pos


def flip_scores(logits, targets, tau_pos=0.55, tau_neg=0.6):
    """[N, C] in [0, 1]: how far each entry is into ``corrected_targets``' flip rule, with 0.5 at its
    threshold. q = p for a labelled negative (threshold tau_neg), 1 - p for a labelled positive
    (tau_pos); s = 0.5 q / tau below it, 0.5 + 0.5 (q - tau) / (1 - tau) above. Monotone in q within
    each observed class, and s > 0.5 exactly where the rule flips the entry."""
    p = torch.sigmoid(logits.detach().float())
    negative = targets == 0
    q = torch.where(negative, p, 1 - p)
    tau = torch.where(negative, torch.full_like(p, tau_neg), torch.full_like(p, tau_pos))
    return torch.where(q > tau, 0.5 + 0.5 * (q - tau) / (1 - tau), 0.5 * q / tau).clamp(0, 1)


def focal_margin_loss(logits, targets, margin=1.0, gamma=2.0):
    """mean over batch x labels: positives -(1 - s(z-m))^g log s(z-m), negatives -s(z)^g log s(-z),
    with s the sigmoid, in log space (finite at |z| = 50), focal weights not detached."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = targets.to(z.dtype)
    zm = z - margin
    pos = torch.exp(gamma * F.logsigmoid(-zm)) * -F.logsigmoid(zm)
    neg = torch.exp(gamma * F.logsigmoid(z)) * -F.logsigmoid(-z)
    return (y * pos + (1 - y) * neg).mean()


class MLLSC(Method):
    """Correction starts after ``warmup_epochs`` epochs of the uncorrected loss, capped at E - 1 so
    that any budget has a corrected epoch; never in epoch 1 (see README: it would wipe positives)."""

    capturable = True  # the stage is the capture key; flip counts accumulate in place
    # The epoch's training logits, for suspicion() only: the trainer keeps what the loss saw, and the loss
    # does not change (it never reads them).
    wants_train_logits = True

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.start = None  # first corrected epoch; known once end_epoch has seen the budget
        self.flips = None  # [pos->neg, neg->pos] this epoch, on the device (no per-batch host sync)
        self.scores = None  # [N, C] flip_scores of a corrected epoch's training passes

    def corrects(self, epoch):
        return self.start is not None and epoch >= self.start

    def capture_key(self, epoch):
        return self.corrects(epoch)

    def loss(self, logits, targets, index, epoch):
        h = self.hparams
        y = targets
        if self.corrects(epoch):
            y, to_neg, to_pos = corrected_targets(logits, targets, float(h["tau_pos"]), float(h["tau_neg"]))
            self.flips += torch.stack([to_neg.sum(), to_pos.sum()])
        return focal_margin_loss(logits, y, float(h["margin"]), float(h["gamma"]))

    def end_epoch(self, view: EpochView):
        self.start = min(int(self.hparams["warmup_epochs"]), view.epochs - 1) + 1
        if self.flips is None:
            self.flips = torch.zeros(2, dtype=torch.long, device=view.noisy_labels.device)
        flips = self.flips.tolist()
        if view.epoch >= self.start:  # the rule the loss applied this epoch, on the same logits
            self.scores = flip_scores(view.train_logits, view.noisy_labels, float(self.hparams["tau_pos"]),
                                      float(self.hparams["tau_neg"]))
        self.flips.zero_()
        positives = max(1.0, float(view.noisy_labels.sum()))
        negatives = max(1.0, float(view.noisy_labels.numel()) - positives)
        return {"corrected": view.epoch >= self.start, "correction_starts": self.start,
                "pos_to_neg": int(flips[0]), "neg_to_pos": int(flips[1]),
                "pos_to_neg_share": flips[0] / positives, "neg_to_pos_share": flips[1] / negatives}

    def suspicion(self):
        """The detection track: ``flip_scores`` of the last corrected epoch (above 0.5: the entries its
        loss corrected); None before correction starts."""
        return self.scores
