"""FlexCare + generalised cross-entropy (Zhang & Sabuncu, 2018), in its binary per-label form."""
import torch
import torch.nn.functional as F

from benchmark.method import Method


def gce_loss(logits, targets, q=0.7):
    """mean over batch x labels of (1 - p_t^q) / q, p_t = sigmoid(z) for y = 1, sigmoid(-z) for y = 0.

    Each label is its own binary problem (no softmax across labels). p_t^q = exp(q logsigmoid(s z))
    in log space: the direct form's derivative q p_t^(q-1) is inf at p_t = 0 and gives NaN."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = targets.to(z.dtype)
    log_pt = F.logsigmoid((2 * y - 1) * z)
    return (-torch.expm1(q * log_pt) / q).mean()


class GCE(Method):
    capturable = True  # a pure function of logits and targets

    def loss(self, logits, targets, index, epoch):
        return gce_loss(logits, targets, float(self.hparams["q"]))
