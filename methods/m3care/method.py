"""M3Care trained with BCE on the noisy labels (the paper's multimodal baseline; no noise handling).

The model (``model.py``, beside this file) adds its stability term as ``aux``; the loss is BCE.
Width: the track's backbone width (128 on the full and paper tracks, the spec's D).
"""
import torch.nn.functional as F

from benchmark.method import Method

from .model import M3Care


class M3CareBCE(Method):
    capturable = True  # a pure function of logits and targets; the model reads nothing on the host

    def build_model(self):
        h = self.hparams
        return M3Care(
            num_labels=self.task.num_labels,
            ehr_dim=self.task.ehr_dim,
            note_dim=self.task.note_dim,
            hidden=self.task.backbone.hidden,
            dropout=h["dropout"],
            kernel_num=h["kernel_num"],
            kernel_mul=h["kernel_mul"],
            gcn_mask=h["gcn_mask"],
            kernel_form=h["kernel_form"],
            lambda_stab=h["lambda_stab"],
            stability_gradient=h["stability_gradient"],
        )

    def loss(self, logits, targets, index, epoch):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
