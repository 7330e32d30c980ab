"""FlexCare + sigmoid focal loss (Lin et al., 2017), the multi-label form of torchvision's."""
import torch
import torch.nn.functional as F

from benchmark.method import Method


def focal_loss(logits, targets, gamma=2.0, alpha=0.25):
    """mean of alpha_t * (1 - p_t)^gamma * BCE(z, y) over batch x labels, for y in {0, 1}.

    Written in log space: log p_t = logsigmoid(s z) with s = +1 for y = 1 and -1 for y = 0, and
    (1 - p_t)^gamma = exp(gamma * logsigmoid(-s z)), so |z| = 50 gives neither NaN nor inf.
    The modulating factor is not detached (as in torchvision)."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = targets.to(z.dtype)
    sz = (2 * y - 1) * z
    modulating = torch.exp(gamma * F.logsigmoid(-sz))
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return (alpha_t * modulating * -F.logsigmoid(sz)).mean()


class Focal(Method):
    capturable = True  # a pure function of logits and targets

    def loss(self, logits, targets, index, epoch):
        return focal_loss(logits, targets, float(self.hparams["gamma"]), float(self.hparams["alpha"]))
