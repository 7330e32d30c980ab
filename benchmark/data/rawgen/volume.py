"""How much the raw writer writes beyond the task's own rows: the distractors, and the targets that
bring a table to a share of MIMIC-III's size (``bulk``)."""
from __future__ import annotations

from dataclasses import dataclass, field


def _few() -> dict[str, int]:
    return {"transfer": 2, "ward": 1, "no_admission": 1, "two_icu_stays": 4, "child": 2, "icu_dates": 1,
            "admission_dates": 1, "death": 1, "no_los": 1, "no_events": 1, "outside": 1}


def few_mimic4() -> dict[str, int]:
    """The default distractor stays of MIMIC-IV, which has no ward ids (a transfer is a change of care unit)."""
    return {k: n for k, n in _few().items() if k != "ward"}


@dataclass(frozen=True)
class Volume:
    distractors: dict[str, int] = field(default_factory=_few)  # distractor stays per kind (stays.DISTRACTORS)
    copy_share: float = 0.002  # share of the qualifying true events copied per broken rule
    duplicate_share: float = 0.002  # share of vital signs given a smaller duplicate at the same chart time
    distractor_events_per_hour: float = 1.0  # heart rates per hour of a distractor stay (unless ``mapped`` asks more)
    other_chart: int = 2_000  # CHARTEVENTS rows of other items (at least; ``targets`` may ask more)
    other_lab: int = 500
    diagnoses_per_admission: float = 11.0  # MIMIC-III: 651,047 rows / 58,976 admissions
    output_per_hour: float = 0.5  # OUTPUTEVENTS rows per ICU hour (unless ``targets`` asks more)
    targets: dict[str, int] = field(default_factory=dict)  # table -> rows to reach (CHARTEVENTS, LABEVENTS, ...)
    mapped: dict[str, int] = field(default_factory=dict)  # table -> rows of the 17 variables' items to reach
    note_chars: int = 0  # mean length of the filler notes (none without a NOTEEVENTS target)
