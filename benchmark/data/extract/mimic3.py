"""``ehrbench data build mimic3``: the MIMIC-III 1.4 CSVs -> the MIRACL MIMIC-III phenotyping layout.

The steps, each resumable (``steps``): ``stays`` (the cohort), ``phenotypes`` (labels from the
diagnoses), ``chartevents`` and ``labevents`` (validated, cleaned events in stay buckets),
``episodes`` (the ``ehr/`` series), ``notes`` and ``listfiles`` (``phenotyping/``). Every table and
column the build needs is checked before the first step, so a missing one fails in the first second.
The out folder then holds ``ehr/``, ``phenotyping/``, ``attrition.csv``, ``summary.json`` and the
steps' own outputs under ``.steps/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...cards import label_names
from ...errors import UsageError
from . import cohort, dates, events, listfiles, notes, phenotypes, summary, tables
from .shared_steps import buckets_for, dates_read, parse_times, run_episodes, run_events
from .shared_steps import stays as _stays
from .steps import Context, Step, run_steps, write_csv

# The pipeline's version: bumped when a change alters what a build writes, so that finished steps and
# the demo track's cached build are redone rather than reused.
VERSION = "2"
REQUIRED = {
    "PATIENTS": cohort.PATIENTS, "ADMISSIONS": cohort.ADMISSIONS, "ICUSTAYS": cohort.ICUSTAYS,
    "DIAGNOSES_ICD": phenotypes.DIAGNOSES, "D_ICD_DIAGNOSES": phenotypes.DICTIONARY, **events.COLUMNS,
}
OPTIONAL = {"NOTEEVENTS": notes.NOTEEVENTS}


@dataclass(frozen=True)
class Options:
    first_admission_only: bool = False  # reproduce the reference's notes bug (notes.py)
    ranges: bool = True  # clean by variable_ranges.csv (variables.py)
    code_dictionary: bool = True  # only diagnosis codes listed in D_ICD_DIAGNOSES count, as in the reference (phenotypes.py)
    buckets: int | None = None  # stay buckets of the event files; None: from the size of CHARTEVENTS
    testset: str | None = None  # test subjects file (listfiles.py); None: the packaged testset.csv


def testset_option(path: str | None) -> dict | None:
    """The test set as the listfiles step's option: its path and content digest, so that a changed
    file re-runs the step; checked before the first step."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: test set file cannot be read ({e.strerror}); expected lines 'SUBJECT_ID,0|1'") from None
    listfiles.test_subjects(path)  # a malformed file fails now, not after the event steps
    return {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(data).hexdigest()}


def open_tables(raw: Path) -> dict[str, tables.Table]:
    if (raw / "hosp").is_dir() and tables.find(raw, "ADMISSIONS") is None:  # a database of the other kind, named
        raise UsageError(f"{raw}: this looks like MIMIC-IV (a hosp/ folder, no ADMISSIONS table beside it); "
                         f"build it with `ehrbench data build mimic4 --raw {raw}`")
    found = {name: tables.open_table(raw, name, cols) for name, cols in REQUIRED.items()}
    for name, cols in OPTIONAL.items():
        if tables.find(raw, name) is not None:
            found[name] = tables.open_table(raw, name, cols)
    return found


def _run_stays(ctx: Context, tmp: Path):
    str_cols = {"FIRST_CAREUNIT": str, "LAST_CAREUNIT": str, "INTIME": str, "OUTTIME": str}
    icu = tables.read(ctx.tables["ICUSTAYS"], {"SUBJECT_ID": "int64", "HADM_ID": "int64", "ICUSTAY_ID": "int64",
                                                "FIRST_WARDID": "float64", "LAST_WARDID": "float64", "LOS": "float64",
                                                **str_cols})
    adm = tables.read(ctx.tables["ADMISSIONS"], {"SUBJECT_ID": "int64", "HADM_ID": "int64",
                                                  **dates_read(ctx.tables["ADMISSIONS"], dates.ADMISSION_TIMES)})
    pat = tables.read(ctx.tables["PATIENTS"], {"SUBJECT_ID": "int64", "DOB": str,
                                                **dates_read(ctx.tables["PATIENTS"], (dates.DEATH_DAY,))})
    parse_times(icu, ctx.tables["ICUSTAYS"], ("INTIME", "OUTTIME"))
    parse_times(adm, ctx.tables["ADMISSIONS"], dates.ADMISSION_TIMES)
    parse_times(pat, ctx.tables["PATIENTS"], ("DOB", dates.DEATH_DAY))
    stays, att = cohort.select(icu, adm, pat)
    write_csv(stays, tmp / "stays.csv", date_format="%Y-%m-%d %H:%M:%S")
    counts = {"PATIENTS": len(pat), "ADMISSIONS": len(adm), "ICUSTAYS": len(icu),
              "lower_case_headers": all(c == c.lower() for c in ctx.tables["PATIENTS"].header.values())}
    (tmp / "tables.json").write_text(json.dumps(counts) + "\n")
    ctx.log(f"      {len(icu):,} ICU stays read, {len(stays):,} in the cohort ({stays['SUBJECT_ID'].nunique():,} subjects)")
    return att


def _run_phenotypes(ctx: Context, tmp: Path):
    diagnoses = tables.read(ctx.tables["DIAGNOSES_ICD"], {"SUBJECT_ID": "int64", "HADM_ID": "int64", "ICD9_CODE": str})
    diagnoses = diagnoses.rename(columns={"ICD9_CODE": "CODE"})
    dictionary = (tables.read(ctx.tables["D_ICD_DIAGNOSES"], {"ICD9_CODE": str})["ICD9_CODE"]
                  if ctx.options["code_dictionary"] else None)
    labels, att = phenotypes.labels(_stays(ctx), diagnoses, label_names("phenotyping"), dictionary)
    write_csv(labels, tmp / "labels.csv")
    ctx.log(f"      {len(diagnoses):,} diagnosis rows, {labels.iloc[:, 1:].to_numpy().sum(axis=1).mean():.3f} labels per stay")
    return att


def _run_notes(ctx: Context, tmp: Path):
    table = ctx.tables.get("NOTEEVENTS")
    text, att = notes.extract(table, _stays(ctx), ctx.options["first_admission_only"], ctx.log)
    write_csv(text, tmp / "notes.csv")
    ctx.log(f"      {int((text['notes'] != '').sum()):,} of {len(text):,} cohort stays have a note")
    return att


def _run_listfiles(ctx: Context, tmp: Path):
    def read(step: str, name: str) -> pd.DataFrame:
        return pd.read_csv(ctx.step_dir(step) / name, keep_default_na=False)  # an empty note is '', not NaN

    testset = ctx.options.get("testset")
    parts = listfiles.assemble(read("episodes", "episodes.csv"), read("phenotypes", "labels.csv"),
                               read("notes", "notes.csv"), label_names("phenotyping"),
                               listfiles.test_subjects(testset["path"]) if testset else None)
    return listfiles.write(parts, tmp / "phenotyping")


def steps(has_notes: bool) -> list[Step]:
    return [dataclasses.replace(step, version=VERSION) for step in _steps(has_notes)]


def _steps(has_notes: bool) -> list[Step]:
    return [
        Step("stays", _run_stays, tables=("ICUSTAYS", "ADMISSIONS", "PATIENTS")),
        Step("phenotypes", _run_phenotypes, tables=("DIAGNOSES_ICD", "D_ICD_DIAGNOSES"), options=("code_dictionary",),
             after=("stays",)),
        Step("chartevents", run_events("CHARTEVENTS"), tables=("CHARTEVENTS",), options=("buckets", "ranges"),
             after=("stays",)),
        Step("labevents", run_events("LABEVENTS"), tables=("LABEVENTS",), options=("buckets", "ranges"),
             after=("stays",)),
        Step("episodes", run_episodes, options=("buckets",), after=("stays", "chartevents", "labevents"),
             publish=("ehr",)),
        Step("notes", _run_notes, tables=("NOTEEVENTS",) if has_notes else (), options=("first_admission_only",),
             after=("stays",)),
        Step("listfiles", _run_listfiles, options=("testset",), after=("episodes", "phenotypes", "notes"),
             publish=("phenotyping",)),
    ]


def build(raw: str | Path, out: str | Path, options: Options = Options(), log=None) -> dict:
    """Build (or finish building) the task files of ``raw`` under ``out``; the summary."""
    raw, out = Path(raw), Path(out)
    found = open_tables(raw)
    opts = {"first_admission_only": options.first_admission_only, "ranges": options.ranges,
            "code_dictionary": options.code_dictionary, "buckets": options.buckets or buckets_for(found["CHARTEVENTS"]),
            "testset": testset_option(options.testset)}
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(raw=raw, out=out, options=opts, tables=found, **({"log": log} if log else {}))
    attrition, seconds = run_steps(steps("NOTEEVENTS" in found), ctx)
    write_csv(attrition, out / "attrition.csv")
    result = summary.summarise(ctx, attrition, seconds)
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "summary.json")
    return result
