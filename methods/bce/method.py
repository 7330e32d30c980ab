"""FlexCare + BCE: the baseline every noisy-label method is compared with."""
import torch.nn.functional as F

from benchmark.method import Method


class BCE(Method):
    capturable = True  # a pure function of logits and targets

    def loss(self, logits, targets, index, epoch):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
