"""The benchmark protocol as data: noise settings, seeds, the training budget, tracks and tasks.

Everything that must be identical for every method lives here, as rows in tables rather than
branches in code. Adding a noise setting is one line in ``NOISE_SETTINGS``. A track's tasks come
from the task cards (``datasets/<task>/card.yaml``, read by ``cards``): the real files, or their
synthetic twin at the card's scale or at the sizes the track writes.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from . import cards
from .errors import UsageError, choices_hint

SEEDS: tuple[int, ...] = (30, 40, 100)
NORMALISERS = ("train", "reference")  # or the path of a JSON file of means and stds
# The reference draws every noisy label matrix with this seed, whatever the run seed (spec §2).
REFERENCE_NOISE_SEED = 123


# Instance-dependent under-coding (family "under", ``noise.under_code``): the law's version and strength (the
# log-odds of a miss fall by UNDER_STRENGTH per sd of evidence), and the version of the evidence it reads
# (``data.evidence``). All three enter an under-coding run's spec, so changing one changes those run ids only.
UNDER_LAW_VERSION = "1"
UNDER_STRENGTH = 2.0
EVIDENCE_VERSION = "1"


@dataclass(frozen=True)
class NoiseSetting:
    """Flips of training labels, rates in percent.

    ``rho_plus`` = P(1 -> 0) (false negatives), ``rho_minus`` = P(0 -> 1) (false positives).
    Class-conditional families: ``sym``, ``asym``, ``clean``, and ``bal``, which leaves ``rho_minus`` to be
    derived from the training labels (``balanced_rho_minus``), so that the expected 1->0 and 0->1 flips per
    sample are equal. ``under`` (instance-dependent under-coding) drops positives only (``rho_minus`` = 0),
    the weakly evidenced ones more often, at the realised per-label rates of its twin ``asym-RP-0``
    (``noise.under_code``).
    """

    name: str
    family: str  # "sym" | "asym" | "bal" | "clean" | "under"
    rho_plus: float
    rho_minus: float | None

    def rates(self, num_labels: int, mean_cardinality: float) -> tuple[float, float]:
        """(rho_plus, rho_minus) as probabilities for a label matrix of this shape."""
        rp = self.rho_plus / 100.0
        if self.family == "bal":
            return rp, balanced_rho_minus(rp, num_labels, mean_cardinality)
        return rp, self.rho_minus / 100.0

    def label(self) -> str:
        """The paper's notation, e.g. ``(20,20)`` or ``(40,r)``; under-coding ``u(40,0)``."""
        rm = "r" if self.family == "bal" else _fmt(self.rho_minus)
        return f"{'u' if self.family == 'under' else ''}({_fmt(self.rho_plus)},{rm})"

    def twin(self) -> "NoiseSetting":
        """The class-conditional setting at the same realised per-label rates: ``asym-RP-0`` for ``under-RP``."""
        if self.family != "under":
            raise ValueError(f"{self.name} is class-conditional: only under-coding settings have a twin")
        return parse_noise(f"asym-{_fmt(self.rho_plus)}-0")  # as the user would name it: one spec, one run id

    def spec_fields(self) -> dict:
        """What enters a run's spec beyond the name, family and rates: for under-coding, the law and the
        evidence it reads; nothing for the class-conditional families (their run ids stay as they were)."""
        if self.family != "under":
            return {}
        return {"law_version": UNDER_LAW_VERSION, "strength": UNDER_STRENGTH, "evidence_version": EVIDENCE_VERSION}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def balanced_rho_minus(rho_plus: float, num_labels: int, mean_cardinality: float) -> float:
    """rho_minus = rho_plus * L_avg / (C - L_avg), the reference's balanced rule (spec §2).

    The reference adds 1e-8 to the denominator; we keep it so that the draw is bit-identical.
    """
    if not 0 <= mean_cardinality < num_labels:
        raise UsageError(
            f"balanced noise needs 0 <= mean label cardinality < number of labels, "
            f"got L_avg={mean_cardinality} with C={num_labels}"
        )
    return rho_plus * mean_cardinality / (num_labels - mean_cardinality + 1e-8)


# The paper's ten settings, in the order of its tables: (rho_plus, rho_minus) in percent.
NOISE_SETTINGS: tuple[NoiseSetting, ...] = (
    NoiseSetting("sym-20", "sym", 20, 20),
    NoiseSetting("sym-40", "sym", 40, 40),
    NoiseSetting("asym-0-20", "asym", 0, 20),
    NoiseSetting("asym-0-40", "asym", 0, 40),
    NoiseSetting("asym-20-0", "asym", 20, 0),
    NoiseSetting("asym-20-40", "asym", 20, 40),
    NoiseSetting("asym-40-0", "asym", 40, 0),
    NoiseSetting("asym-40-20", "asym", 40, 20),
    NoiseSetting("bal-20", "bal", 20, None),
    NoiseSetting("bal-40", "bal", 40, None),
)
# Instance-dependent under-coding at the paper's two rho+ (``noise.under_code``); each has the twin asym-RP-0.
UNDER_SETTINGS: tuple[NoiseSetting, ...] = (NoiseSetting("under-20", "under", 20, 0), NoiseSetting("under-40", "under", 40, 0))
# Not in the paper's grid, but accepted by name: an upper bound with the clean labels, and under-coding.
EXTRA_NOISE_SETTINGS: tuple[NoiseSetting, ...] = (NoiseSetting("clean", "clean", 0, 0), *UNDER_SETTINGS)

_NOISE_RE = re.compile(r"^(sym|asym|bal|under)-(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?$", re.ASCII)  # no Arabic-Indic digits
NOISE_SYNTAX = ("sym-R, asym-RPLUS-RMINUS, bal-RPLUS or under-RPLUS with rates in percent in [0, 100), "
                "or 'clean'")
_FAMILIES = ("sym", "asym", "bal", "under")


def parse_noise(text: str) -> NoiseSetting:
    """A noise setting from its name: the paper's ten, 'clean', or any well-formed custom rates.

    A setting is its rates: the flips depend on (rho_plus, rho_minus) only (``noise.make_noisy``), so the
    returned setting has the canonical name of its rates (``canonical``): ``sym-20.0`` is ``sym-20``,
    ``asym-20-20`` (the same rates as sym-20, hence the same noisy labels) is ``sym-20``, ``sym-0`` and
    ``asym-0-0`` are ``clean``. Balanced settings derive rho_minus from the labels: ``bal-R`` is its own
    setting for each R. Under-coding ``under-R`` is its own setting for each R > 0 (never its twin
    ``asym-R-0``: other entries flip); ``under-0`` drops nothing and is ``clean``. One run spec, one run id
    and one table column per setting, however it was written."""
    return canonical(_parse_noise(text))


def canonical(setting: NoiseSetting) -> NoiseSetting:
    """The setting of the paper (or 'clean') with the same rates, else the rates named as ``sym-R`` when
    equal and ``asym-RPLUS-RMINUS`` otherwise (``bal-R`` for a balanced one), with integral rates written
    as integers; ``under-R`` for an under-coding one."""
    for known in NOISE_SETTINGS + EXTRA_NOISE_SETTINGS:
        if same_rates(known, setting):
            return known
    a = _fmt(setting.rho_plus)
    if setting.family == "bal":
        return NoiseSetting(f"bal-{a}", "bal", setting.rho_plus, None)
    if setting.family == "under":
        return NoiseSetting(f"under-{a}", "under", setting.rho_plus, 0)
    if setting.rho_plus == setting.rho_minus:
        return NoiseSetting(f"sym-{a}", "sym", setting.rho_plus, setting.rho_minus)
    return NoiseSetting(f"asym-{a}-{_fmt(setting.rho_minus)}", "asym", setting.rho_plus, setting.rho_minus)


def same_rates(a: NoiseSetting, b: NoiseSetting) -> bool:
    """Whether two settings flip labels alike: equal (rho_plus, rho_minus), or both balanced with one rho_plus,
    or both under-coding with one rho_plus. An under-coding setting that drops nothing (rate 0) is clean."""
    if "under" in (a.family, b.family) and a.rho_plus == b.rho_plus == 0 and a.rho_minus == b.rho_minus == 0:
        return True
    if (a.family == "bal") != (b.family == "bal") or (a.family == "under") != (b.family == "under"):
        return False
    return a.rho_plus == b.rho_plus and (a.family == "bal" or a.rho_minus == b.rho_minus)


def _parse_noise(text: str) -> NoiseSetting:
    s = text.strip().lower()
    known = {n.name: n for n in NOISE_SETTINGS + EXTRA_NOISE_SETTINGS}
    if s in known:
        return known[s]
    m = _NOISE_RE.match(s)
    if not m:
        family = s.split("-")[0]
        if family not in _FAMILIES:
            raise UsageError(
                f"unknown noise setting {text!r}{choices_hint(s, known)}; "
                f"custom settings are written {NOISE_SYNTAX}"
            )
        raise UsageError(f"malformed noise setting {text!r}: expected {NOISE_SYNTAX}")
    family, a, b = m.group(1), float(m.group(2)), m.group(3)
    if (family == "asym") != (b is not None):
        raise UsageError(f"malformed noise setting {text!r}: expected {NOISE_SYNTAX}")
    for rate in (a, float(b) if b is not None else 0.0):
        if not 0 <= rate < 100:
            raise UsageError(f"malformed noise setting {text!r}: rate {rate:g} is not in [0, 100)")
    if family == "sym":
        return NoiseSetting(s, family, a, a)
    if family == "bal":
        return NoiseSetting(s, family, a, None)
    if family == "under":
        return NoiseSetting(s, family, a, 0.0)
    return NoiseSetting(s, family, a, float(b))


@dataclass(frozen=True)
class Budget:
    """The training budget every method gets; methods cannot change it."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 128
    cosine_t_max: int = 10
    cosine_eta_min: float = 0.0

    def lr_at(self, epoch: int) -> float:
        """Learning rate during 1-based ``epoch``: cosine annealing stepped once per epoch.

        With T_max=10 over 30 epochs the rate is periodic (period 20): epoch 11 trains at 0 and
        epoch 21 is back at the base rate, as in the reference (spec §8, B5). This closed form equals
        PyTorch's ``CosineAnnealingLR`` recursion, which the trainer uses.
        """
        t = epoch - 1
        return self.cosine_eta_min + (self.lr - self.cosine_eta_min) * (
            1 + math.cos(math.pi * t / self.cosine_t_max)
        ) / 2


@dataclass(frozen=True)
class TaskSpec:
    """One task of a track: where its data comes from and how it is materialised."""

    name: str
    kind: str  # "phenotyping" (25 labels) | "diagnosis" (14 CheXpert labels)
    source: str  # "synthetic" (generated, then read back) | "real" (the user's prepared MIMIC files) |
    #              "vendored" (raw tables shipped beside the card, built into the cache: the MIMIC-III demo)
    layout: str  # on-disk layout: "mimic4" | "mimic3-miracl" | "mimic3-benchmark" (benchmark/data/loaders.py)
    num_labels: int
    # Synthetic tasks: samples over all splits, target mean labels per sample, modality missingness.
    n_total: int = 0
    cardinality: float = 0.0
    missing_ehr: float = 0.0
    missing_note: float = 0.0
    max_hours: int = 512  # last hourly bins kept per stay
    note_tokens: int = 512  # tokens kept per note (the reference truncates at 512)
    encoder: str = "minilm"  # frozen note encoder: "minilm" (offline default), a hub name, or a folder by identity (ENCODER_FOLDER)
    normaliser: str = "train"  # "train" split statistics | "reference" (published MIMIC-III ones, B18) | a JSON file
    uncertain: str = "negative"  # diagnosis: CheXpert uncertain -> 0 (MIRACL, B12) | "positive" (U-Ones)
    task_dir: str = "phenotyping"  # folder of the listfiles under the data root
    data_dir: str = ""  # real tasks: folder under $EHRBENCH_DATA (e.g. "mimic4"); vendored: the card's folder
    task_weight: float = 1.0  # FlexCare's per-task loss weight (phenotyping 1.0, diagnosis 0.2)
    # Synthetic tasks: the note lengths as a share of the real pipeline's (data/note_lengths.py): 1 = the real
    # shape (the full track), 0 = the label-bearing history section alone (quick, smoke; generator 3's notes).
    note_scale: float = 0.0


# TaskSpec fields added after run ids were first written, with the value that gives the earlier behaviour:
# a spec holds such a field only when it has another value (``task_dict``), so the tasks that keep the
# earlier behaviour keep their run ids and cache keys, and an older record's spec, which lacks the field,
# reads back (``TaskSpec(**spec)``) as what it ran.
TASK_FIELDS_SINCE = {"note_scale": 0.0}


def task_dict(task: TaskSpec) -> dict:
    """A task as a run spec and the caches hold it: its fields, less the later ones at their earlier value."""
    return {k: v for k, v in asdict(task).items() if not (k in TASK_FIELDS_SINCE and v == TASK_FIELDS_SINCE[k])}


# A note encoder in a run spec is named by what it is, never by where it lies: "minilm" (the built-in),
# a hub name, or, for a local folder, ENCODER_FOLDER followed by the hash of its config, tokenizer and
# weights files (``data.notes.encoder_identity``). The folder's path is provenance only (the record's
# ``environment.encoder_path``), so moving or renaming the folder keeps every run id.
ENCODER_FOLDER = "folder-sha256:"
ENCODER_IDENTITY_SINCE = "0.4.0"  # specs of earlier harnesses hold the folder's path (legacy_encoder_path)


def legacy_encoder_path(encoder: str) -> bool:
    """Whether a spec's ``task_spec.encoder`` is a local folder's path, as harness < 0.4.0 wrote it (an
    absolute path, or one starting with '.' or '~'); such a record keeps its id (the hash of its own
    spec) but is planned again with the folder's identity in place of the path."""
    return not encoder.startswith(ENCODER_FOLDER) and (encoder.startswith((".", "~")) or encoder.startswith("/"))


@dataclass(frozen=True)
class BackboneSize:
    """FlexCare width; the paper's is d=128, 4 layers, 2 heads, FF 512, MoE 10 experts top-2."""

    hidden: int = 128
    layers: int = 4
    heads: int = 2
    ff: int = 512
    experts: int = 10
    top_k: int = 2


@dataclass(frozen=True)
class Track:
    """A profile fixing the data and sizes. Results are compared only within one track."""

    name: str
    description: str
    tasks: tuple[TaskSpec, ...]
    budget: Budget = field(default_factory=Budget)
    backbone: BackboneSize = field(default_factory=BackboneSize)
    on_leaderboard: bool = True
    available: bool = True
    unavailable_reason: str = ""

    def task(self, name: str) -> TaskSpec:
        by_name = {t.name: t for t in self.tasks}
        if name not in by_name:
            raise UsageError(
                f"unknown task '{name}' in track '{self.name}'{choices_hint(name, by_name)}"
            )
        return by_name[name]


def card_task(card: cards.Card, source: str, name: str | None = None, **sizes) -> TaskSpec:
    """A task from its card: ``source="real"`` reads the prepared files under the card's ``data_dir``;
    ``source="synthetic"`` generates the twin at the card's scale, notes at the real lengths included
    (note_scale 1), or at the ``sizes`` a track gives (n_total, missing rates, max_hours, note_tokens,
    note_scale, ...); ``source="vendored"`` builds the raw tables
    that ship beside the card (``raw_tables``). Fields neither sets keep TaskSpec's defaults."""
    fields = dict(kind=card.kind, layout=card.layout, num_labels=card.num_labels, task_dir=card.task_dir,
                  task_weight=card.task_weight, **card.task_fields)
    if source == "synthetic":
        scale = card.scale
        fields.update(n_total=scale.n_total, cardinality=scale.cardinality, missing_ehr=scale.missing_ehr,
                      missing_note=scale.missing_note, note_scale=1.0)
    elif source == "real":
        fields.update(data_dir=card.data_dir)
    elif source == "vendored":
        if not card.raw_tables:
            raise ValueError(f"{card.path}: no 'raw_tables' to build")
        fields.update(data_dir=card.path.parent.name)
    else:
        raise ValueError(f"source must be 'synthetic', 'real' or 'vendored', got {source!r}")
    return TaskSpec(name or card.name, source=source, **(fields | sizes))


_CARDS = {name: cards.get_card(name) for name in ("mimic4-phe", "mimic4-dia", "mimic3-phe")}
MIMIC4_PHE, MIMIC4_DIA, MIMIC3_PHE = _CARDS.values()

# Sized so that one method's 30-run grid fits in minutes on a 2-core CPU: ~12 training steps per
# epoch at batch 128 over 1+1+25+17 = 44 tokens, on a narrow backbone. The protocol (epochs,
# optimiser, schedule, batch size, noise, seeds, metric) is the paper's, unchanged.
QUICK = Track(
    name="quick",
    description=(
        "Synthetic MIMIC-IV-like phenotyping (25 labels, L_avg 4.575), shrunk to run on a laptop CPU: "
        "1,792 stays (patient-level split, ~1,440 train / ~350 test), the last 24 hourly bins of the "
        "76 channels, short notes (the history section alone, note_scale 0) cut to 16 MiniLM tokens; "
        "FlexCare narrowed to d=32 / 2 layers / FF 64 / "
        "4 experts. Paper protocol otherwise unchanged."
    ),
    tasks=(card_task(MIMIC4_PHE, "synthetic", "syn-phe", n_total=1792, max_hours=24, note_tokens=16, note_scale=0.0),),
    backbone=BackboneSize(hidden=32, layers=2, heads=2, ff=64, experts=4, top_k=2),
)

# A few seconds per run: for tests and submission smoke checks, never for the leaderboard.
SMOKE = Track(
    name="smoke",
    description="Tiny synthetic tasks and a 2-epoch budget, for tests and smoke checks only.",
    tasks=(
        card_task(MIMIC4_PHE, "synthetic", "syn-phe", n_total=160, missing_ehr=0.1, missing_note=0.1, max_hours=8,
                  note_tokens=8, note_scale=0.0),
        card_task(MIMIC4_DIA, "synthetic", "syn-dia", n_total=160, missing_ehr=0.5, max_hours=8, note_tokens=8,
                  note_scale=0.0),
    ),
    budget=Budget(epochs=2),
    backbone=BackboneSize(hidden=16, layers=1, heads=2, ff=32, experts=4, top_k=2),
    on_leaderboard=False,
)

# MIMIC scale (the cards' scale statistics, supplement Table 1): sizes, label cardinality and the
# diagnosis task's missingness; notes at the real pipelines' lengths (note_scale 1, data/note_lengths.py).
FULL = Track(
    name="full",
    description="Synthetic tasks at MIMIC scale (59,798 / 132,576 / 41,904 samples), notes as long as the real "
                "pipelines' (MIMIC-III: the first five notes of 48 h; MIMIC-IV: discharge-summary PMH "
                "sections), paper-size FlexCare. GPU.",
    tasks=tuple(card_task(card, "synthetic") for card in _CARDS.values()),
)
# Named switch ``normaliser`` of the paper track: "reference" (default), as the reference code, which
# z-scores every task, MIMIC-IV included, with the MIMIC-III benchmark's published ph_ts1.0 statistics
# (reference/miracl_flexcare.md 11.6); "train" (``--normaliser train``) fits them on the training split.
# Synthetic tracks keep "train": their series are not MIMIC's, so MIMIC's statistics would not centre them.
PAPER = Track(
    name="paper",
    description="Your prepared MIMIC-IV / MIMIC-III task files under $EHRBENCH_DATA (or --root), z-scored with "
                "the published MIMIC-III statistics as the reference code does. GPU.",
    tasks=tuple(card_task(card, "real", normaliser="reference") for card in _CARDS.values()),
)

# Real MIMIC-III files without credentials: the open PhysioNet demo, vendored under its card and built
# by `ehrbench data build mimic3`'s steps into the cache on first use. Sized like quick (48 bins: half the
# demo's stays are longer than two days), z-scored as the paper track is. 18 test stays: a proof that the
# real pipeline runs end to end, not a result to rank methods by.
MIMIC3_DEMO = cards.get_card("mimic3-demo")
DEMO = Track(
    name="demo",
    description=(
        "The open MIMIC-III Clinical Database Demo 1.4 (PhysioNet, ODbL), vendored and built by the real "
        "pipeline on first use: 113 ICU stays of 88 patients (95 train / 18 test), 25 phenotypes, no notes; "
        "the last 48 hourly bins, the published MIMIC-III normaliser, FlexCare narrowed as in quick. Minutes "
        "on a CPU; checks the real-data path, too small to rank methods."
    ),
    tasks=(card_task(MIMIC3_DEMO, "vendored", max_hours=48, note_tokens=16, normaliser="reference"),),
    backbone=BackboneSize(hidden=32, layers=2, heads=2, ff=64, experts=4, top_k=2),
)

TRACKS: dict[str, Track] = {t.name: t for t in (QUICK, FULL, PAPER, SMOKE, DEMO)}


def get_track(name: str) -> Track:
    if name not in TRACKS:
        raise UsageError(f"unknown track '{name}'{choices_hint(name, TRACKS)}")
    track = TRACKS[name]
    if not track.available:
        raise UsageError(f"track '{name}' is not available yet: {track.unavailable_reason}")
    return track


def to_dict(obj) -> dict:
    return task_dict(obj) if isinstance(obj, TaskSpec) else asdict(obj)
