"""FlexCare + Asymmetric Loss (Ridnik et al., 2021): asymmetric focusing and probability shifting."""
import math

import torch
import torch.nn.functional as F

from benchmark.method import Method


def asl_loss(logits, targets, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, detach_focusing=True, log_clamp=1e-8):
    """mean over batch x labels of -[y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m)], p_m = max(p-clip, 0).

    log p = logsigmoid(z) and 1 - p_m = min(sigmoid(-z) + clip, 1) >= clip, so |z| = 50 stays finite.
    ``log_clamp`` = eps > 0 floors both logs at log(eps), i.e. log(max(p, eps)) and
    log(max(1 - p_m, eps)), as the official ``AsymmetricLoss`` clamps their arguments (eps = 1e-8, the
    default): a positive with p < eps (z < -18.4 at 1e-8) then costs -log(eps) with zero gradient
    through the log. ``log_clamp`` = 0 keeps the exact logsigmoid. A negative with p <= clip has
    p_m = 0: zero loss, zero gradient. ``detach_focusing`` treats the focusing weights as constants,
    as the reference class does."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = targets.to(z.dtype)
    p = torch.sigmoid(z)
    shifted = p > clip
    log_p = F.logsigmoid(z)
    log_1m_pm = torch.log((torch.sigmoid(-z) + clip).clamp(max=1)) if clip > 0 else F.logsigmoid(-z)
    if log_clamp > 0:
        # max(log x, log eps) = log max(x, eps); clamp's gradient is 0 where the floor binds.
        floor = math.log(log_clamp)
        log_p, log_1m_pm = log_p.clamp(min=floor), log_1m_pm.clamp(min=floor)
    w_pos = torch.exp(gamma_pos * F.logsigmoid(-z))  # (1 - p)^g+
    # p_m^g- with p_m = max(p - clip, 0); the inner where keeps pow's gradient finite for g- < 1.
    w_neg = torch.where(shifted, torch.where(shifted, p - clip, 1.0) ** gamma_neg, 0.0)
    if detach_focusing:
        w_pos, w_neg = w_pos.detach(), w_neg.detach()
    return -(y * w_pos * log_p + (1 - y) * w_neg * log_1m_pm).mean()


class ASL(Method):
    capturable = True  # a pure function of logits and targets

    def loss(self, logits, targets, index, epoch):
        h = self.hparams
        return asl_loss(logits, targets, float(h["gamma_neg"]), float(h["gamma_pos"]), float(h["clip"]),
                        h["detach_focusing"], float(h["log_clamp"]))
