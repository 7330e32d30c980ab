"""``ehrbench data build mimic4``: MIMIC-IV (2.0-3.1) + MIMIC-IV-Note + MIMIC-CXR-JPG -> the
FlexCare/MIRACL MIMIC-IV layout of the ``mimic4-phe`` and ``mimic4-dia`` tasks.

The steps, each resumable (``steps``), most shared with the MIMIC-III build: ``stays`` (the cohort,
``cohort.MIMIC4`` rules), ``phenotypes`` (ICD-9 and ICD-10 codes to the 25 groups, ``icd10``),
``chartevents``, ``labevents`` and ``outputevents`` (validated, cleaned events in stay buckets),
``episodes`` (``ehr/``), ``notes`` (past medical history, ``discharge``), ``split`` (``tvtset``),
``phenotyping``, and with MIMIC-CXR-JPG ``studies`` (``cxr``) and ``diagnosis``.

What the build can do without is named before the first step and in the summary: without
``icu/chartevents`` (the PhysioNet demo lacks it) the series hold only the variables of LABEVENTS;
without MIMIC-IV-Note every note is empty; without MIMIC-CXR-JPG the diagnosis task is not built.
Every table and column it reads is checked before the first step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...cards import label_names
from ...errors import UsageError
from . import cohort, cxr, dates, discharge, events, icd10, mimic4_listfiles, phenotypes, summary, tables, tvtset, variables
from ..timeseries import CHANNELS
from .shared_steps import TIME_FORMAT, buckets_for, dates_read, event_tables, parse_times, read_times, run_episodes, run_events
from .shared_steps import stays as read_stays
from .steps import STEPS_DIR, Attrition, Context, Step, run_steps, write_csv

# The pipeline's version: bumped when a change alters what a build writes.
VERSION = "2"
HOSP, ICU = ("hosp", ""), ("icu", "")
STAY_ID = {"ICUSTAY_ID": "STAY_ID"}  # MIMIC-IV's stay_id is the rules' ICUSTAY_ID
ADMISSIONS = ("SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME")
DIAGNOSES = ("SUBJECT_ID", "HADM_ID", "ICD_CODE", "ICD_VERSION")
WHAT = "the MIMIC-IV folder (hosp/ and icu/ with patients.csv.gz, icustays.csv.gz, ...)"
# name -> (columns, folders, aliases)
# The event tables' columns, VALUENUM with them (events.MASKED); OUTPUTEVENTS has none.
EVENTS = {"CHARTEVENTS": (*events.COLUMNS["CHARTEVENTS"], "VALUENUM"), "LABEVENTS": (*events.COLUMNS["LABEVENTS"], "VALUENUM"),
          "OUTPUTEVENTS": events.OUTPUTEVENTS}
REQUIRED = {
    "PATIENTS": (cohort.PATIENTS_IV, HOSP, {}), "ADMISSIONS": (ADMISSIONS, HOSP, {}),
    "ICUSTAYS": (cohort.ICUSTAYS_IV, ICU, STAY_ID), "DIAGNOSES_ICD": (DIAGNOSES, HOSP, {}),
    "D_ICD_DIAGNOSES": (("ICD_CODE", "ICD_VERSION"), HOSP, {}), "LABEVENTS": (EVENTS["LABEVENTS"], HOSP, {}),
}
OPTIONAL = {"CHARTEVENTS": (EVENTS["CHARTEVENTS"], ICU, STAY_ID), "OUTPUTEVENTS": (EVENTS["OUTPUTEVENTS"], ICU, STAY_ID)}


@dataclass(frozen=True)
class Options:
    note: str | None = None  # the MIMIC-IV-Note folder (note/discharge.csv.gz)
    cxr: str | None = None  # the MIMIC-CXR-JPG folder (mimic-cxr-2.0.0-metadata.csv.gz, -chexpert.csv.gz)
    split_file: str | None = None  # a tvtset.csv to use instead of the seeded split
    ranges: bool = True
    code_dictionary: bool = True
    buckets: int | None = None


def _other_database(raw: Path) -> None:
    """A MIMIC-III folder given to this build is named as such, not as a list of missing tables."""
    if (raw / "hosp").is_dir() or not raw.is_dir():
        return
    found = tables.find(raw, "ICUSTAYS")
    if found is not None and "ICUSTAY_ID" in tables.open_table(raw, "ICUSTAYS", ()).header:
        raise UsageError(f"{raw}: this looks like MIMIC-III (ICUSTAYS with ICUSTAY_ID, no hosp/ folder); "
                         f"build it with `ehrbench data build mimic3 --raw {raw}`")


def open_tables(raw: Path, options: Options) -> dict[str, tables.Table]:
    _other_database(raw)
    found = {name: tables.open_table(raw, name, cols, under, alias, what=WHAT) for name, (cols, under, alias)
             in REQUIRED.items()}
    for name, (cols, under, alias) in OPTIONAL.items():
        if tables.find(raw, name, under, WHAT) is not None:
            found[name] = tables.open_table(raw, name, cols, under, alias, what=WHAT)
    if options.note:
        found["DISCHARGE"] = tables.open_table(Path(options.note), "DISCHARGE", discharge.DISCHARGE, ("note", ""),
                                               what="the MIMIC-IV-Note folder (note/discharge.csv.gz)")
    if options.cxr:
        what = "the MIMIC-CXR-JPG folder (mimic-cxr-2.0.0-metadata.csv.gz, mimic-cxr-2.0.0-chexpert.csv.gz)"
        columns = {"CXR_METADATA": cxr.METADATA, "CXR_CHEXPERT": cxr.chexpert_columns(label_names("diagnosis"))}
        for name, file in cxr.FILES.items():
            found[name] = tables.open_table(Path(options.cxr), name, columns[name], ("",), file_name=file, what=what)
    return found


def missing(found: dict[str, tables.Table]) -> list[str]:
    """What the build goes without, one sentence each."""
    out = []
    if "CHARTEVENTS" not in found:
        charted = _variables("chartevents") - _variables("labevents")
        out.append(f"icu/chartevents not found: the {len(charted)} charted variables ({', '.join(sorted(charted))}) are "
                   f"absent, the series hold only LABEVENTS' ({', '.join(sorted(_variables('labevents')))})")
    if "OUTPUTEVENTS" not in found:
        out.append("icu/outputevents not found: nothing is lost, none of its itemids is one of the 17 variables")
    if "DISCHARGE" not in found:
        out.append("MIMIC-IV-Note not given (--note): no notes, every past_medical_history is empty")
    if "CXR_METADATA" not in found:
        out.append("MIMIC-CXR-JPG not given (--cxr): no chest X-ray studies, the diagnosis task is not built")
    return out


def _variables(linksto: str) -> set[str]:
    return {CHANNELS[c] for c in variables.item_map(linksto).items["CODE"].unique()}


def _run_stays(ctx: Context, tmp: Path):
    icu = tables.read(ctx.tables["ICUSTAYS"], {"SUBJECT_ID": "int64", "HADM_ID": "int64", "ICUSTAY_ID": "int64",
                                                "FIRST_CAREUNIT": str, "LAST_CAREUNIT": str, "INTIME": str,
                                                "OUTTIME": str, "LOS": "float64"})
    adm = tables.read(ctx.tables["ADMISSIONS"], {"SUBJECT_ID": "int64", "HADM_ID": "int64",
                                                  **dates_read(ctx.tables["ADMISSIONS"], dates.ADMISSION_TIMES)})
    pat = tables.read(ctx.tables["PATIENTS"], {"SUBJECT_ID": "int64", "ANCHOR_AGE": "int64", "ANCHOR_YEAR": "int64",
                                                **dates_read(ctx.tables["PATIENTS"], (dates.DEATH_DAY,))})
    parse_times(icu, ctx.tables["ICUSTAYS"], ("INTIME", "OUTTIME"))
    parse_times(adm, ctx.tables["ADMISSIONS"], dates.ADMISSION_TIMES)
    parse_times(pat, ctx.tables["PATIENTS"], (dates.DEATH_DAY,))
    stays, att = cohort.select(icu, adm, pat, cohort.MIMIC4)
    write_csv(stays, tmp / "stays.csv", date_format=TIME_FORMAT)
    write_csv(adm[["SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME"]], tmp / "admissions.csv", date_format=TIME_FORMAT)
    if dates.DEATH_DAY in pat:  # the studies step's check of a study after death
        write_csv(pat[["SUBJECT_ID", dates.DEATH_DAY]].dropna(), tmp / "deaths.csv", date_format=TIME_FORMAT)
    counts = {"PATIENTS": len(pat), "ADMISSIONS": len(adm), "ICUSTAYS": len(icu),
              "admit_provider_id": "ADMIT_PROVIDER_ID" in ctx.tables["ADMISSIONS"].header,
              "demo_subject_id": (ctx.raw / "demo_subject_id.csv").is_file()}
    (tmp / "tables.json").write_text(json.dumps(counts) + "\n")
    ctx.log(f"      {len(icu):,} ICU stays read, {len(stays):,} in the cohort ({stays['SUBJECT_ID'].nunique():,} subjects)")
    return att


def _admissions(ctx: Context) -> pd.DataFrame:
    return read_times(ctx.step_dir("stays") / "admissions.csv", ("ADMITTIME", "DISCHTIME"))


def _diagnoses(ctx: Context) -> pd.DataFrame:
    dx = tables.read(ctx.tables["DIAGNOSES_ICD"], {"SUBJECT_ID": "int64", "HADM_ID": "int64", "ICD_CODE": str,
                                                    "ICD_VERSION": str})
    version = dx["ICD_VERSION"].str.strip()
    bad = ~version.isin(["9", "10"])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise UsageError(f"{ctx.tables['DIAGNOSES_ICD'].path}: table DIAGNOSES_ICD has icd_version "
                         f"{dx['ICD_VERSION'].iloc[row]!r} (data row {row + 1}), expected 9 or 10")
    return dx.assign(VERSION=version, CODE=version + ":" + dx["ICD_CODE"].str.strip())


def _run_phenotypes(ctx: Context, tmp: Path):
    names = label_names("phenotyping")
    dx = _diagnoses(ctx)
    ten = dx.loc[dx["VERSION"] == "10", "ICD_CODE"]
    pairs = pd.concat([phenotypes.icd9_pairs(names).assign(CODE=lambda f: "9:" + f["CODE"]),
                       icd10.pairs(ten, names).assign(CODE=lambda f: "10:" + f["CODE"])], ignore_index=True)
    dictionary = None
    if ctx.options["code_dictionary"]:
        d = tables.read(ctx.tables["D_ICD_DIAGNOSES"], {"ICD_CODE": str, "ICD_VERSION": str})
        dictionary = d["ICD_VERSION"].str.strip() + ":" + d["ICD_CODE"].str.strip()
    labels, att = phenotypes.labels(read_stays(ctx), dx[["SUBJECT_ID", "HADM_ID", "CODE"]], names, dictionary, pairs,
                                    "code in none of the 25 benchmark CCS groups (ICD-10 through the CMS GEM; or empty)")
    write_csv(labels, tmp / "labels.csv")
    coverage = icd10.coverage(ten, names)
    (tmp / "icd10.json").write_text(json.dumps(coverage, indent=1) + "\n")
    ctx.log(f"      {len(dx):,} diagnosis rows ({len(ten):,} ICD-10); {coverage['data_icd10_codes']:,} distinct ICD-10 codes: "
            f"{coverage['data_codes_in_the_gem']:,} in the GEM, {coverage['data_codes_by_prefix']:,} by a parent code, "
            f"{coverage['data_codes_unmapped']:,} unmapped; {labels.iloc[:, 1:].to_numpy().sum(axis=1).mean():.3f} "
            f"labels per stay")
    return att


def _run_notes(ctx: Context, tmp: Path):
    text, att = discharge.extract(ctx.tables.get("DISCHARGE"), ctx.log)
    write_csv(text, tmp / "notes.csv")
    return att


def _run_split(ctx: Context, tmp: Path):
    given = ctx.options["split_file"]
    if given:
        split = tvtset.read(given["path"])
    else:
        subjects = tables.read(ctx.tables["ADMISSIONS"], {"SUBJECT_ID": "int64"})["SUBJECT_ID"]
        split = tvtset.make(subjects)
    write_csv(split, tmp / "tvtset.csv")
    sizes = split["SPLIT"].value_counts().reindex([0, 1, 2], fill_value=0)
    ctx.log(f"      {len(split):,} subjects: {sizes[0]:,} train, {sizes[1]:,} val, {sizes[2]:,} test "
            f"({'from ' + given['path'] if given else f'seed {tvtset.SEED}'})")
    att = Attrition()
    for k, name in tvtset.NAMES.items():
        att.add(f"split:{name}", int(sizes[k]), 0, f"subjects in {name} ({'the split file' if given else 'seeded split'})",
                f"subjects ({name})")
    return att


def _read(ctx: Context, step: str, name: str) -> pd.DataFrame:
    return pd.read_csv(ctx.step_dir(step) / name, keep_default_na=False)  # an empty note is '', not NaN


def _split(ctx: Context) -> pd.DataFrame:
    return pd.read_csv(ctx.step_dir("split") / "tvtset.csv")


def _notes(ctx: Context) -> pd.DataFrame:
    return pd.read_csv(ctx.step_dir("notes") / "notes.csv", keep_default_na=False, dtype={"past_medical_history": str})


def _run_phenotyping(ctx: Context, tmp: Path):
    parts, att = mimic4_listfiles.phenotyping(_read(ctx, "episodes", "episodes.csv"), read_stays(ctx),
                                              _read(ctx, "phenotypes", "labels.csv"), _notes(ctx), _split(ctx),
                                              label_names("phenotyping"))
    att.rows += mimic4_listfiles.write(parts, tmp / "phenotyping", "stays").rows
    return att


def _run_studies(ctx: Context, tmp: Path):
    names = label_names("diagnosis")
    images = tables.read(ctx.tables["CXR_METADATA"], {c: ("int64" if c in ("SUBJECT_ID", "STUDY_ID") else str)
                                                      for c in cxr.METADATA})
    chexpert = tables.read(ctx.tables["CXR_CHEXPERT"], {c: ("int64" if c in ("SUBJECT_ID", "STUDY_ID") else "float64")
                                                        for c in cxr.chexpert_columns(names)})
    admitted = pd.Index(_admissions(ctx)["SUBJECT_ID"].unique())
    died = ctx.step_dir("stays") / "deaths.csv"
    deaths = read_times(died, (dates.DEATH_DAY,)).set_index("SUBJECT_ID")[dates.DEATH_DAY] if died.is_file() else None
    files = {name: str(ctx.tables[name].path) for name in cxr.FILES}
    table, att = cxr.studies(images, chexpert, admitted, names, deaths, files)
    write_csv(table, tmp / "studies.csv", date_format=TIME_FORMAT)
    ctx.log(f"      {len(images):,} images, {len(table):,} AP studies with CheXpert labels of admitted subjects")
    return att


def _run_diagnosis(ctx: Context, tmp: Path):
    studies = read_times(ctx.step_dir("studies") / "studies.csv", ("TIME",))
    parts, att = mimic4_listfiles.diagnosis(studies, read_stays(ctx), _read(ctx, "episodes", "episodes.csv"),
                                            _admissions(ctx), _notes(ctx), _split(ctx), label_names("diagnosis"))
    att.rows += mimic4_listfiles.write(parts, tmp / "diagnosis", "studies").rows
    return att


def steps(found: dict[str, tables.Table]) -> list[Step]:
    """The steps the tables found allow: one whose table is missing goes, and so do those reading it."""
    chosen, names = [], set()
    for step in _steps(found):
        if all(t in found for t in step.tables) and names.issuperset(step.after):
            chosen.append(dataclasses.replace(step, version=VERSION))
            names.add(step.name)
    return chosen


def _steps(found: dict[str, tables.Table]) -> list[Step]:
    events_steps = [Step(t.lower(), run_events(t, EVENTS[t]), tables=(t,), options=("buckets", "ranges"), after=("stays",))
                    for t in ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS")]
    present = tuple(t.lower() for t in ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS") if t in found)
    has_note = ("DISCHARGE",) if "DISCHARGE" in found else ()
    return [
        Step("stays", _run_stays, tables=("ICUSTAYS", "ADMISSIONS", "PATIENTS")),
        Step("phenotypes", _run_phenotypes, tables=("DIAGNOSES_ICD", "D_ICD_DIAGNOSES"), options=("code_dictionary",),
             after=("stays",)),
        *events_steps,
        Step("episodes", run_episodes, options=("buckets",), after=("stays", *present), publish=("ehr",)),
        Step("notes", _run_notes, tables=has_note),
        Step("split", _run_split, tables=("ADMISSIONS",), options=("split_file",)),
        Step("phenotyping", _run_phenotyping, after=("stays", "episodes", "phenotypes", "notes", "split"),
             publish=("phenotyping",)),
        Step("studies", _run_studies, tables=("CXR_METADATA", "CXR_CHEXPERT"), after=("stays",)),
        Step("diagnosis", _run_diagnosis, after=("studies", "stays", "episodes", "notes", "split"),
             publish=("diagnosis",)),
    ]


def _drop_stale(out: Path, chosen: set[str], log) -> None:
    """The diagnosis files of an earlier build with --cxr go when this one has none: the loaders would
    read them as this build's."""
    if "diagnosis" in chosen:
        return
    for path in (out / "diagnosis", out / STEPS_DIR / "studies", out / STEPS_DIR / "diagnosis"):
        if path.is_dir():
            shutil.rmtree(path)
            log(f"removed {path}: an earlier build's diagnosis files (this build has no MIMIC-CXR-JPG)")


def _split_option(path: str | None) -> dict | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise UsageError(f"{path}: split file not found, expected a tvtset.csv (subject_id,split per line)")
    return {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def build(raw: str | Path, out: str | Path, options: Options = Options(), log=None) -> dict:
    """Build (or finish building) the task files of ``raw`` (and the note and CXR folders) under ``out``."""
    raw, out = Path(raw), Path(out)
    found = open_tables(raw, options)
    split_file = _split_option(options.split_file)
    sized = found.get("CHARTEVENTS") or found["LABEVENTS"]
    opts = {"ranges": options.ranges, "code_dictionary": options.code_dictionary, "split_file": split_file,
            "buckets": options.buckets or buckets_for(sized)}
    ctx = Context(raw=raw, out=out, options=opts, tables=found, **({"log": log} if log else {}))
    gaps = missing(found)
    for line in gaps:
        ctx.log(f"missing: {line}")
    out.mkdir(parents=True, exist_ok=True)
    chosen = steps(found)
    _drop_stale(out, {s.name for s in chosen}, ctx.log)
    attrition, seconds = run_steps(chosen, ctx)
    write_csv(attrition, out / "attrition.csv")
    result = summary.summarise_mimic4(ctx, attrition, seconds, gaps, [t for t in event_tables(ctx)])
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "summary.json")
    return result
