"""DIAGNOSES_ICD and D_ICD_DIAGNOSES: each positive phenotype of a stay as an ICD-9 (MIMIC-IV: or ICD-10)
code of its CCS group.

A stay positive for one of the 25 groups gets one code of that group's HCUP CCS 2015 definition
(``hcup_ccs_2015_definitions.yaml``, the file the build labels from), drawn at random, on its
admission; a negative one gets none of the group's codes. Codes of the groups outside the benchmark
fill each admission up to its number of diagnoses (MIMIC-III: ~11 per admission). D_ICD_DIAGNOSES
lists every code of the definitions except the category codes without a fifth digit that MIMIC-III's
dictionary lacks (``NOT_IN_DICTIONARY``): a stay negative for that code's group sometimes carries one,
which the build must ignore, as the reference's join does (unless ``--all-diagnosis-codes``).
Diagnoses of the distractor stays' admissions must leave with their stays.

MIMIC-IV codes an admission in ICD-9-CM or in ICD-10-CM (``icd_version``); here half the admissions
are of each. An ICD-10 admission's positive phenotype is a code whose groups, through the same route
the build labels by (``extract/icd10``: the CMS GEM to ICD-9-CM, then the CCS definitions), are that
one benchmark group and no other; its filler codes reach no benchmark group (``icd10_codes``, over the
whole GEM: every one of the 25 groups has such codes, from 1 for essential hypertension to 846). MIMIC-IV's
d_icd_diagnoses lists every code DIAGNOSES_ICD uses but the same planted ICD-9 category codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ..extract import icd10, phenotypes
from . import schema
from .charting import Dropped

NOT_IN_DICTIONARY = {"Chronic kidney disease": "585", "Respiratory failure; insufficiency; arrest (adult)": "5185"}
UNDICTIONARIED_SHARE = 0.05  # negative stays carrying the group's category code


@dataclass(frozen=True)
class Codes:
    """The codes of one ICD version: per benchmark group the codes that label it alone, the codes that
    label none, and per group a code the dictionary lacks (planted on negative stays)."""

    bench: dict[str, list[str]]
    others: list[str]
    not_in_dictionary: dict[str, str]


@lru_cache(maxsize=1)
def icd9_codes() -> Codes:
    import yaml

    from importlib import resources

    text = resources.files("benchmark.data").joinpath("resources/hcup_ccs_2015_definitions.yaml").read_text()
    everything = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    bench = phenotypes.definitions()
    others = sorted({str(c) for name, g in everything.items() if name not in bench for c in g["codes"]})
    return Codes(bench, others, NOT_IN_DICTIONARY)


@lru_cache(maxsize=1)
def icd10_codes() -> Codes:
    """ICD-10-CM codes of the GEM by the benchmark groups the build gives them (``extract/icd10.groups``)."""
    found = icd10.groups(icd10.gem()["ICD10"])
    names = set(phenotypes.definitions())
    ours = found[found["GROUP"].isin(names)]
    alone = ours.groupby("ICD10")["GROUP"].transform("nunique") == 1
    bench = {name: sorted(codes) for name, codes in ours[alone.to_numpy()].groupby("GROUP")["ICD10"]}
    others = sorted(set(found["ICD10"]) - set(ours["ICD10"]))
    missing = names - set(bench)
    if missing:  # the route gives every benchmark group an ICD-10 code of its own; guards an edited definitions file
        raise ValueError(f"no ICD-10-CM code reaches only the benchmark group {sorted(missing)[0]!r}")
    return Codes(bench, others, {})


def rows(labels: np.ndarray, label_names: list[str], hadm: np.ndarray, subject: np.ndarray,
         other_hadm: np.ndarray, other_subject: np.ndarray, per_admission: float, rng,
         dropped: Dropped, codes_of: Codes | None = None, column: str = "ICD9_CODE") -> pd.DataFrame:
    """DIAGNOSES_ICD of the cohort's admissions (``labels``: stays x 25) and the distractors' (``other_*``),
    in the codes of ``codes_of`` (ICD-9 by default), the code in ``column``."""
    found = codes_of or icd9_codes()
    bench, others = found.bench, found.others
    codes, owner = [], []
    for j, name in enumerate(label_names):
        pool = [c for c in bench[name] if c != found.not_in_dictionary.get(name)]
        pos = np.flatnonzero(labels[:, j] == 1)
        codes.append(np.array(pool, dtype=object)[rng.integers(0, len(pool), len(pos))])
        owner.append(pos)
        if name in found.not_in_dictionary:  # the code the dictionary lacks, on some negative stays
            neg = np.flatnonzero((labels[:, j] == 0) & (rng.random(len(labels)) < UNDICTIONARIED_SHARE))
            codes.append(np.full(len(neg), found.not_in_dictionary[name], dtype=object))
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
        column: np.r_[codes, anything[rng.integers(0, len(anything), theirs.sum())]],
    })
    frame = frame.iloc[rng.permutation(len(frame))].sort_values("HADM_ID", kind="stable")
    frame["SEQ_NUM"] = frame.groupby("HADM_ID").cumcount() + 1
    return frame


def dictionary() -> pd.DataFrame:
    """D_ICD_DIAGNOSES: every code of the CCS definitions but the ones MIMIC-III's dictionary lacks."""
    bench, others = icd9_codes().bench, icd9_codes().others
    title = {c: name for name, cs in bench.items() for c in cs}
    codes = sorted(set(others) | set(title) - set(NOT_IN_DICTIONARY.values()))
    names = [title.get(c, "Other condition") for c in codes]
    return pd.DataFrame({"ICD9_CODE": codes, "SHORT_TITLE": [n[:24] for n in names], "LONG_TITLE": names})


def write(folder, frame: pd.DataFrame) -> dict[str, int]:
    return {"DIAGNOSES_ICD": schema.write(folder, "DIAGNOSES_ICD", frame),
            "D_ICD_DIAGNOSES": schema.write(folder, "D_ICD_DIAGNOSES", dictionary())}


def rows_mimic4(labels: np.ndarray, label_names: list[str], hadm: np.ndarray, subject: np.ndarray,
                other_hadm: np.ndarray, other_subject: np.ndarray, per_admission: float, rng,
                dropped: Dropped) -> pd.DataFrame:
    """MIMIC-IV's diagnoses_icd: half the admissions (cohort's and distractors' alike) in ICD-10-CM."""
    ten, other_ten = rng.random(len(hadm)) < 0.5, rng.random(len(other_hadm)) < 0.5
    parts = []
    for version, mine, theirs, codes_of in ((9, ~ten, ~other_ten, icd9_codes()), (10, ten, other_ten, icd10_codes())):
        part = rows(labels[mine], label_names, hadm[mine], subject[mine], other_hadm[theirs], other_subject[theirs],
                    per_admission, rng, dropped, codes_of, "icd_code")
        parts.append(part.assign(icd_version=version))
    frame = pd.concat(parts, ignore_index=True).sort_values("HADM_ID", kind="stable")
    frame["seq_num"] = frame.groupby("HADM_ID").cumcount() + 1
    return frame.rename(columns={"SUBJECT_ID": "subject_id", "HADM_ID": "hadm_id"}).drop(columns="SEQ_NUM")


def write_mimic4(folder, frame: pd.DataFrame) -> dict[str, int]:
    """diagnoses_icd, and d_icd_diagnoses listing every code it uses but the planted ICD-9 category codes."""
    used = frame[["icd_code", "icd_version"]].drop_duplicates()
    planted = (used["icd_version"] == 9) & used["icd_code"].isin(NOT_IN_DICTIONARY.values())
    titles = used[~planted.to_numpy()].sort_values(["icd_version", "icd_code"]).assign(long_title="Synthetic condition")
    return {"diagnoses_icd": schema.write(folder, "diagnoses_icd", frame, "mimic4"),
            "d_icd_diagnoses": schema.write(folder, "d_icd_diagnoses", titles, "mimic4")}
