"""Synthetic EHR tasks written in the real pipelines' on-disk layouts, read back by the real loaders.

Latent patient model. Each patient has chronic factors (cardiometabolic, renal, pulmonary, hepatic)
that persist across their stays; each stay adds acute factors (infection, cardiac, respiratory,
neurological/bleeding). A label's score mixes factors (so labels co-occur: sepsis with shock and
respiratory failure, renal failure with fluid/electrolyte disorders, lipids with coronary disease, ...)
plus its own noise, and is thresholded at the quantile giving the label's prevalence, scaled so the
mean label cardinality hits the task's target. Near-exclusive pairs (the two diabetes labels,
essential vs complicated hypertension) are enforced.

Evidence. Positive labels shift vital signs, labs and the Glasgow coma scale in the time series
(acute conditions strongly, chronic ones weakly) and are mentioned in the note (chronic conditions
often, acute ones rarely), with abbreviations, negated and family-history distractors, and imperfect
sensitivity. So labels depend on both modalities and neither alone suffices. Vitals are sampled
irregularly (about hourly), GCS and temperature every few hours, labs more rarely, with MIMIC-III
CareVue or MetaVision spellings, a few events after the end of the stay, and notes in the
preprocessed form (lower case, no punctuation). The mentions make a note's history section; its length
around that section follows the real pipeline's law at the task's ``note_scale`` (``note_lengths``).

Everything is seeded by the task spec: same spec, same files, byte for byte. Each part draws from its own
stream (labels, modalities, notes, note lengths, series, split, listfile), so the labels, mentions and
series of a spec are the same at every note length.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import cards
from ..errors import UsageError
from . import note_lengths
from .loaders import EPISODE_HEADER
from .timeseries import CHANNELS

# The version of what the generator writes, recorded in every run spec of a synthetic task and keyed into
# its caches (``version``). 4: notes at the real pipelines' lengths (``note_lengths``, TaskSpec.note_scale).
# A task at note_scale 0 is written byte for byte as version 3 wrote it, and keeps version "3".
GENERATOR_VERSION = "4"
SHORT_NOTES_VERSION = "3"
# The random streams are keyed by this, not by GENERATOR_VERSION: labels, mentions, series and splits are
# version 3's for the same spec, whatever the notes' length.
STREAMS_VERSION = "3"

# The generative model of each label, by name; the label names and their column order are the task cards'
# (cards.label_names). Row: (label, prevalence, factor loadings {factor: weight}, vital effects {signal: shift},
# note terms, note sensitivity).
FACTORS = ["cardiometabolic", "renal", "pulmonary", "hepatic", "infection", "cardiac", "respiratory", "neuro_bleed"]
CHRONIC_FACTORS = 4
PHENOTYPES = [
    ("Acute and unspecified renal failure", .21, {"renal": 1, "infection": .6}, {"ph": -.05, "glucose": 10, "sbp": -6}, ["acute kidney injury", "aki", "arf"], .3),
    ("Acute cerebrovascular disease", .08, {"neuro_bleed": 1, "cardiometabolic": .3}, {"gcs": -3, "sbp": 15}, ["stroke", "cva", "tia"], .4),
    ("Acute myocardial infarction", .10, {"cardiac": 1, "cardiometabolic": .5}, {"hr": 10, "sbp": -10}, ["nstemi", "stemi", "mi"], .4),
    ("Cardiac dysrhythmias", .32, {"cardiac": .8, "cardiometabolic": .4}, {"hr": 18, "hr_var": 10}, ["afib", "atrial fibrillation", "a fib"], .75),
    ("Chronic kidney disease", .13, {"renal": 1, "cardiometabolic": .4}, {"sbp": 8, "ph": -.02}, ["ckd", "chronic kidney disease", "ckd stage 3"], .8),
    ("Chronic obstructive pulmonary disease and bronchiectasis", .13, {"pulmonary": 1}, {"spo2": -3, "rr": 3, "fio2": .1}, ["copd", "emphysema", "chronic bronchitis"], .8),
    ("Complications of surgical procedures or medical care", .21, {"infection": .5, "neuro_bleed": .4}, {"temp": .4, "hr": 6}, ["postoperative complication", "wound infection", "s p surgery"], .3),
    ("Conduction disorders", .07, {"cardiac": .8}, {"hr": -15}, ["heart block", "lbbb", "rbbb"], .6),
    ("Congestive heart failure; nonhypertensive", .27, {"cardiac": .7, "cardiometabolic": .6}, {"spo2": -2, "weight": 12, "rr": 2}, ["chf", "heart failure", "hfref"], .6),
    ("Coronary atherosclerosis and other heart disease", .32, {"cardiometabolic": 1, "cardiac": .4}, {"sbp": 4}, ["cad", "coronary artery disease", "s p cabg"], .8),
    ("Diabetes mellitus with complications", .10, {"cardiometabolic": .9, "renal": .5}, {"glucose": 60}, ["diabetic nephropathy", "diabetic neuropathy", "dm2 with complications"], .7),
    ("Diabetes mellitus without complication", .19, {"cardiometabolic": .9}, {"glucose": 35}, ["dm2", "diabetes", "niddm", "t2dm"], .8),
    ("Disorders of lipid metabolism", .29, {"cardiometabolic": 1}, {}, ["hld", "hyperlipidemia", "high cholesterol"], .8),
    ("Essential hypertension", .42, {"cardiometabolic": .8}, {"sbp": 12, "dbp": 6}, ["htn", "hypertension"], .85),
    ("Fluid and electrolyte disorders", .27, {"renal": .7, "infection": .5, "hepatic": .3}, {"ph": -.03, "hr": 5}, ["hyponatremia", "hypokalemia"], .3),
    ("Gastrointestinal hemorrhage", .07, {"neuro_bleed": .7, "hepatic": .6}, {"hr": 12, "sbp": -15}, ["gi bleed", "melena", "ugib"], .4),
    ("Hypertension with complications and secondary hypertension", .13, {"cardiometabolic": .7, "renal": .8}, {"sbp": 20}, ["hypertensive nephropathy", "secondary hypertension"], .6),
    ("Other liver diseases", .09, {"hepatic": 1}, {"temp": .2, "glucose": -10}, ["cirrhosis", "hepatitis c", "fatty liver"], .7),
    ("Other lower respiratory disease", .05, {"pulmonary": .6, "respiratory": .5}, {"rr": 3, "spo2": -2}, ["bronchiectasis", "lung nodule"], .4),
    ("Other upper respiratory disease", .04, {"respiratory": .6}, {"rr": 2}, ["sinusitis", "pharyngitis"], .4),
    ("Pleurisy; pneumothorax; pulmonary collapse", .09, {"respiratory": .8, "pulmonary": .3}, {"spo2": -3, "rr": 4}, ["pneumothorax", "pleural effusion"], .3),
    ("Pneumonia (except that caused by tuberculosis or sexually transmitted disease)", .14, {"infection": .7, "respiratory": .7}, {"temp": .9, "rr": 5, "spo2": -3}, ["pneumonia", "pna"], .3),
    ("Respiratory failure; insufficiency; arrest (adult)", .18, {"respiratory": 1, "infection": .5}, {"spo2": -5, "fio2": .3, "rr": 6, "gcs": -2}, ["respiratory failure", "intubated"], .3),
    ("Septicemia (except in labor)", .14, {"infection": 1}, {"temp": 1.0, "hr": 18, "mbp": -12}, ["sepsis", "bacteremia", "urosepsis"], .3),
    ("Shock", .08, {"infection": .8, "cardiac": .5}, {"mbp": -20, "sbp": -25, "hr": 15, "ph": -.08}, ["shock", "septic shock", "cardiogenic shock"], .2),
]  # fmt: skip
PHENOTYPE_EXCLUSIVE = [("Diabetes mellitus with complications", "Diabetes mellitus without complication"),
                       ("Essential hypertension", "Hypertension with complications and secondary hypertension")]
DIAGNOSES = [
    ("Atelectasis", .22, {"respiratory": .8}, {"spo2": -2, "rr": 2}, ["atelectasis"], .2),
    ("Cardiomegaly", .18, {"cardiac": .6, "cardiometabolic": .6}, {"weight": 8}, ["cardiomegaly", "chf", "heart failure"], .6),
    ("Consolidation", .06, {"infection": .7, "respiratory": .6}, {"temp": .6, "rr": 3}, ["pneumonia"], .3),
    ("Edema", .14, {"cardiac": .8, "renal": .4}, {"spo2": -3, "weight": 6}, ["chf", "fluid overload"], .5),
    ("Enlarged Cardiomediastinum", .04, {"cardiac": .5, "cardiometabolic": .4}, {"sbp": 10}, ["aortic aneurysm"], .4),
    ("Fracture", .03, {"neuro_bleed": .7}, {"hr": 5}, ["fall", "rib fracture", "osteoporosis"], .6),
    ("Lung Lesion", .04, {"pulmonary": .8}, {}, ["lung cancer", "lung nodule", "nsclc"], .7),
    ("Lung Opacity", .24, {"respiratory": .7, "infection": .5}, {"rr": 2, "spo2": -2}, ["pneumonia", "aspiration"], .3),
    ("No Finding", None, {}, {}, [], 0.0),  # 1 iff no finding among the pathologies
    ("Pleural Effusion", .24, {"cardiac": .5, "respiratory": .5, "hepatic": .3}, {"spo2": -2, "rr": 2}, ["effusion", "chf"], .4),
    ("Pleural Other", .01, {"pulmonary": .6}, {}, ["asbestos exposure", "pleural plaques"], .5),
    ("Pneumonia", .08, {"infection": .9, "respiratory": .5}, {"temp": .9, "rr": 4}, ["pneumonia", "pna"], .3),
    ("Pneumothorax", .04, {"pulmonary": .6, "respiratory": .5}, {"spo2": -4, "rr": 5}, ["copd", "emphysema"], .4),
    ("Support Devices", .30, {"respiratory": .8, "infection": .4}, {"fio2": .3, "gcs": -3}, ["intubated", "trach", "picc line"], .4),
]  # fmt: skip
FILLER = ["gerd", "anxiety", "depression", "bph", "osteoarthritis", "s p appendectomy", "hypothyroidism", "gout",
          "obesity", "former smoker", "chronic back pain", "glaucoma", "migraines", "s p cholecystectomy"]
SOCIAL = ["lives with wife", "lives alone", "retired", "no alcohol", "former smoker quit 10 years ago",
          "occasional alcohol", "lives with daughter", "denies drug use", "works as a teacher"]

# Vital and lab signals: (normal mean, between-patient sd, within-stay noise sd, low clip, high clip, decimals)
SIGNALS = {
    "hr": (86, 10, 6, 30, 200, 0), "sbp": (118, 12, 8, 50, 240, 0), "dbp": (59, 8, 6, 20, 150, 0),
    "mbp": (77, 8, 6, 30, 180, 0), "rr": (19, 3, 2.5, 5, 50, 0), "spo2": (97, 1.2, 1.2, 60, 100, 0),
    "temp": (36.8, .3, .3, 33, 42, 2), "glucose": (128, 20, 18, 30, 600, 0), "ph": (7.39, .03, .03, 6.8, 7.7, 2),
    "fio2": (.21, 0, .05, .21, 1.0, 2), "weight": (81, 15, .5, 35, 250, 1), "height": (170, 9, 0, 140, 205, 0),
}  # fmt: skip
CHANNEL_OF = {
    "hr": "Heart Rate", "sbp": "Systolic blood pressure", "dbp": "Diastolic blood pressure", "mbp": "Mean blood pressure",
    "rr": "Respiratory rate", "spo2": "Oxygen saturation", "temp": "Temperature", "glucose": "Glucose", "ph": "pH",
    "fio2": "Fraction inspired oxygen", "weight": "Weight", "height": "Height",
}  # fmt: skip
# Charting groups: mean hours between events, and the signals recorded together.
GROUPS = [(1.0, ["hr", "sbp", "dbp", "mbp", "rr", "spo2"]), (4.0, ["temp"]), (4.0, ["gcs"]), (6.0, ["glucose"]),
          (12.0, ["ph"]), (4.0, ["fio2"]), (8.0, ["crr"])]
# GCS spellings: CareVue (numbered, with a total) and MetaVision (words, no total).
GCS_EYE = {"carevue": ["1 No Response", "2 To pain", "3 To speech", "4 Spontaneously"], "metavision": ["None", "To Pain", "To Speech", "Spontaneously"]}
GCS_MOTOR = {"carevue": ["1 No Response", "2 Abnorm extensn", "3 Abnorm flexion", "4 Flex-withdraws", "5 Localizes Pain", "6 Obeys Commands"],
             "metavision": ["No response", "Abnormal extension", "Abnormal Flexion", "Flex-withdraws", "Localizes Pain", "Obeys Commands"]}
GCS_VERBAL = {"carevue": ["1 No Response", "2 Incomp sounds", "3 Inapprop words", "4 Confused", "5 Oriented"],
              "metavision": ["No Response", "Incomprehensible sounds", "Inappropriate Words", "Confused", "Oriented"]}
GCS_INTUBATED = {"carevue": "1.0 ET/Trach", "metavision": "No Response-ETT"}


@dataclass
class Generated:
    """What the generator wrote, kept in memory: the round-trip test compares the loaders against it."""

    label_names: list[str]
    splits: dict[str, pd.DataFrame]  # per listfile split ('train', 'val', 'test'): key, patient, series, end, note, labels
    events: pd.DataFrame  # long table: series (file name), Hours, the 17 channels as written
    # Per series file, the hours of its stay (a diagnosis task's studies read a file up to their own end,
    # each before the stay's): what the raw writer gives the ICU stay as its length.
    periods: dict[str, float] = field(default_factory=dict)
    # Per split, [n, C] bool rows aligned with ``splits``: the labels each note affirms as written (``_note``);
    # never written to disk, read by the under-coding evidence (``data.evidence``).
    mentioned: dict[str, np.ndarray] = field(default_factory=dict)


def _rng(spec, salt: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{STREAMS_VERSION}:{spec.name}:{spec.n_total}:{salt}".encode()))


def version(spec) -> str:
    """The generator version of ``spec``'s files: "3" where they are version 3's byte for byte (note_scale 0),
    else GENERATOR_VERSION."""
    return SHORT_NOTES_VERSION if spec.note_scale == 0 else GENERATOR_VERSION


def _assign_patients(rng, n: int) -> np.ndarray:
    """Patient index of each stay: about 1.3 stays per patient, sorted by patient."""
    per_patient = 1 + rng.poisson(0.3, size=n)
    return np.repeat(np.arange(n), per_patient)[:n]


def _labels(rng, table, factors: np.ndarray, target_cardinality: float, exclusive) -> np.ndarray:
    n = len(factors)
    loadings = np.zeros((len(table), len(FACTORS)))
    for j, row in enumerate(table):
        for f, w in row[2].items():
            loadings[j, FACTORS.index(f)] = w
    score = factors @ loadings.T + rng.normal(0, 0.7, size=(n, len(table)))
    prev = np.array([row[1] if row[1] is not None else 0.0 for row in table])
    derived = [j for j, row in enumerate(table) if row[1] is None]
    tiebreak = rng.random(n)

    def draw(scale: float) -> np.ndarray:
        p = np.clip(prev * scale, 0, 0.95)
        cut = np.array([np.quantile(score[:, j], 1 - p[j]) if p[j] > 0 else np.inf for j in range(len(table))])
        y = (score > cut).astype(np.uint8)
        for a, b in exclusive:  # nearly exclusive pairs keep the more likely label
            both = (y[:, a] == 1) & (y[:, b] == 1) & (tiebreak < 0.9)
            y[both, np.where(score[both, a] > score[both, b], b, a)] = 0
        for j in derived:  # "No Finding": none of the pathologies (support devices aside)
            others = [k for k in range(len(table)) if k not in derived and table[k][0] != "Support Devices"]
            y[:, j] = (y[:, others].sum(1) == 0).astype(np.uint8)
        return y

    lo, hi = 0.2, 4.0  # bisection on the prevalence scale so that the mean cardinality hits the target
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if draw(mid).sum(1).mean() < target_cardinality else (lo, mid)
    return draw((lo + hi) / 2)


def _note(rng, y: np.ndarray, table, max_mentions: int = 10, affirmed: list | None = None) -> tuple[str, str]:
    """The label-bearing part of a note, (history, social): the mentions of the stay's labels (with false,
    negated and family-history ones) and a few other conditions; ``note_lengths`` writes the note around it.
    ``affirmed``, when given, receives the labels (column indices) the note mentions affirmatively as
    written: the true mention of a positive, or the false mention of a negative, that survived the cut to
    ``max_mentions`` (negated and family-history mentions are not affirmations). Collecting it draws
    nothing more, so the text is the same either way."""
    phrases, origin = [], []
    for j, row in enumerate(table):
        terms, sensitivity = row[4], row[5]
        if not terms:
            continue
        if y[j] and rng.random() < sensitivity:
            phrases.append(terms[rng.integers(len(terms))])
            origin.append(j)
        elif not y[j]:
            u = rng.random()
            if u < 0.02:  # false mention
                phrases.append(terms[rng.integers(len(terms))])
                origin.append(j)
            elif u < 0.06:  # negated mention
                phrases.append(f"{['no history of', 'denies', 'no'][rng.integers(3)]} {terms[rng.integers(len(terms))]}")
                origin.append(-1)
            elif u < 0.08:  # family history distractor
                phrases.append(f"family history of {terms[rng.integers(len(terms))]}")
                origin.append(-1)
    order = list(range(len(phrases)))
    rng.shuffle(order)  # a list of the same length: the permutation shuffling ``phrases`` would apply
    phrases = [phrases[k] for k in order][:max_mentions]
    if affirmed is not None:
        affirmed.extend(origin[k] for k in order[:max_mentions] if origin[k] >= 0)
    phrases += list(rng.choice(FILLER, size=rng.integers(0, 4), replace=False))
    social = " ".join(rng.choice(SOCIAL, size=2, replace=False))
    return " ".join(phrases), social


def _events(rng, y: np.ndarray, table, los: np.ndarray, spelling: np.ndarray, patient_base: dict) -> pd.DataFrame:
    """Irregularly sampled events of every stay, vectorised per charting group."""
    n = len(los)
    shift = {s: np.zeros(n) for s in [*SIGNALS, "gcs", "hr_var"]}
    for j, row in enumerate(table):
        for s, v in row[3].items():
            shift[s] += y[:, j].astype(float) * v
    frames = []
    for interval, signals in GROUPS:
        rate = los / interval
        if signals == ["fio2"]:
            rate = rate * (shift["fio2"] > 0)  # oxygen only charted when supplemented
        m = rng.poisson(rate) + (interval <= 1.0)
        stay = np.repeat(np.arange(n), m)
        t = rng.uniform(0, 1, len(stay)) * los[stay]
        frame = {"stay": stay, "Hours": t}
        for s in signals:
            if s == "gcs":
                frame.update(_gcs(rng, stay, shift["gcs"], spelling))
            elif s == "crr":
                frame["Capillary refill rate"] = np.where(rng.random(len(stay)) < 0.1 + 0.2 * (shift["mbp"][stay] < 0), "1.0", "0.0")
            else:
                mean, _, noise, low, high, dec = SIGNALS[s]
                drift = (1 - t / np.maximum(los[stay], 1)) * shift[s][stay]  # acute shifts fade over the stay
                noise_sd = noise + (shift["hr_var"][stay] if s == "hr" else 0)
                v = patient_base[s][stay] + shift[s][stay] * 0.5 + drift * 0.5 + rng.normal(0, 1, len(stay)) * noise_sd
                v = np.round(np.clip(v, low, high), dec)
                text = np.char.mod(f"%.{dec}f" if dec else "%.0f", v).astype(object)
                text[rng.random(len(stay)) < 0.05] = ""  # an occasional missing value in the group
                frame[CHANNEL_OF[s]] = text
        frames.append(pd.DataFrame(frame))
    first = pd.DataFrame({"stay": np.arange(n), "Hours": np.zeros(n)})  # admission row: weight and height
    first["Weight"] = np.char.mod("%.1f", np.round(patient_base["weight"] + shift["weight"] * 0.5, 1)).astype(object)
    height = np.char.mod("%.0f", patient_base["height"]).astype(object)
    height[rng.random(n) < 0.4] = ""
    first["Height"] = height
    late = rng.random(n) < 0.05  # charting after the end of the stay: the discretiser drops it
    after = pd.DataFrame({"stay": np.flatnonzero(late), "Hours": los[late] + rng.uniform(0.5, 3, late.sum())})
    after["Heart Rate"] = np.char.mod("%.0f", patient_base["hr"][late]).astype(object)
    events = pd.concat([first, *frames, after], ignore_index=True)
    # Hours as written (4 decimals, about a third of a second), so that files round-trip exactly.
    events["Hours"] = np.char.mod("%.4f", events["Hours"].to_numpy()).astype(float)
    events = events.sort_values(["stay", "Hours"], kind="stable", ignore_index=True)
    for ch in CHANNELS:
        events[ch] = events[ch].fillna("") if ch in events else ""
    return events[["stay", "Hours", *CHANNELS]]


def _gcs(rng, stay: np.ndarray, drop: np.ndarray, spelling: np.ndarray) -> dict:
    severity = np.clip(-drop[stay] + rng.normal(0, 0.8, len(stay)), 0, 12)
    eye = np.clip(4 - np.round(severity / 3), 1, 4).astype(int)
    motor = np.clip(6 - np.round(severity / 2.4), 1, 6).astype(int)
    verbal = np.clip(5 - np.round(severity / 2.2), 1, 5).astype(int)
    intubated = (drop[stay] <= -2) & (rng.random(len(stay)) < 0.6)
    out = {k: np.empty(len(stay), dtype=object) for k in ("eye", "motor", "verbal", "total")}
    for system in ("carevue", "metavision"):
        sel = spelling[stay] == system
        out["eye"][sel] = np.array(GCS_EYE[system], dtype=object)[eye[sel] - 1]
        out["motor"][sel] = np.array(GCS_MOTOR[system], dtype=object)[motor[sel] - 1]
        out["verbal"][sel] = np.array(GCS_VERBAL[system], dtype=object)[verbal[sel] - 1]
        out["verbal"][sel & intubated] = GCS_INTUBATED[system]
        out["total"][sel] = np.char.mod("%d", eye[sel] + motor[sel] + np.where(intubated[sel], 1, verbal[sel])).astype(object) if system == "carevue" else ""
    return {"Glascow coma scale eye opening": out["eye"], "Glascow coma scale motor response": out["motor"],
            "Glascow coma scale verbal response": out["verbal"], "Glascow coma scale total": out["total"]}


@dataclass
class Cohort:
    patient: np.ndarray  # [N] patient index, sorted
    labels: np.ndarray  # [N, C] clean labels
    has_ehr: np.ndarray  # [N] bool
    has_note: np.ndarray  # [N] bool


def cohort(spec) -> Cohort:
    """Patients, clean labels and which modalities each sample has: the part the dataset table checks."""
    rng = _rng(spec, "labels")
    n = spec.n_total
    table = _table(spec.kind)
    names = [row[0] for row in table]
    exclusive = [(names.index(a), names.index(b)) for a, b in PHENOTYPE_EXCLUSIVE] if spec.kind == "phenotyping" else []
    patient = _assign_patients(rng, n)
    chronic = rng.normal(size=(patient.max() + 1, CHRONIC_FACTORS))[patient]
    acute = rng.normal(size=(n, len(FACTORS) - CHRONIC_FACTORS)) * 0.9 + chronic[:, :1] * 0.3
    y = _labels(rng, table, np.concatenate([chronic, acute], 1), spec.cardinality, exclusive)
    rng = _rng(spec, "modalities")
    return Cohort(patient, y, rng.random(n) >= spec.missing_ehr, rng.random(n) >= spec.missing_note)


def generate(spec) -> Generated:
    """The task in memory, exactly as ``write`` puts it on disk."""
    c = cohort(spec)
    patient, y, has_ehr, has_note = c.patient, c.labels, c.has_ehr, c.has_note
    n, n_patients = spec.n_total, patient.max() + 1
    table = _table(spec.kind)
    rng = _rng(spec, "notes")
    mentioned = np.zeros(y.shape, dtype=bool)
    parts = []
    for i in range(n):
        affirmed: list[int] = []
        parts.append(_note(rng, y[i], table, affirmed=affirmed) if has_note[i] else None)
        mentioned[i, affirmed] = True
    notes = note_lengths.write_notes(parts, spec.layout, spec.note_scale, _rng(spec, "note_lengths"))

    # Diagnosis samples are chest X-ray studies: those with a time series share their ICU stay's file
    # (consecutive studies of one patient), each read up to its own study time.
    new_stay = rng.random(n) < 0.6
    stay_of, current, last_patient = np.full(n, -1), -1, -1
    for i in np.flatnonzero(has_ehr):
        if spec.kind == "phenotyping" or new_stay[i] or patient[i] != last_patient:
            current += 1
        stay_of[i], last_patient = current, patient[i]
    stays = np.arange(current + 1)
    rep = np.unique(stay_of[has_ehr], return_index=True)[1]
    rep = np.flatnonzero(has_ehr)[rep]
    rng = _rng(spec, "series")
    los = np.clip(rng.lognormal(np.log(45), 0.8, size=len(stays)), 6, 24 * 30)
    spelling = np.where(rng.random(len(stays)) < 0.5, "carevue", "metavision")
    base = {s: rng.normal(SIGNALS[s][0], SIGNALS[s][1], n_patients)[patient[rep]] for s in SIGNALS}
    events = _events(rng, y[rep], table, los, spelling, base)
    episode, counts = {}, {}
    for k in stays:  # episode k of a patient = the patient's k-th stay
        p = int(patient[rep[k]])
        counts[p] = counts.get(p, 0) + 1
        episode[k] = f"{10_000_000 + p}_episode{counts[p]}_timeseries.csv"
    events["series"] = [episode[k] for k in events["stay"].to_numpy()]
    end = np.empty(n)
    for i in range(n):
        if has_ehr[i]:
            L = los[stay_of[i]]
            end[i] = L if spec.kind == "phenotyping" else np.round(rng.uniform(4.0, L), 6)
        else:
            end[i] = np.round(rng.uniform(6, 200), 6) if spec.kind == "phenotyping" else 0.0
    end = np.round(end, 6)
    series = [episode[stay_of[i]] if has_ehr[i] else "" for i in range(n)]

    # Patient-level split.
    rng = _rng(spec, "split")
    part = rng.choice(3, size=n_patients, p=[0.7, 0.1, 0.2])[patient]  # 0 train, 1 val, 2 test
    if spec.layout != "mimic4":
        part = np.where(part == 1, 0, part)
    key_base = 30_000_000 if spec.kind == "phenotyping" else 50_000_000
    frame = pd.DataFrame({"key": [str(key_base + i) for i in range(n)], "patient": 10_000_000 + patient,
                          "series": series, "end": end, "note": notes})
    names = [row[0] for row in table]
    frame = pd.concat([frame, pd.DataFrame(y, columns=names)], axis=1)
    splits = {name: frame[part == k].reset_index(drop=True) for k, name in enumerate(["train", "val", "test"]) if (part == k).any()}
    affirmed = {name: mentioned[part == k] for name in splits for k in [["train", "val", "test"].index(name)]}
    return Generated(label_names=names, splits=splits, events=events.drop(columns="stay"),
                     periods={episode[k]: float(los[k]) for k in stays}, mentioned=affirmed)


def _label_text(y: np.ndarray, rng, diagnosis: bool) -> np.ndarray:
    """Listfile label cells: '1'/'0' for phenotypes; CheXpert style for diagnosis (negatives are mostly
    blank, some '0.0', a few '-1.0' uncertain), so the default policy maps them back to the clean 0."""
    if not diagnosis:
        return np.where(y == 1, "1", "0").astype(object)
    u = rng.random(y.shape)
    neg = np.where(u < 0.7, "", np.where(u < 0.95, "0.0", "-1.0"))
    return np.where(y == 1, "1.0", neg).astype(object)


def label_cells(gen: Generated, spec) -> dict[str, pd.DataFrame]:
    """Per split, the label cells of its listfile rows as ``write`` writes them (seeded by the spec)."""
    rng = _rng(spec, "listfile")
    return {split: pd.DataFrame(_label_text(df[gen.label_names].to_numpy(), rng, spec.kind == "diagnosis"),
                                columns=gen.label_names) for split, df in gen.splits.items()}


def write(gen: Generated, spec, root: Path) -> None:
    """Write the layout of ``spec.layout`` under ``root``."""
    root = Path(root)
    ehr_dir = root / "ehr"
    ehr_dir.mkdir(parents=True, exist_ok=True)
    _write_episodes(gen.events, ehr_dir)
    task_dir = root / spec.task_dir
    task_dir.mkdir(parents=True, exist_ok=True)
    cells = label_cells(gen, spec)
    for split, df in gen.splits.items():
        labels = cells[split]
        ends = np.char.mod("%.6f", df["end"].to_numpy())
        if spec.layout == "mimic4":
            key, end = ("stay_id", "period_length") if spec.kind == "phenotyping" else ("study_id", "period_len")
            out = pd.DataFrame({"subject_id": df["patient"], key: df["key"], "time_series": df["series"], end: ends,
                                "past_medical_history": df["note"]})
            name = f"{split}_multimodal_listfile.csv"
        else:
            out = pd.DataFrame({"patient_id": df["patient"], "stay_id": df["key"], "stay": df["series"],
                                "period_length": ends, "notes": df["note"]})
            name = f"{split}_multimodal_listfile.csv"
        pd.concat([out, labels], axis=1).to_csv(task_dir / name, index=False)


def _write_episodes(events: pd.DataFrame, ehr_dir: Path) -> None:
    """One CSV per stay, formatted in one pass and split by stay."""
    events = events.sort_values("series", kind="stable")
    body = events[EPISODE_HEADER].to_csv(index=False, header=False, float_format="%.4f", lineterminator="\n")
    lines = body.split("\n")
    header = ",".join(EPISODE_HEADER) + "\n"
    series = events["series"].to_numpy()
    bounds = np.flatnonzero(np.append(series[1:] != series[:-1], True)) + 1
    start = 0
    for stop in bounds:
        (ehr_dir / series[start]).write_text(header + "\n".join(lines[start:stop]) + "\n")
        start = stop


def _table(kind: str) -> list[tuple]:
    """The model's rows in the column order of the kind's task cards; every card label must be modelled."""
    model = {row[0]: row for row in (PHENOTYPES if kind == "phenotyping" else DIAGNOSES)}
    names = cards.label_names(kind)
    unknown = [name for name in names if name not in model]
    if unknown:
        raise UsageError(f"the task cards of kind '{kind}' list label {unknown[0]!r}, which the synthetic generator "
                         f"does not model (it models: {', '.join(model)})")
    if len(names) != len(model):
        left_out = next(name for name in model if name not in names)
        raise UsageError(f"the task cards of kind '{kind}' leave out label {left_out!r}, which the synthetic "
                         f"generator models")
    return [model[name] for name in names]
