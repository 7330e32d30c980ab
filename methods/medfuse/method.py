"""MedFuse trained with BCE on the noisy labels (the paper's multimodal baseline; no noise handling).

Single stage, end to end, under the harness's budget (``model.py``, beside this file).
Width: the track's backbone width (128 on the full and paper tracks, the spec's hidden size).
"""
import torch.nn.functional as F

from benchmark.method import Method

from .model import MedFuse


class MedFuseBCE(Method):
    # Off: the loss qualifies, but capturing cuDNN's LSTM in a CUDA graph is not verified here.
    capturable = False

    def build_model(self):
        return MedFuse(
            num_labels=self.task.num_labels,
            ehr_dim=self.task.ehr_dim,
            note_dim=self.task.note_dim,
            hidden=self.task.backbone.hidden,
            ehr_layers=self.hparams["ehr_layers"],
            dropout=self.hparams["dropout"],
        )

    def loss(self, logits, targets, index, epoch):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
