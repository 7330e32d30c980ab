"""DIAGNOSES_ICD and D_ICD_DIAGNOSES: each positive phenotype of a stay as an ICD-9 code of its CCS group.

A stay positive for one of the 25 groups gets one code of that group's HCUP CCS 2015 definition
(``hcup_ccs_2015_definitions.yaml``, the file the build labels from), drawn at random, on its
admission; a negative one gets none of the group's codes. Codes of the groups outside the benchmark
fill each admission up to its number of diagnoses (MIMIC-III: ~11 per admission). D_ICD_DIAGNOSES
lists every code of the definitions except the category codes without a fifth digit that MIMIC-III's
dictionary lacks (``NOT_IN_DICTIONARY``): a stay negative for that code's group sometimes carries one,
which the build must ignore, as the reference's join does (unless ``--all-diagnosis-codes``).
Diagnoses of the distractor stays' admissions must leave with their stays.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..extract import phenotypes
from . import schema
from .charting import Dropped

NOT_IN_DICTIONARY = {"Chronic kidney disease": "585", "Respiratory failure; insufficiency; arrest (adult)": "5185"}
UNDICTIONARIED_SHARE = 0.05  # negative stays carrying the group's category code


def _groups() -> tuple[dict[str, list[str]], list[str]]:
    import yaml

    from importlib import resources

    text = resources.files("benchmark.data").joinpath("resources/hcup_ccs_2015_definitions.yaml").read_text()
    everything = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    bench = phenotypes.definitions()
    others = sorted({str(c) for name, g in everything.items() if name not in bench for c in g["codes"]})
    return bench, others


def rows(labels: np.ndarray, label_names: list[str], hadm: np.ndarray, subject: np.ndarray,
         other_hadm: np.ndarray, other_subject: np.ndarray, per_admission: float, rng,
         dropped: Dropped) -> pd.DataFrame:
    """DIAGNOSES_ICD of the cohort's admissions (``labels``: stays x 25) and the distractors' (``other_*``)."""
    bench, others = _groups()
    codes, owner = [], []
    for j, name in enumerate(label_names):
        pool = [c for c in bench[name] if c != NOT_IN_DICTIONARY.get(name)]
        pos = np.flatnonzero(labels[:, j] == 1)
        codes.append(np.array(pool, dtype=object)[rng.integers(0, len(pool), len(pos))])
        owner.append(pos)
        if name in NOT_IN_DICTIONARY:  # the code the dictionary lacks, on some negative stays
            neg = np.flatnonzero((labels[:, j] == 0) & (rng.random(len(labels)) < UNDICTIONARIED_SHARE))
            codes.append(np.full(len(neg), NOT_IN_DICTIONARY[name], dtype=object))
            owner.append(neg)
            dropped.add("code_dictionary", len(neg))
    positives = np.bincount(np.concatenate(owner), minlength=len(labels))
    fill = np.maximum(rng.poisson(per_admission, len(labels)) - positives, 0)
    owner.append(np.repeat(np.arange(len(labels)), fill))
    codes.append(np.array(others, dtype=object)[rng.integers(0, len(others), fill.sum())])
    dropped.add("benchmark_codes", fill.sum())
    owner, codes = np.concatenate(owner), np.concatenate(codes)
    theirs = rng.poisson(per_admission, len(other_hadm)) + 1  # benchmark codes among them: they must not count
    anything = np.array(others + sorted(c for cs in bench.values() for c in cs), dtype=object)
    dropped.add("cohort_diagnoses", theirs.sum())
    frame = pd.DataFrame({
        "SUBJECT_ID": np.r_[subject[owner], np.repeat(other_subject, theirs)],
        "HADM_ID": np.r_[hadm[owner], np.repeat(other_hadm, theirs)],
        "ICD9_CODE": np.r_[codes, anything[rng.integers(0, len(anything), theirs.sum())]],
    })
    frame = frame.iloc[rng.permutation(len(frame))].sort_values("HADM_ID", kind="stable")
    frame["SEQ_NUM"] = frame.groupby("HADM_ID").cumcount() + 1
    return frame


def dictionary() -> pd.DataFrame:
    """D_ICD_DIAGNOSES: every code of the CCS definitions but the ones MIMIC-III's dictionary lacks."""
    bench, others = _groups()
    title = {c: name for name, cs in bench.items() for c in cs}
    codes = sorted(set(others) | set(title) - set(NOT_IN_DICTIONARY.values()))
    names = [title.get(c, "Other condition") for c in codes]
    return pd.DataFrame({"ICD9_CODE": codes, "SHORT_TITLE": [n[:24] for n in names], "LONG_TITLE": names})


def write(folder, frame: pd.DataFrame) -> dict[str, int]:
    return {"DIAGNOSES_ICD": schema.write(folder, "DIAGNOSES_ICD", frame),
            "D_ICD_DIAGNOSES": schema.write(folder, "D_ICD_DIAGNOSES", dictionary())}
