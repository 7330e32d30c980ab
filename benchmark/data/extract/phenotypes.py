"""The 25 phenotype labels: the HCUP CCS 2015 groups of a stay's ICD-9 diagnosis codes.

``hcup_ccs_2015_definitions.yaml`` (mimic3-benchmarks) lists the ICD-9 codes of every CCS group and
whether it is one of the benchmark's 25 (``use_in_benchmark``). A stay is positive for a group when any
diagnosis code of its admission (DIAGNOSES_ICD, codes without dots, leading zeros kept) is one of the
group's codes; a stay whose admission has no such code is negative for it.

Named switch ``code_dictionary`` (on by default, as the reference): only codes listed in D_ICD_DIAGNOSES
count. The reference joins the diagnoses with that dictionary (inner join) to get their titles, which
drops the codes it does not list: MIMIC-III's DIAGNOSES_ICD holds some category codes without their
fifth digit (e.g. 2765, 585, 5185) that D_ICD_DIAGNOSES lacks. Off, every code counts.
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import yaml

from .steps import Attrition

DIAGNOSES = ("SUBJECT_ID", "HADM_ID", "ICD9_CODE")
DICTIONARY = ("ICD9_CODE",)  # D_ICD_DIAGNOSES
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def definitions(every_group: bool = False) -> dict[str, list[str]]:
    """The benchmark's groups (or all 283 CCS groups): name -> ICD-9 codes."""
    text = resources.files("benchmark.data").joinpath("resources/hcup_ccs_2015_definitions.yaml").read_text()
    groups = yaml.load(text, Loader=_LOADER)
    return {name: [str(c) for c in g["codes"]] for name, g in groups.items() if every_group or g.get("use_in_benchmark")}


def code_table(label_names: list[str]) -> pd.Series:
    """ICD-9 code -> label column index, for the codes of the 25 groups."""
    groups = definitions()
    if sorted(groups) != sorted(label_names):  # the card's label names are the CCS group names
        raise ValueError(f"CCS benchmark groups {sorted(set(groups) ^ set(label_names))} differ from the card's labels")
    pairs = [(code, label_names.index(name)) for name, codes in groups.items() for code in codes]
    table = pd.Series(dict(pairs), dtype=np.int64)
    return table[~table.index.duplicated()]


def icd9_pairs(label_names: list[str]) -> pd.DataFrame:
    """CODE (an ICD-9 code) -> COLUMN (its label's index), one row per code."""
    table = code_table(label_names)
    return pd.DataFrame({"CODE": table.index.to_numpy(), "COLUMN": table.to_numpy()})


def labels(stays: pd.DataFrame, diagnoses: pd.DataFrame, label_names: list[str],
           dictionary: pd.Series | None = None, pairs: pd.DataFrame | None = None,
           benchmark_reason: str = "code in none of the 25 benchmark CCS groups (or empty)") -> tuple[pd.DataFrame, Attrition]:
    """Per cohort stay (ICUSTAY_ID), the 25 labels as 0/1 columns named as the card names them; with
    ``dictionary`` (D_ICD_DIAGNOSES' codes), only the codes it lists count.

    ``diagnoses`` has SUBJECT_ID, HADM_ID and CODE; ``pairs`` maps CODE to label COLUMNs (ICD-9 codes by
    default; a code may have several rows, as an ICD-10 code whose GEM targets fall in several groups)."""
    pairs = icd9_pairs(label_names) if pairs is None else pairs
    att = Attrition()
    att.add("diagnoses", len(diagnoses), 0, "rows of DIAGNOSES_ICD", "diagnoses")
    keyed = diagnoses.merge(stays[["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID"]], on=["SUBJECT_ID", "HADM_ID"], how="inner")
    att.add("cohort_diagnoses", len(keyed), len(diagnoses) - len(keyed), "admission is not a cohort stay's", "diagnoses")
    if dictionary is not None:
        listed = keyed["CODE"].isin(dictionary)
        att.add("code_dictionary", int(listed.sum()), int((~listed).sum()),
                "code not in D_ICD_DIAGNOSES (dropped by the reference's join; --all-diagnosis-codes keeps it)",
                "diagnoses")
        keyed = keyed[listed.to_numpy()]
    rows = pd.DataFrame({"ROW": np.arange(len(keyed)), "CODE": keyed["CODE"].str.strip().to_numpy()})
    hits = rows.merge(pairs, on="CODE", how="inner")  # one row per (diagnosis, group): vectorised, no loop
    mapped = int(hits["ROW"].nunique())
    att.add("benchmark_codes", mapped, len(keyed) - mapped, benchmark_reason, "diagnoses")
    matrix = np.zeros((len(stays), len(label_names)), dtype=np.uint8)
    stay_row = pd.Index(stays["ICUSTAY_ID"]).get_indexer(keyed["ICUSTAY_ID"])
    matrix[stay_row[hits["ROW"].to_numpy()], hits["COLUMN"].to_numpy().astype(np.int64)] = 1
    out = pd.DataFrame(matrix, columns=label_names)
    out.insert(0, "ICUSTAY_ID", stays["ICUSTAY_ID"].to_numpy())
    return out, att
