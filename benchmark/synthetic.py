"""A first synthetic multimodal, multi-label task, generated straight into tensors.

Latent patient model: a few disease factors (sepsis, renal, cardiac, metabolic, respiratory,
hepatic/GI), each the sum of a part visible only in the time series and a part visible only in the
note. A label's score is a sparse mix of factors plus its own noise, thresholded at the quantile that
gives its prevalence. So labels co-occur along the factors (septicemia with shock and respiratory
failure, renal failure with fluid/electrolyte disorders, ...), and a model needs both modalities to
predict them well. The clean labels are known, which is what makes corrections measurable.
"""
from __future__ import annotations

import zlib

import numpy as np

from .data import TaskData, to_split
from .protocol import TaskSpec

GENERATOR_VERSION = "quick-1"

PHENOTYPES = [
    "Acute and unspecified renal failure", "Acute cerebrovascular disease",
    "Acute myocardial infarction", "Cardiac dysrhythmias", "Chronic kidney disease",
    "Chronic obstructive pulmonary disease and bronchiectasis",
    "Complications of surgical procedures or medical care", "Conduction disorders",
    "Congestive heart failure; nonhypertensive", "Coronary atherosclerosis and other heart disease",
    "Diabetes mellitus with complications", "Diabetes mellitus without complication",
    "Disorders of lipid metabolism", "Essential hypertension", "Fluid and electrolyte disorders",
    "Gastrointestinal hemorrhage", "Hypertension with complications and secondary hypertension",
    "Other liver diseases", "Other lower respiratory disease", "Other upper respiratory disease",
    "Pleurisy; pneumothorax; pulmonary collapse",
    "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",
    "Respiratory failure; insufficiency; arrest (adult)", "Septicemia (except in labor)", "Shock",
]  # fmt: skip
PHENOTYPE_PREVALENCE = [
    0.21, 0.08, 0.10, 0.32, 0.13, 0.13, 0.21, 0.07, 0.27, 0.32, 0.10, 0.19, 0.29,
    0.42, 0.27, 0.07, 0.13, 0.09, 0.05, 0.04, 0.09, 0.14, 0.18, 0.14, 0.08,
]  # fmt: skip
# Factor -> phenotype indices that load on it.
PHENOTYPE_FACTORS = [
    [23, 24, 22, 0, 14],  # sepsis
    [0, 14, 4, 16],  # renal
    [8, 3, 9, 2, 7],  # cardiac
    [12, 9, 13, 11, 10],  # metabolic
    [21, 22, 5, 18, 20, 19],  # respiratory
    [17, 15, 14, 6],  # hepatic / GI
]
PHENOTYPE_EXCLUSIVE = [(10, 11), (13, 16)]  # nearly exclusive pairs

DIAGNOSES = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
    "Pneumonia", "Pneumothorax", "Support Devices",
]  # fmt: skip
DIAGNOSIS_PREVALENCE = [0.24, 0.24, 0.06, 0.15, 0.04, 0.02, 0.04, 0.27, 0.30, 0.30, 0.01, 0.09, 0.05, 0.45]
DIAGNOSIS_FACTORS = [[0, 7, 9, 2], [1, 3, 4], [11, 2, 7], [12, 10, 5], [13, 0, 9], [6, 7]]


def _task_tables(spec: TaskSpec):
    if spec.kind == "phenotyping":
        names, prev, factors, excl = PHENOTYPES, PHENOTYPE_PREVALENCE, PHENOTYPE_FACTORS, PHENOTYPE_EXCLUSIVE
    else:
        names, prev, factors, excl = DIAGNOSES, DIAGNOSIS_PREVALENCE, DIAGNOSIS_FACTORS, []
    if spec.num_labels != len(names):
        raise ValueError(f"task '{spec.name}': {spec.kind} has {len(names)} labels, spec says {spec.num_labels}")
    return names, np.array(prev), factors, excl


def generate(spec: TaskSpec) -> TaskData:
    """Deterministic in the task spec: every run of a task sees identical data."""
    rng = np.random.default_rng(zlib.crc32(f"{GENERATOR_VERSION}:{spec!r}".encode()))
    names, prevalence, factors, exclusive = _task_tables(spec)
    n, c, k = spec.n_train + spec.n_test, spec.num_labels, len(factors)

    f_ehr, f_note = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    loadings = rng.normal(0, 0.15, size=(c, k))
    for j, members in enumerate(factors):
        loadings[members, j] += 1.0
    # Half of each factor is seen in the time series, half in the note.
    score = (f_ehr + f_note) @ loadings.T / np.sqrt(2) + rng.normal(0, 0.6, size=(n, c))
    cut = np.array([np.quantile(score[:, j], 1 - prevalence[j]) for j in range(c)])
    labels = (score > cut).astype(np.uint8)
    for a, b in exclusive:
        both = (labels[:, a] == 1) & (labels[:, b] == 1)
        drop = both & (rng.random(n) < 0.9)
        labels[drop, np.where(score[drop, a] > score[drop, b], b, a)] = 0

    ehr, ehr_len = _time_series(rng, f_ehr, spec)
    note, note_len = _notes(rng, f_note, spec)
    arrays = dict(ehr=ehr, ehr_len=ehr_len, note=note, note_len=note_len, patient_id=np.arange(n), labels=labels)
    train = {key: v[: spec.n_train] for key, v in arrays.items()}
    test = {key: v[spec.n_train :] for key, v in arrays.items()}
    return TaskData(spec=spec, label_names=list(names), train=to_split(train), test=to_split(test))


def _lengths(rng, n: int, max_len: int, missing: float) -> np.ndarray:
    length = rng.integers(max(1, max_len // 2), max_len + 1, size=n)
    return np.where(rng.random(n) < missing, 0, length)


def _time_series(rng, factors: np.ndarray, spec: TaskSpec):
    """[N, T, 76]: 59 value channels drifting with the factors over the stay, 17 observed-masks."""
    n, t = len(factors), spec.ehr_hours
    mix = rng.normal(0, 1, size=(factors.shape[1], 59)) * (rng.random(59) < 0.5)
    ramp = np.linspace(0.3, 1.0, t)[None, :, None]
    values = (factors @ mix)[:, None, :] * ramp + rng.normal(0, 1.0, size=(n, t, 59))
    masks = (rng.random((n, t, 17)) < 0.4).astype(np.float32)
    ehr = np.concatenate([values, masks], -1).astype(np.float32)
    length = _lengths(rng, n, t, spec.missing_ehr)
    ehr[np.arange(t)[None, :] >= length[:, None]] = 0.0
    return ehr, length


def _notes(rng, factors: np.ndarray, spec: TaskSpec):
    """[N, n, D] token embeddings: random words from a vocabulary plus a factor-driven topic."""
    n, tokens, dim = len(factors), spec.note_tokens, spec.note_dim
    vocab = rng.normal(0, 1, size=(512, dim))
    words = vocab[rng.integers(0, len(vocab), size=(n, tokens))]
    topic = factors @ rng.normal(0, 1, size=(factors.shape[1], dim))
    note = (words + 0.8 * topic[:, None, :]).astype(np.float32) / np.sqrt(dim)
    length = _lengths(rng, n, tokens, spec.missing_note)
    note[np.arange(tokens)[None, :] >= length[:, None]] = 0.0
    return note, length
