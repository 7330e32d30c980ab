"""What ``ehrbench methods describe`` prints: a method's manifest facts and its model's size on a task.

The size is counted from the task's shapes alone (``TaskInfo`` built from the track's spec, no data
materialised): labels from the task, 76 time-series channels, the note encoder's width (768 for the
paper's BioBERT unless given), the track's backbone width.
"""
from __future__ import annotations

from .backbones.flexcare import count_parameters
from .cards import label_names
from .data.timeseries import WIDTH as EHR_DIM
from .method import TaskInfo
from .protocol import Track
from .registry import MethodEntry

PAPER_NOTE_DIM = 768  # BioBERT base (the paper's frozen note encoder)


def shape_info(track: Track, task: str, note_dim: int = PAPER_NOTE_DIM) -> TaskInfo:
    """A task's ``TaskInfo`` from its spec: shapes and names only (``n_train`` is the synthetic
    task's total size, 0 for real data: it sizes per-sample buffers, never parameters)."""
    spec = track.task(task)
    return TaskInfo(spec.name, spec.kind, spec.num_labels, spec.n_total, EHR_DIM, note_dim,
                    tuple(label_names(spec.kind)), track.backbone)


def build_model(entry: MethodEntry, info: TaskInfo):
    """The method's model at its manifest's hyper-parameters for a task's shapes."""
    return entry.load_class()(info, entry.hparams).build_model()


def trainable_parameters(entry: MethodEntry, info: TaskInfo) -> int:
    """Trainable parameters of the method's model (the frozen note encoder is outside every model)."""
    return count_parameters(build_model(entry, info))


def card(entry: MethodEntry, track: Track, info: TaskInfo) -> str:
    m = entry.manifest
    hparams = ", ".join(f"{k}={v}" for k, v in m["hparams"].items()) or "-"
    model = build_model(entry, info)
    lines = [
        f"{entry.name}: {m['display_name']} (v{m['version']}, licence {m['license']}, backbone {m['backbone']})",
        f"  citation: {' '.join(m['citation'].split())}",
        f"  hparams: {hparams}",
        f"  trainable parameters: {count_parameters(model):,} on {track.name}/{info.name} "
        f"({info.num_labels} labels, ehr_dim {info.ehr_dim}, note_dim {info.note_dim}, hidden {track.backbone.hidden})",
    ]
    if hasattr(model, "fusion_layout"):  # FlexCare: which function it is (backbones/flexcare.py)
        lines.append(f"  model: {type(model).__name__}, fusion layout {model.fusion_layout}, "
                     f"structural mask {model.structural_mask}")
    return "\n".join(lines)
