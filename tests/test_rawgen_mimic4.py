"""The generator's raw MIMIC-IV tables (with MIMIC-IV-Note and MIMIC-CXR-JPG) built by `ehrbench data build
mimic4` give back the generator's own mimic4-phe and mimic4-dia task files, as the database can hold them
(same stays and studies, split, labels, notes and series; no capillary refill or GCS total, MetaVision's
GCS words, the past medical history section as the note), and the build's attrition drops exactly the
rows the raw writer planted to break each rule."""
import dataclasses
import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.data.extract import mimic4
from benchmark.data.rawgen import compare, cxr, items, mimic4 as raw
from benchmark.errors import UsageError
from benchmark.protocol import FULL

# Small, with samples without a series (phenotyping: left out; diagnosis: studies outside the ICU) and
# without a note; the diagnosis task with more series than the card's 23.7 %, so that stays hold several studies.
PHE = dataclasses.replace(FULL.task("mimic4-phe"), name="raw-mimic4-phe", n_total=150, missing_ehr=0.05, missing_note=0.1)
DIA = dataclasses.replace(FULL.task("mimic4-dia"), name="raw-mimic4-dia", n_total=200, missing_ehr=0.5)


def build(root, cxr_folder=True, **kw):
    raw_dir = root / "raw"
    options = mimic4.Options(note=str(raw_dir / "mimic-iv-note"), cxr=str(raw_dir / "mimic-cxr-jpg") if cxr_folder else None,
                             split_file=str(raw_dir / "tvtset.csv"), **kw)
    return mimic4.build(raw_dir / "mimic-iv", root / "built", options, log=lambda _: None)


@pytest.fixture(scope="module")
def phe(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw4phe")
    report = raw.write(PHE, root / "raw", task_files=root / "expected")
    return root, report, build(root, cxr_folder=False)


@pytest.fixture(scope="module")
def dia(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw4dia")
    report = raw.write(DIA, root / "raw", task_files=root / "expected")
    return root, report, build(root)


def listfile(root, task, split):
    return pd.read_csv(root / task / f"{split}_multimodal_listfile.csv", dtype=str, keep_default_na=False)


def every(root, task):
    return pd.concat([listfile(root, task, s) for s in ("train", "val", "test")], ignore_index=True)


def attrition(root):
    return pd.read_csv(root / "built" / "attrition.csv", keep_default_na=False)


# --- phenotyping --------------------------------------------------------------------------------------

def test_the_phenotyping_build_equals_the_generators_task_files_as_mimic4_holds_them(phe):
    root, report, summary = phe
    assert compare.differences(root / "expected", root / "built", shape=compare.MIMIC4_PHE) == []
    # Not vacuous: three splits, notes and empty notes, several episodes of a patient, samples without a series.
    expected, built = every(root / "expected", "phenotyping"), every(root / "built", "phenotyping")
    assert summary["tasks"]["phenotyping"]["samples"]["total"] == len(built) == report["stays"]["cohort"] > 100
    assert report["stays"]["without_series"] == (expected["time_series"] == "").sum() > 0
    assert min(summary["tasks"]["phenotyping"]["samples"][s] for s in ("train", "val", "test")) > 5
    notes = built["past_medical_history"]
    assert (notes != "").sum() > 100 and (notes == "").sum() > 5 and not notes.str.contains("social history").any()
    assert built["time_series"].str.contains("_episode2_").any()
    timing = report["timing"]
    assert timing["merged"] == 0 and timing["moved_bin"] == 0 and timing["max_shift_s"] < 2


def test_what_mimic4_cannot_chart_is_absent_from_the_built_series_and_expected_so(phe):
    root, _, _ = phe
    name = every(root / "built", "phenotyping")["time_series"].iloc[0]
    generated = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in (root / "expected" / "ehr").iterdir()])
    built = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in (root / "built" / "ehr").iterdir()])
    assert items.ABSENT_IN_MIMIC4 == ["Capillary refill rate", "Glascow coma scale total"]
    for channel in items.ABSENT_IN_MIMIC4:  # the generator charts them; MIMIC-IV has no itemid for them
        assert (generated[channel] != "").any() and (built[channel] == "").all()
    eye = "Glascow coma scale eye opening"
    assert generated[eye].str.match(r"\d ").any() and not built[eye].str.match(r"\d ").any()  # CareVue words
    assert set(built[eye]) - {""} <= set(items.METAVISION_WORDS[eye].values())
    assert (root / "built" / "ehr" / name).is_file()


def test_every_attrition_row_drops_exactly_the_planted_rows_phenotyping(phe):
    root, report, summary = phe
    att = attrition(root)
    assert compare.attrition(report["dropped"], att) == []
    rules = {"transfers", "admission_rows", "one_icu_stay", "adults", "dates:icu_stay", "dates:admission", "dates:death",
             "length_of_stay", "events_in_icu", "cohort_diagnoses", "code_dictionary", "benchmark_codes",
             "episodes:length_of_stay", "episodes:icu_period", "episodes:one_per_time", "outputevents:itemids",
             "notes:admission_id", "notes:one_per_admission", "notes:past_medical_history", "phenotyping:note"}
    rules |= {f"chartevents:{r}" for r in ("itemids", "cohort_subjects", "admission_id", "admission", "icu_stay",
                                           "time_and_value", "before_stay", "cleaning", "spelling", "ranges")}
    rules |= {f"labevents:{r}" for r in ("itemids", "admission_id", "admission", "time_and_value", "cleaning")}
    assert {step for step, n in report["dropped"].items() if n > 0} >= rules
    reason = att.set_index("step").loc["labevents:time_and_value", "reason"]
    assert report["masked_values"] > 0 and "masked values ('___') read from VALUENUM" in reason
    assert sum(w.startswith("dates out of order") for w in summary["warnings"]) == 4


def test_icd9_and_icd10_admissions_both_label_their_stays(phe):
    root, _, summary = phe
    dx = pd.read_csv(root / "raw" / "mimic-iv" / "hosp" / "diagnoses_icd.csv.gz", dtype=str)
    versions = dx.groupby("hadm_id")["icd_version"].nunique()
    assert (versions == 1).all() and set(dx["icd_version"]) == {"9", "10"}  # one version per admission
    stays = set(every(root / "built", "phenotyping")["stay_id"].astype(int) - 10_000_000)  # admission = stay - 10 M
    ten = set(dx.loc[dx["icd_version"] == "10", "hadm_id"].astype(int)) & stays
    assert len(ten) > 40 and len(stays - ten) > 40
    assert summary["icd10"]["data_codes_unmapped"] == 0 and summary["icd10"]["data_codes_in_a_benchmark_group"] > 20


# --- diagnosis ------------------------------------------------------------------------------------------

def test_the_diagnosis_build_equals_the_generators_task_files_as_mimic4_holds_them(dia):
    root, report, summary = dia
    assert compare.differences(root / "expected", root / "built", shape=compare.MIMIC4_DIA) == []
    expected, built = every(root / "expected", "diagnosis"), every(root / "built", "diagnosis")
    assert len(built) == len(expected) == DIA.n_total == summary["tasks"]["diagnosis"]["samples"]["total"]
    with_series = built[built["time_series"] != ""]
    assert 60 < len(with_series) < 140 and (built.loc[built["time_series"] == "", "period_len"].astype(float) == 0).all()
    assert with_series["time_series"].duplicated().sum() >= 3  # stays with several studies, each up to its own time
    assert (built[built.columns[5:]] == "-2").to_numpy().any() and (built[built.columns[5:]] == "-1").to_numpy().any()
    assert report["placement"]["conflicts"] == 0 and report["placement"]["max_shift_s"] <= 0.5
    notes = built["past_medical_history"]
    assert (notes != "").sum() > 80 and (notes == "").sum() > 30


def test_a_study_takes_the_note_of_its_admission_which_is_its_stays_first_studys(dia):
    root, _, _ = dia
    expected, built = every(root / "expected", "diagnosis"), every(root / "built", "diagnosis")
    shared = built[(built["time_series"] != "") & built["time_series"].duplicated(keep=False)]
    assert (shared.groupby("time_series")["past_medical_history"].nunique() == 1).all()
    generated = expected.set_index("study_id").loc[shared["study_id"], "past_medical_history"]
    assert generated.groupby(shared["time_series"].to_numpy()).nunique().max() > 1  # the generator drew one per study


def test_every_attrition_row_drops_exactly_the_planted_rows_diagnosis(dia):
    root, report, _ = dia
    assert compare.attrition(report["dropped"], attrition(root)) == []
    rules = {"cxr:ap_view", "cxr:ap_study", "cxr:chexpert", "cxr:admitted_subject", "cxr:after_death",
             "diagnosis:in_split", "diagnosis:in_icu_stay", "diagnosis:note", "phenotyping:note"}
    assert {step for step, n in report["dropped"].items() if n > 0} >= rules


def test_the_phenotyping_task_of_a_diagnosis_database_has_its_stays_and_no_label(dia):
    root, report, summary = dia
    phe, studies = every(root / "built", "phenotyping"), every(root / "built", "diagnosis")
    assert len(phe) == report["stays"]["cohort"] == studies.loc[studies["time_series"] != "", "time_series"].nunique()
    assert (phe[phe.columns[5:]].astype(int) == 0).all().all() and summary["tasks"]["phenotyping"]["label_cardinality"] == 0


def test_the_comparison_finds_a_changed_label_period_note_or_series(dia, tmp_path):
    root, _, _ = dia

    def broken(change) -> list[str]:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(root / "built", copy, ignore=shutil.ignore_patterns(".steps"))
        change(copy)
        return compare.differences(root / "expected", copy, shape=compare.MIMIC4_DIA)

    def edit(copy, change):
        path = copy / "diagnosis" / "train_multimodal_listfile.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        change(frame)
        frame.to_csv(path, index=False)

    def first_with_series(frame) -> int:
        return int(np.flatnonzero(frame["time_series"] != "")[0])

    def flip(frame):
        frame["Atelectasis"] = frame["Atelectasis"].replace({"-2": "0", "0": "-2", "1": "-1", "-1": "1"})

    def later(frame):
        at = first_with_series(frame)
        frame.loc[at, "period_len"] = str(float(frame.loc[at, "period_len"]) + 0.1)

    def other_note(frame):
        frame.loc[first_with_series(frame), "past_medical_history"] = "htn"

    assert any("label 'Atelectasis'" in d for d in broken(lambda c: edit(c, flip)))
    assert any("period_len" in d for d in broken(lambda c: edit(c, later)))
    assert any("note of study_id" in d for d in broken(lambda c: edit(c, other_note)))

    def heart(copy):  # a value of a series that a study reads
        name = listfile(copy, "diagnosis", "train").query("time_series != ''")["time_series"].iloc[0]
        frame = pd.read_csv(copy / "ehr" / name, dtype=str, keep_default_na=False)
        at = int(np.flatnonzero(frame["Heart Rate"].to_numpy() != "")[0])
        frame.loc[at, "Heart Rate"] = str(float(frame.loc[at, "Heart Rate"]) + 1)
        frame.to_csv(copy / "ehr" / name, index=False)

    assert any("Heart Rate" in d for d in broken(heart))


# --- placement of the studies ---------------------------------------------------------------------------

def test_a_study_second_keeps_the_rows_and_bins_the_loaders_see():
    # Rows charted at 0 s, 18000 s (5 h), 18004 s and 32400 s (their generator hours 0, 5.0, 5.001, 9).
    hours, seconds = np.array([0.0, 5.0, 5.001, 9.0]), np.array([0, 18000, 18004, 32400])
    placement = cxr.Placement()
    got = cxr.study_seconds(np.array([7.3, 5.00005, 4.99999, 4.00001]), 10.0, hours, seconds, placement)
    assert got[0] == round(7.3 * 3600)  # the nearest second
    assert got[1] == 18001  # 5.00005 h has 6 hourly bins: past 5 h + 1e-6, before the row at 18004 s
    assert got[2] == 17999  # 4.99999 h has 5 bins and does not read the row at 5 h
    assert got[3] == cxr.MIN_SECONDS  # 4.00001 h is 14400.036 s: the build gives a series only past 4 h
    assert placement.conflicts == 0
    # 5.0001 h needs 6 bins (a second past 18000) but not the row charted at 18001 s: no second does both.
    cxr.study_seconds(np.array([5.0001]), 10.0, np.array([0.0, 5.0, 5.0002]), np.array([0, 18000, 18001]), placement)
    assert placement.conflicts == 1


# --- the writer --------------------------------------------------------------------------------------

def test_the_raw_tables_are_the_same_bytes_every_time(tmp_path):
    spec = dataclasses.replace(DIA, n_total=40)
    digests = []
    for run in ("a", "b"):
        raw.write(spec, tmp_path / run)
        files = sorted(p for p in (tmp_path / run).rglob("*") if p.is_file())
        digests.append(hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest())
    assert digests[0] == digests[1]


def test_the_writer_refuses_a_task_of_another_layout_and_ward_distractors(tmp_path):
    with pytest.raises(UsageError, match="written for a task in layout mimic4"):
        raw.write(FULL.task("mimic3-phe"), tmp_path / "x")
    with pytest.raises(UsageError, match="MIMIC-IV has no ward ids"):
        raw.write(dataclasses.replace(PHE, n_total=20), tmp_path / "y", raw.Volume())  # MIMIC-III's default has wards


def test_the_cli_writes_the_tables_and_prints_the_build_command(tmp_path, capsys):
    assert main(["data", "raw", "mimic4", "--task", "mimic4-dia", "--n-total", "30", "--out", str(tmp_path / "raw")]) == 0
    printed = capsys.readouterr().out
    assert "chartevents" in printed and "mimic-cxr-2.0.0-chexpert" in printed
    assert f"--cxr {tmp_path / 'raw'}/mimic-cxr-jpg --split-file {tmp_path / 'raw'}/tvtset.csv" in printed
    assert (tmp_path / "raw" / "mimic-iv" / "icu" / "chartevents.csv.gz").is_file()
    assert main(["data", "raw", "mimic4", "--n-total", "20", "--out", str(tmp_path / "phe")]) == 0
    assert "--cxr" not in capsys.readouterr().out  # phenotyping (the default task): no CXR tables
    assert main(["data", "raw", "mimic4", "--task", "mimic3-phe", "--out", str(tmp_path / "x")]) == 2
    assert "layout mimic4" in capsys.readouterr().err
    assert main(["data", "raw", "mimic4", "--scale", "0.05", "--out", str(tmp_path / "x")]) == 2
    assert "--scale is for `data raw mimic3`" in capsys.readouterr().err
