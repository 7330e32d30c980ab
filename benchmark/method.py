"""The method interface: what a submission under ``methods/<name>/`` implements.

A method owns its model, its loss and its label-correction hooks. The harness owns everything that
must be identical for every method: data, noise, optimiser (Adam), learning-rate schedule, epochs,
batch size, evaluation and timing. A method only ever sees noisy training labels: never clean
training labels, never test data.

The smallest method is plain BCE on FlexCare (``methods/bce/method.py``)::

    class BCE(Method):
        def loss(self, logits, targets, index, epoch):
            return F.binary_cross_entropy_with_logits(logits, targets)

Per batch the trainer computes ``task_weight * (method.loss(...) + model_output.aux)``: the
backbone's own regularisers keep their weight whatever the loss, so every loss must reduce by mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .protocol import BackboneSize

if TYPE_CHECKING:  # annotations only: importing the interface imports neither torch nor a backbone
    import torch
    from torch import nn


@dataclass(frozen=True)
class TaskInfo:
    """What a method may know about the task: shapes and names, never labels."""

    name: str
    kind: str  # "phenotyping" | "diagnosis"
    num_labels: int
    n_train: int
    ehr_dim: int
    note_dim: int
    label_names: tuple[str, ...]
    backbone: BackboneSize


@dataclass
class EpochView:
    """Handed to ``Method.end_epoch`` after each epoch's training pass.

    ``train_logits[i]`` are the logits of training sample ``i`` from its forward pass in this epoch
    (training mode, as the reference records them); present only if ``Method.wants_train_logits``.
    ``noisy_labels`` are the observed training labels: the only training labels a method sees.
    """

    epoch: int
    epochs: int
    noisy_labels: torch.Tensor  # [N, C] float, on the device
    train_logits: torch.Tensor | None  # [N, C] float32, on the device


class Method:
    """Base class of a submission. Override ``loss``; the rest has working defaults."""

    #: Ask the trainer to keep every training sample's logits of the current epoch.
    wants_train_logits: bool = False

    #: Ask the trainer to pass the model's ``ModelOutput`` to ``loss`` as ``output=`` (for losses that
    #: need more than the logits: ``extras`` such as per-modality summary tokens or patient ids).
    wants_output: bool = False

    #: The loss may be captured into a CUDA graph (see ``benchmark/graphs.py``): it is a pure tensor
    #: function of its arguments and of tensors the method updates in place, never reassigns state in
    #: ``loss``, never reads a tensor back to the host, and depends on ``epoch`` only through
    #: ``capture_key``. Off by default: an uncapturable loss then simply runs eagerly.
    capturable: bool = False

    def __init__(self, task: TaskInfo, hparams: dict):
        self.task = task
        self.hparams = dict(hparams)

    def build_model(self) -> nn.Module:
        """The model: ``model(batch) -> ModelOutput``. Default: FlexCare at the track's size, with the
        hyper-parameters ``structural_mask`` and ``modalities`` (``benchmark.backbones.flexcare.build_for``)."""
        from .backbones.flexcare import build_for

        return build_for(self.task, self.hparams)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """Scalar loss of a batch: ``logits`` [B, C], noisy ``targets`` [B, C] in {0, 1},
        ``index`` [B] the samples' rows in the training set, ``epoch`` 1-based. Reduce by mean.
        With ``wants_output`` the trainer also passes ``output=`` the batch's ``ModelOutput``."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(logits, targets, index, epoch)")

    def capture_key(self, epoch: int):
        """What a captured loss depends on besides its tensors (e.g. the training stage); a change
        captures anew. Only read if ``capturable``."""
        return None

    def weight_decay(self, epoch: int) -> float:
        """Adam's (coupled L2) weight decay during ``epoch``; the harness applies it. Default 0."""
        return 0.0

    def end_epoch(self, view: EpochView) -> dict | None:
        """Label selection / correction after an epoch. Returned numbers go into the record."""
        return None

    def corrections(self) -> dict | None:
        """A correcting method's current view of the training labels, read after ``end_epoch`` so that
        the harness (which alone holds the clean labels) can score it into the record: ``{"labels":
        [N, C] corrected (soft or hard) labels, "partition": [N, C] int, 0 clean / 1 uncertain / 2
        noisy}``, on the device. None (the default) when there is nothing to score yet."""
        return None

    def suspicion(self) -> torch.Tensor | None:
        """The detection track (optional): after an epoch, the method's probability that each observed
        training label is wrong, an ``[N, C]`` tensor in [0, 1] (rows as ``index``), read after
        ``end_epoch`` and ``corrections``. The harness alone, which holds the clean labels, scores it
        (``benchmark/detection.py``: precision, recall and F1 of the entries scored above 0.5, and AUPRC,
        for missed and for spurious positives) into the epoch's curve row; the method never sees the
        result. It must not change training: expose what the method computes anyway. None (the
        default) when the method has no scores yet."""
        return None
