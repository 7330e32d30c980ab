"""`ehrbench data build mimic4`: a hand-made MIMIC-IV-shaped database (with MIMIC-IV-Note and
MIMIC-CXR-JPG tables) whose every rule has a known outcome, the ICD-10 route, bad input, resumable
steps, and the real PhysioNet MIMIC-IV demo (no chartevents, notes or CXR: what it builds and what it
says is missing)."""
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cards import label_names
from benchmark.data.extract import icd10, mimic4, tvtset
from benchmark.data.loaders import read_split
from benchmark.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("EHRBENCH_MIMIC4_DEMO", ROOT.parent / "shared" / "data" / "mimic-iv-demo-2.2"))
PHE, DIA = label_names("phenotyping"), label_names("diagnosis")
T0 = pd.Timestamp("2150-01-02 00:00:00")


def at(hours: float, base: pd.Timestamp = T0) -> str:
    return str(base + pd.Timedelta(hours=hours))


def gz(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))


def write_tiny(root: Path) -> dict[str, Path]:
    """MIMIC-IV hosp/ and icu/, MIMIC-IV-Note note/, MIMIC-CXR-JPG: lower-case headers, gzip, as published.

    Subjects: 1 kept (ICD-10 and ICD-9 codes, a note, three CXR studies); 2 a transfer; 3 an admission
    with two ICU stays; 4 a child (anchor_age 15 in 2150, stay in 2151: 16); 5 an adult by the anchor
    rule (17 in 2148, stay in 2150: 19); 6 an admission without ICU stay but with a study; 7 a study
    and no admission."""
    raw, note, cxr = root / "mimiciv" / "2.2", root / "note", root / "cxr"
    gz(pd.DataFrame({"subject_id": [1, 2, 3, 4, 5, 6, 7], "gender": "F", "anchor_age": [60, 50, 40, 15, 17, 70, 30],
                     "anchor_year": [2150, 2150, 2150, 2150, 2148, 2150, 2150], "anchor_year_group": "2011 - 2013",
                     "dod": ""}), raw / "hosp" / "patients.csv.gz")
    gz(pd.DataFrame({"subject_id": [1, 2, 3, 4, 5, 6], "hadm_id": [11, 21, 31, 41, 51, 61],
                     "admittime": [at(-24), at(-24), at(-24), at(365 * 24 - 24), at(-24), at(-24)],
                     "dischtime": [at(24 * 8), at(48), at(96), at(365 * 24 + 48), at(72), at(72)],
                     "admit_provider_id": "P1"}), raw / "hosp" / "admissions.csv.gz")
    gz(pd.DataFrame({"subject_id": [1, 2, 3, 3, 4, 5], "hadm_id": [11, 21, 31, 31, 41, 51],
                     "stay_id": [111, 211, 311, 312, 411, 511],
                     "first_careunit": "MICU", "last_careunit": ["MICU", "SICU", "MICU", "MICU", "MICU", "MICU"],
                     "intime": [at(0), at(0), at(0), at(30), at(365 * 24), at(0)],
                     "outtime": [at(48), at(24), at(20), at(50), at(365 * 24 + 24), at(24)],
                     "los": [2.0, 1.0, 20 / 24, 20 / 24, 1.0, 1.0]}), raw / "icu" / "icustays.csv.gz")
    codes = [(11, "A021", 10), (11, "I10", 10), (11, "4280", 9), (51, "N179", 10), (51, "Z0000", 10), (61, "J449", 10)]
    gz(pd.DataFrame({"subject_id": [1, 1, 1, 5, 5, 6], "hadm_id": [h for h, _, _ in codes], "seq_num": 1,
                     "icd_code": [c for _, c, _ in codes], "icd_version": [v for _, _, v in codes]}),
       raw / "hosp" / "diagnoses_icd.csv.gz")
    gz(pd.DataFrame({"icd_code": [c for _, c, _ in codes], "icd_version": [v for _, _, v in codes], "long_title": "x"}),
       raw / "hosp" / "d_icd_diagnoses.csv.gz")
    lab = lambda s, h, item, t, v, num: dict(labevent_id=1, subject_id=s, hadm_id=h, itemid=item, charttime=t,  # noqa: E731
                                            value=v, valuenum=num, valueuom="")
    gz(pd.DataFrame([lab(1, 11, 50931, at(1), "___", 120), lab(1, 11, 50820, at(5), "7.35", 7.35),
                     lab(1, None, 50931, at(6), "130", 130), lab(5, 51, 50931, at(2), "100", 100)]),
       raw / "hosp" / "labevents.csv.gz")
    chart = lambda s, h, st, item, t, v: dict(subject_id=s, hadm_id=h, stay_id=st, caregiver_id=1, charttime=t,  # noqa: E731
                                             storetime=t, itemid=item, value=v, valuenum=v, valueuom="bpm", warning=0)
    gz(pd.DataFrame([chart(1, 11, 111, 220045, at(2), 80), chart(1, 11, 111, 220045, at(60), 85),
                     chart(5, 51, 511, 220045, at(3), 90)]), raw / "icu" / "chartevents.csv.gz")
    gz(pd.DataFrame({"subject_id": [1], "hadm_id": [11], "stay_id": [111], "caregiver_id": 1, "charttime": [at(3)],
                     "storetime": [at(3)], "itemid": [226559], "value": [60], "valueuom": ["ml"]}),
       raw / "icu" / "outputevents.csv.gz")
    summaries = ["Name: ___\nPast Medical History:\n- HTN, DM2.\n- CAD s/p CABG (2140)\n\nSocial History:\nsmoker",
                 "Past Medical History: later addendum\nSocial History: none", "Brief Hospital Course: no history heading",
                 "PAST MEDICAL HISTORY: COPD; asthma."]
    gz(pd.DataFrame({"note_id": ["a", "b", "c", "d"], "subject_id": [1, 1, 5, 6], "hadm_id": [11, 11, 51, 61],
                     "note_type": "DS", "note_seq": [1, 2, 1, 1], "charttime": [at(100), at(150), at(50), at(50)],
                     "storetime": "", "text": summaries}), note / "note" / "discharge.csv.gz")
    image = lambda dicom, s, study, view, hours: dict(  # noqa: E731
        dicom_id=dicom, subject_id=s, study_id=study, PerformedProcedureStepDescription="CHEST", ViewPosition=view,
        Rows=1, Columns=1, StudyDate=(T0 + pd.Timedelta(hours=hours)).strftime("%Y%m%d"),
        StudyTime=float((T0 + pd.Timedelta(hours=hours)).strftime("%H%M%S")))
    gz(pd.DataFrame([image("d1", 1, 1001, "AP", 10), image("d1l", 1, 1001, "LATERAL", 10),  # series up to 10 h
                     image("d2", 1, 1002, "AP", 2),  # within 4 h of ICU admission: no series
                     image("d3", 1, 1003, "PA", 12),  # no AP image
                     image("d4", 6, 1004, "AP", 20),  # in an admission, in no ICU stay
                     image("d5", 7, 1005, "AP", 20),  # no admission
                     image("d6", 1, 1006, "AP", 30)]),  # no CheXpert row
       cxr / "mimic-cxr-2.0.0-metadata.csv.gz")
    chexpert = pd.DataFrame({"subject_id": [1, 1, 6, 7], "study_id": [1001, 1002, 1004, 1005]})
    for i, name in enumerate(DIA):
        chexpert[name] = [1.0, None, 0.0, 1.0] if i == 0 else ([-1.0, 1.0, None, None] if i == 1 else None)
    gz(chexpert, cxr / "mimic-cxr-2.0.0-chexpert.csv.gz")
    split = root / "tvtset.csv"
    split.write_text("subject_id,split\n1,0\n2,0\n3,0\n4,0\n5,1\n6,2\n")
    return {"raw": raw, "note": note, "cxr": cxr, "split": split}


def build(paths, out, lines=None, note=True, cxr=True, split=True, **kw):
    options = mimic4.Options(note=str(paths["note"]) if note else None, cxr=str(paths["cxr"]) if cxr else None,
                             split_file=str(paths["split"]) if split else None, **kw)
    return mimic4.build(paths["raw"], out, options, log=(lines.append if lines is not None else lambda _: None))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic4")
    paths = write_tiny(root)
    out = root / "out"
    return paths, out, build(paths, out)


def listfile(out, task, split):
    return pd.read_csv(out / task / f"{split}_multimodal_listfile.csv", keep_default_na=False)


def both(out, task):
    return pd.concat([listfile(out, task, s) for s in ("train", "val", "test")], ignore_index=True)


# --- the hand-made database ----------------------------------------------------------------------------

def test_the_cohort_drops_transfers_multi_stay_admissions_and_children_by_the_anchor_age(tiny):
    paths, out, summary = tiny
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step")
    assert [att.loc[s, "excluded"] for s in ("transfers", "one_icu_stay", "adults")] == [1, 2, 1]
    phe = both(out, "phenotyping")
    assert list(phe.columns[:5]) == ["subject_id", "stay_id", "time_series", "period_length", "past_medical_history"]
    assert list(phe.columns[5:]) == PHE
    assert sorted(phe["stay_id"]) == [111, 511]  # 5 is 17 + (2150 - 2148) = 19 at admission: an adult
    assert summary["database"].startswith("MIMIC-IV 2.2 (from the folder name; admissions has admit_provider_id")


def test_icd10_codes_take_their_ccs_groups_through_the_gem(tiny):
    _, out, _ = tiny
    phe = both(out, "phenotyping").set_index("stay_id")
    positives = {s: [n for n in PHE if phe.loc[s, n] == 1] for s in (111, 511)}
    # A021 (Salmonella sepsis, a GEM combination: 0031 + 99591) -> septicemia; I10 -> 4010/4011/4019, whose
    # most common group is essential hypertension (4010 alone is 'with complications'); 4280 (ICD-9) -> CHF.
    assert positives[111] == ["Congestive heart failure; nonhypertensive", "Essential hypertension",
                              "Septicemia (except in labor)"]
    assert positives[511] == ["Acute and unspecified renal failure"]  # N179; Z0000 is in no benchmark group


def test_a_code_the_gem_lacks_takes_its_parent_codes_groups():
    found = icd10.targets(pd.Series(["N1790", "I10"]))  # N1790: not a code, its prefix N179 is
    assert set(found.loc[found["ICD10"] == "N1790", "HOW"]) == {"prefix"}
    assert icd10.pairs(pd.Series(["N1790"]), PHE)["COLUMN"].tolist() == [PHE.index("Acute and unspecified renal failure")]
    assert len(icd10.unmapped(pd.Series(["U07", "XYZ1"]))) == 2


def test_series_come_from_chartevents_and_labevents_with_masked_values_read_from_valuenum(tiny):
    _, out, _ = tiny
    series = pd.read_csv(out / "ehr" / "1_episode1_timeseries.csv", dtype=str, keep_default_na=False)
    assert series["Hours"].astype(float).tolist() == [1.0, 2.0, 5.0]  # 60 h is after the stay, 6 h has no hadm_id
    assert series["Glucose"].tolist() == ["120.0", "", ""] and series["Heart Rate"].tolist() == ["", "80.0", ""]
    assert series["pH"].tolist() == ["", "", "7.35"]
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step")
    assert "1 masked values ('___') read from VALUENUM" in att.loc["labevents:time_and_value", "reason"]
    assert att.loc["outputevents:itemids", "excluded"] == 1  # read, but no variable comes from it


def test_notes_are_the_past_medical_history_section_of_the_first_discharge_summary(tiny):
    _, out, _ = tiny
    phe = both(out, "phenotyping").set_index("stay_id")
    assert phe.loc[111, "past_medical_history"] == "htn dm2 cad sp cabg 2140"  # not the later addendum
    assert phe.loc[511, "past_medical_history"] == ""  # a summary without the heading
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step")
    assert (att.loc["notes:one_per_admission", "excluded"], att.loc["notes:past_medical_history", "excluded"]) == (1, 1)


def test_one_diagnosis_row_per_ap_study_with_the_series_up_to_the_study(tiny):
    _, out, summary = tiny
    dia = both(out, "diagnosis").set_index("study_id")
    assert list(dia.columns[:4]) == ["subject_id", "time_series", "period_len", "past_medical_history"]
    assert sorted(dia.index) == [1001, 1002, 1004]  # 1003 has no AP image, 1005 no admission, 1006 no labels
    assert (dia.loc[1001, "time_series"], dia.loc[1001, "period_len"]) == ("1_episode1_timeseries.csv", 10.0)
    assert (dia.loc[1002, "time_series"], dia.loc[1002, "period_len"]) == ("", 2.0)  # within 4 h
    assert (dia.loc[1004, "time_series"], dia.loc[1004, "period_len"]) == ("", 0.0)  # no ICU stay
    assert dia.loc[1004, "past_medical_history"] == "copd asthma" and dia.loc[1001, "past_medical_history"] != ""
    assert dia.loc[1001, DIA[:3]].tolist() == [1, -1, -2] and dia.loc[1002, DIA[:2]].tolist() == [-2, 1]
    assert len(listfile(out, "diagnosis", "test")) == 1  # subject 6 is test in the split file
    raw = read_split(out, "mimic4", "diagnosis", "train", DIA)  # the loaders read what the build wrote
    assert sorted(raw.keys) == ["1001", "1002"] and raw.series[raw.keys.index("1002")] is None
    assert raw.labels[:, 0].tolist() == [1, 0]  # uncertain and blank are negatives (MIRACL)
    assert summary["tasks"]["diagnosis"]["samples"]["total"] == 3


def test_the_attrition_rows_chain_within_each_unit(tiny):
    _, out, _ = tiny
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False)
    assert list(att.columns) == ["step", "included", "excluded", "reason", "unit"]
    for unit, rows in att.groupby("unit", sort=False):
        assert rows["excluded"].iloc[0] == 0, unit
        assert ((rows["included"] + rows["excluded"]).to_numpy()[1:] == rows["included"].to_numpy()[:-1]).all(), unit


def test_without_note_and_cxr_the_build_says_what_is_missing_and_builds_phenotyping(tiny, tmp_path):
    paths, _, _ = tiny
    lines = []
    result = build(paths, tmp_path / "out", lines, note=False, cxr=False, split=False)
    assert any(line.startswith("missing: MIMIC-IV-Note not given") for line in lines)
    assert any(line.startswith("missing: MIMIC-CXR-JPG not given") for line in lines)
    assert result["tasks"]["diagnosis"] is None and not (tmp_path / "out" / "diagnosis").exists()
    assert set(both(tmp_path / "out", "phenotyping")["past_medical_history"]) == {""}


def test_a_second_build_keeps_every_finished_step(tiny):
    paths, out, _ = tiny
    lines = []
    build(paths, out, lines)
    assert all(line.endswith(f"({out / '.steps' / line.split()[1][:-1]})") for line in lines if line.startswith("["))
    assert sum("done before, kept" in line for line in lines) == 11


def test_the_seeded_split_is_reproducible_and_cut_20_10_70():
    first = tvtset.make(pd.Series(range(100, 200)))
    assert first.equals(tvtset.make(pd.Series(range(100, 200))))
    assert first["SPLIT"].value_counts().to_dict() == {0: 70, 2: 20, 1: 10}


def test_a_split_file_line_that_is_not_a_subject_and_0_1_or_2_is_named(tmp_path):
    path = tmp_path / "tvtset.csv"
    path.write_text("subject_id,split\n1,0\n2,3\n")
    with pytest.raises(UsageError, match=r"tvtset.csv line 3: '2,3', expected a subject id and 0, 1 or 2"):
        tvtset.read(path)
    path.write_text("1,0\n2,2\n")  # no header
    assert tvtset.read(path)["SPLIT"].tolist() == [0, 2]


# --- dates out of order ---------------------------------------------------------------------------------

def _edit(path: Path, change) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    gz(frame, path)


@pytest.fixture(scope="module")
def disordered(tiny, tmp_path_factory):
    """The hand-made database with one record of each kind out of order: stay 511's OUTTIME before its INTIME
    (and, as another case, its admission's dischtime before admittime: a copy each), subject 5 dead before
    the admission, a chart event of stay 111 before its INTIME, and a study of subject 6 after its death."""
    paths, _, _ = tiny
    root = tmp_path_factory.mktemp("disordered")
    out = {}
    cases = {
        "icu_stay": ("icu/icustays.csv.gz", lambda f: f.__setitem__("outtime", f["outtime"].where(f["stay_id"] != "511", at(-1)))),
        "admission": ("hosp/admissions.csv.gz", lambda f: f.__setitem__("dischtime", f["dischtime"].where(f["hadm_id"] != "51", at(-48)))),
        "deathtime": ("hosp/admissions.csv.gz", lambda f: f.__setitem__("deathtime", ["", "", "", "", at(-30), ""])),
        "dod": ("hosp/patients.csv.gz", lambda f: f.__setitem__("dod", ["", "", "", "", "2149-12-31", "2150-01-01", ""])),
    }
    for name, (table, change) in cases.items():
        copy = {**paths, "raw": root / name}
        shutil.copytree(paths["raw"], copy["raw"])
        _edit(copy["raw"] / table, change)
        if name == "icu_stay":  # and an event of stay 111 two hours before its INTIME
            chart = copy["raw"] / "icu" / "chartevents.csv.gz"
            _edit(chart, lambda f: f.loc.__setitem__(len(f), ["1", "11", "111", "1", at(-2), at(-2), "220045", "70", "70",
                                                               "bpm", "0"]))
        result = build(copy, root / f"out-{name}")
        out[name] = result, pd.read_csv(root / f"out-{name}" / "attrition.csv", keep_default_na=False).set_index("step")
    return out


@pytest.mark.parametrize("case, step, unit, reason", [
    ("icu_stay", "dates:icu_stay", "stays", "OUTTIME before INTIME"),
    ("admission", "dates:admission", "stays", "DISCHTIME before its ADMITTIME"),
    ("deathtime", "dates:death", "stays", "ADMISSIONS.DEATHTIME before ADMITTIME"),
    ("dod", "dates:death", "stays", "PATIENTS.DOD a day before ADMITTIME's"),
    ("icu_stay", "chartevents:before_stay", "chartevents rows", "charted before the INTIME of the ICU stay"),
    ("dod", "cxr:after_death", "studies", "dated after the subject's day of death"),
])
def test_a_record_whose_dates_are_out_of_order_is_dropped_counted_and_warned(disordered, case, step, unit, reason):
    summary, att = disordered[case]
    assert (att.loc[step, "excluded"], att.loc[step, "unit"]) == (1, unit) and reason in att.loc[step, "reason"]
    assert any(w.startswith(f"dates out of order: 1 {unit} dropped at {step} (") for w in summary["warnings"])
    if unit == "stays":  # stay 511 (subject 5) leaves phenotyping
        assert summary["tasks"]["phenotyping"]["samples"]["total"] == 1
    if step == "cxr:after_death":  # study 1004 of subject 6 (dead the day before), not the studies of subject 5
        assert summary["tasks"]["diagnosis"]["samples"]["total"] == 2


def test_the_death_check_names_what_it_read_and_nothing_in_order_is_warned(tiny):
    _, out, summary = tiny  # admissions without deathtime, patients with an empty dod
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step")
    assert att.loc["dates:death", "reason"] == "dates out of order: death before the admission (PATIENTS.DOD a day before ADMITTIME's)"
    assert att.loc[["dates:icu_stay", "dates:admission", "dates:death", "cxr:after_death"], "excluded"].tolist() == [0] * 4
    assert not any(w.startswith("dates out of order") for w in summary["warnings"])


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("where, column, value, expected", [
    ("hosp/admissions.csv.gz", "admittime", "02/01/2150", "table ADMISSIONS column admittime: '02/01/2150' (data row 1) "
                                                          "is not a timestamp, expected 'YYYY-MM-DD HH:MM:SS'"),
    ("hosp/patients.csv.gz", "dod", "last week", "table PATIENTS column dod: 'last week' (data row 1) is not a "
                                                 "timestamp, expected 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD'"),
    ("hosp/labevents.csv.gz", "charttime", "1 pm", "table LABEVENTS column charttime: '1 pm' (data row 1) is not a "
                                                  "timestamp, expected 'YYYY-MM-DD HH:MM:SS'"),
    ("note/note/discharge.csv.gz", "charttime", "2150-01-06", "table DISCHARGE column charttime: '2150-01-06' (data row 1) "
                                                         "is not a timestamp, expected 'YYYY-MM-DD HH:MM:SS'"),
    ("cxr/mimic-cxr-2.0.0-metadata.csv.gz", "StudyTime", "noon", "table CXR_METADATA columns StudyDate / StudyTime: "
                                                                 "'21500102' / 'noon' (data row 1) is not a date and time, "
                                                                 "expected YYYYMMDD / HHMMSS.fff"),
])
def test_an_unparsable_date_names_the_file_the_column_the_row_and_the_form(tiny, tmp_path, where, column, value, expected):
    paths, _, _ = tiny
    root = tmp_path / "copy"
    shutil.copytree(paths["raw"].parents[1], root)
    if "dod" == column:
        _edit(root / "mimiciv" / "2.2" / where, lambda f: f.__setitem__("dod", [value] + [""] * (len(f) - 1)))
    else:
        target = root / ("mimiciv/2.2/" + where if where.startswith("hosp") else where)
        _edit(target, lambda f: f.loc.__setitem__((0, column), value))
    copy = {"raw": root / "mimiciv" / "2.2", "note": root / "note", "cxr": root / "cxr", "split": root / "tvtset.csv"}
    with pytest.raises(UsageError) as caught:
        build(copy, tmp_path / "out")
    path = root / ("mimiciv/2.2/" + where if where.startswith("hosp") else where)
    assert str(caught.value) == f"{path}: {expected}"


def test_a_missing_column_is_one_line_naming_the_table_and_nothing_is_written(tiny, tmp_path):
    paths, _, _ = tiny
    raw = tmp_path / "raw"
    shutil.copytree(paths["raw"], raw)
    gz(pd.read_csv(paths["raw"] / "icu" / "icustays.csv.gz").drop(columns="stay_id"), raw / "icu" / "icustays.csv.gz")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "data", "build", "mimic4", "--raw", str(raw),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "table ICUSTAYS has no column STAY_ID" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_table_names_the_files_expected_and_a_mimic3_folder_is_named(tiny, tmp_path):
    paths, _, _ = tiny
    raw = tmp_path / "raw"
    shutil.copytree(paths["raw"], raw)
    (raw / "hosp" / "diagnoses_icd.csv.gz").unlink()
    with pytest.raises(UsageError, match="table DIAGNOSES_ICD not found, expected hosp/DIAGNOSES_ICD.csv or "):
        build({**paths, "raw": raw}, tmp_path / "out")
    with pytest.raises(UsageError, match="this looks like MIMIC-III .*data build mimic3"):
        mimic4.build(ROOT / "datasets" / "mimic3-demo" / "raw", tmp_path / "out3")
    with pytest.raises(UsageError, match="table CXR_CHEXPERT not found"):
        (tmp_path / "cxr").mkdir()
        shutil.copy(paths["cxr"] / "mimic-cxr-2.0.0-metadata.csv.gz", tmp_path / "cxr")
        build({**paths, "cxr": tmp_path / "cxr"}, tmp_path / "out")


def test_a_truncated_gzip_names_the_table_and_keeps_the_finished_steps_only(tiny, tmp_path):
    paths, _, _ = tiny
    root = tmp_path / "copy"
    shutil.copytree(paths["raw"].parents[1], root)
    note = root / "note" / "note" / "discharge.csv.gz"
    filler = pd.read_csv(note).sample(4000, replace=True, random_state=0)  # big enough that the header reads
    filler["text"] = filler["text"] + pd.Series(range(4000), index=filler.index).astype(str) * 50
    gz(filler, note)
    note.write_bytes(note.read_bytes()[: note.stat().st_size // 2])
    copy = {"raw": root / "mimiciv" / "2.2", "note": root / "note", "cxr": root / "cxr", "split": root / "tvtset.csv"}
    with pytest.raises(UsageError, match=r"discharge.csv.gz: table DISCHARGE is a truncated gzip file"):
        build(copy, tmp_path / "out")
    kept = sorted(p.name for p in (tmp_path / "out" / ".steps").iterdir())
    assert kept == ["chartevents", "episodes", "labevents", "outputevents", "phenotypes", "stays"]
    assert not (tmp_path / "out" / "phenotyping").exists()


# --- the real PhysioNet MIMIC-IV demo ------------------------------------------------------------------

@pytest.mark.skipif(not DEMO.is_dir(), reason=f"the MIMIC-IV demo is not at {DEMO} (EHRBENCH_MIMIC4_DEMO)")
def test_the_real_demo_builds_phenotyping_from_labs_and_says_what_is_missing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmark", "data", "build", "mimic4", "--raw", str(DEMO),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "missing: icu/chartevents not found: the 14 charted variables" in proc.stderr
    assert "only LABEVENTS' (Glucose, Oxygen saturation, pH)" in proc.stderr
    assert "missing: MIMIC-IV-Note not given" in proc.stderr and "the diagnosis task is not built" in proc.stderr
    assert "MIMIC-IV Clinical Database Demo 2.2" in proc.stdout
    assert "phenotyping: 112 samples: 79 train (64 patients), 8 val (8 patients), 25 test (19 patients)" in proc.stdout
    assert "59,798 and 4.575 (expected: the demo is not the full database" in proc.stderr
    out = tmp_path / "out"
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step")
    assert [att.loc[s, "included"] for s in ("icustays", "transfers", "one_icu_stay", "adults", "events_in_icu")] == \
        [140, 129, 112, 112, 112]
    assert att.loc["labevents:ranges", "included"] == 2336 and att.loc["outputevents:itemids", "included"] == 0
    assert not (out / "diagnosis").exists() and len(list((out / "ehr").iterdir())) == 112
    raw = read_split(out, "mimic4", "phenotyping", "train", PHE)
    assert len(raw.keys) == 87 and set(raw.notes) == {""}
