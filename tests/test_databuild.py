"""`ehrbench data build mimic3`: the vendored MIMIC-III demo built end to end, a hand-made database whose
every rule has a known outcome, bad input, and resumable steps."""
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cards import label_names
from benchmark.data.extract import demo, mimic3
from benchmark.data.loaders import read_split
from benchmark.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
DEMO_RAW = ROOT / "datasets" / "mimic3-demo" / "raw"
LABELS = label_names("phenotyping")


def build(raw, out, lines=None, **options):
    return mimic3.build(raw, out, mimic3.Options(**options), log=(lines.append if lines is not None else lambda _: None))


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "mimic3"
    return build(DEMO_RAW, out), out


def listfile(out, split):
    return pd.read_csv(out / "phenotyping" / f"{split}_multimodal_listfile.csv", keep_default_na=False)


# --- the vendored demo ------------------------------------------------------------------------------

def test_the_demo_builds_to_95_train_and_18_test_stays_with_one_episode_file_each(demo_build):
    summary, out = demo_build
    assert summary["stays"] == {"train": 95, "test": 18, "total": 113}
    assert summary["patients"] == {"train": 74, "test": 14}
    assert summary["database"].startswith("MIMIC-III Clinical Database Demo 1.4")
    assert len(list((out / "ehr").iterdir())) == 113 and summary["stays_with_note"] == 0
    assert summary["label_cardinality"] == pytest.approx(5.186, abs=1e-3)
    assert any("41,904" in w and "not the full database" in w for w in summary["warnings"])
    for split, n in (("train", 95), ("test", 18)):  # the loaders read what the build wrote
        raw = read_split(out, "mimic3-miracl", "phenotyping", split, LABELS)
        assert len(raw.keys) == n and all(Path(s).is_file() for s in raw.series) and set(raw.notes) == {""}


def test_the_attrition_rows_chain_and_end_where_the_files_do(demo_build):
    _, out = demo_build
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False)
    assert list(att.columns) == ["step", "included", "excluded", "reason", "unit"]
    for unit, rows in att.groupby("unit", sort=False):
        first = rows.iloc[0]
        assert first["excluded"] == 0, unit
        prev = rows["included"].to_numpy()[:-1]
        assert ((rows["included"] + rows["excluded"]).to_numpy()[1:] == prev).all(), unit
    stays = att[att["unit"] == "stays"].set_index("step")
    assert (stays.loc["icustays", "included"], stays.loc["events_in_icu", "included"]) == (136, 113)
    assert (stays.loc["transfers", "excluded"], stays.loc["one_icu_stay", "excluded"], stays.loc["adults", "excluded"]) == (10, 11, 1)
    splits = att[att["step"].str.startswith("split:")]["included"].sum()
    assert splits == 113
    # Every event left after the last rule is one non-empty cell of one episode file.
    cells = sum(int((pd.read_csv(p, dtype=str, keep_default_na=False).iloc[:, 1:] != "").to_numpy().sum())
                for p in (out / "ehr").iterdir())  # "None" is a GCS spelling, not a missing value
    events = att[att["unit"] == "events"]
    assert events["included"].iloc[0] == att[att["step"] == "chartevents:ranges"]["included"].iloc[0] + \
        att[att["step"] == "labevents:ranges"]["included"].iloc[0]
    assert events["included"].iloc[-1] == cells


def test_labels_are_the_ccs_groups_of_the_admissions_codes(demo_build):
    _, out = demo_build
    both = pd.concat([listfile(out, "train"), listfile(out, "test")]).set_index("stay_id")
    positives = {s: [n for n in LABELS if both.loc[s, n] == 1] for s in (206504, 228977)}
    # By hand from DIAGNOSES_ICD: 10006 (99591, 03819 sepsis; 42731 AF; 4280 CHF; 41401; 25000; 40391)
    assert positives[206504] == ["Cardiac dysrhythmias", "Congestive heart failure; nonhypertensive",
                                 "Coronary atherosclerosis and other heart disease", "Diabetes mellitus without complication",
                                 "Hypertension with complications and secondary hypertension", "Septicemia (except in labor)"]
    # 10019 (5845 AKI, 4019, 5781 melena, 5722 hepatic coma, 51881, 0389/99592 sepsis, 78559 shock)
    assert positives[228977] == ["Acute and unspecified renal failure", "Essential hypertension", "Gastrointestinal hemorrhage",
                                 "Other liver diseases", "Respiratory failure; insufficiency; arrest (adult)",
                                 "Septicemia (except in labor)", "Shock"]
    assert 10019 in listfile(out, "test")["patient_id"].to_numpy()  # testset.csv says 1


def test_the_vendored_tables_match_their_checksums_and_a_changed_one_is_named(tmp_path):
    assert demo.verify(DEMO_RAW)
    copy = tmp_path / "raw"
    shutil.copytree(DEMO_RAW, copy)
    (copy / "PATIENTS.csv.gz").write_bytes(gzip.compress(b"subject_id,dob\n1,2100-01-01 00:00:00\n"))
    with pytest.raises(UsageError, match="PATIENTS.csv.gz: checksum differs"):
        demo.verify(copy)


# --- a hand-made database: every rule with a known outcome ------------------------------------------

T0, T1, T6 = "2150-01-01 00:00:00", "2151-01-01 00:00:00", "2150-06-01 00:00:00"


def _at(base, hours):
    return str(pd.Timestamp(base) + pd.Timedelta(hours=hours))


def write_tiny(raw: Path, gz: bool = False) -> None:
    """Upper-case headers (the full database's spelling), plain CSV or gzip.

    Subjects 7-10 are adults with one ICU stay each whose dates are out of order: 7's OUTTIME is before
    its INTIME, 8's admission is discharged before it is admitted, 9 dies (DEATHTIME) and 10 is dead
    (DOD) before the admission."""
    raw.mkdir(parents=True, exist_ok=True)
    patients = pd.DataFrame({"ROW_ID": range(10), "SUBJECT_ID": range(1, 11), "GENDER": "F",
                             "DOB": ["2100-01-01 00:00:00"] * 3 + ["2140-01-01 00:00:00", "2100-01-01 00:00:00",
                                                                    "1850-06-01 00:00:00"]  # 6: shifted, > 89
                             + ["2100-01-01 00:00:00"] * 4,
                             "DOD": [""] * 9 + ["2149-12-30 00:00:00"]})
    stays = pd.DataFrame({
        "SUBJECT_ID": [1, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10], "HADM_ID": [11, 12, 21, 31, 31, 41, 51, 61, 71, 81, 91, 101],
        "ICUSTAY_ID": [111, 121, 211, 311, 312, 411, 511, 611, 711, 811, 911, 1011],
        "FIRST_CAREUNIT": "MICU", "LAST_CAREUNIT": ["MICU", "MICU", "SICU"] + ["MICU"] * 9,
        "FIRST_WARDID": 1, "LAST_WARDID": 1,
        "INTIME": [T0, T1, T0, T0, _at(T0, 30), T0, T0, T6, T0, T0, T0, T0],
        "OUTTIME": [_at(T0, 48), _at(T1, 24), _at(T0, 24), _at(T0, 20), _at(T0, 50), _at(T0, 24), _at(T0, 24), _at(T6, 12),
                    _at(T0, -5), _at(T0, 24), _at(T0, 24), _at(T0, 24)],
        "LOS": [2.0, 1.0, 1.0, 20 / 24, 20 / 24, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0]})
    admissions = stays.drop_duplicates("HADM_ID")[["SUBJECT_ID", "HADM_ID"]].reset_index(drop=True)
    admissions["ADMITTIME"] = [_at(t, -12) for t in stays.drop_duplicates("HADM_ID")["INTIME"]]
    admissions["DISCHTIME"] = [_at(t, 72) for t in stays.drop_duplicates("HADM_ID")["INTIME"]]
    admissions.loc[admissions["HADM_ID"] == 81, "DISCHTIME"] = _at(T0, -24)
    admissions["DEATHTIME"] = np.where(admissions["HADM_ID"] == 91, _at(T0, -48), "")
    diagnoses = pd.DataFrame({"SUBJECT_ID": [1, 1, 1, 1, 1, 6], "HADM_ID": [11, 11, 11, 11, 12, 61], "SEQ_NUM": 1,
                              "ICD9_CODE": ["0389", "4019", "V7651", "585", "5849", "4280"]})
    dictionary = pd.DataFrame({"ROW_ID": range(5), "ICD9_CODE": ["0389", "4019", "V7651", "5849", "4280"],
                               "SHORT_TITLE": "x"})  # no 585 (chronic kidney disease): as MIMIC-III's lacks it
    ev = lambda s, h, i, item, t, v, u="": dict(SUBJECT_ID=s, HADM_ID=h, ICUSTAY_ID=i, ITEMID=item, CHARTTIME=t,  # noqa: E731
                                              VALUE=v, VALUEUOM=u)
    chart = pd.DataFrame([
        ev(1, 11, 111, 211, _at(T0, 1), "80", "BPM"), ev(1, 11, 111, 211, _at(T0, 1), "90", "BPM"),  # one kept: 90
        ev(1, 11, 111, 678, _at(T0, 2), "98.6", "Deg. F"), ev(1, 11, 111, 3581, _at(T0, 2), "220"),  # F -> C, lb -> kg
        ev(1, 11, 111, 723, _at(T0, 3), "Oriented"), ev(1, 11, 111, 723, _at(T0, 4), "Sleeping"),  # unknown spelling
        ev(1, 11, 111, 211, _at(T0, 5), "ERROR"), ev(1, 11, 111, 211, _at(T0, 6), "5000"),  # unusable, outlier
        ev(1, 11, 111, 455, _at(T0, 7), "120/80"), ev(1, 11, 111, 8441, _at(T0, 7), "120/80"),  # SBP 120, DBP 80
        ev(1, 11, 111, 211, _at(T0, 72), "85"),  # after the ICU stay
        ev(1, None, 111, 211, _at(T0, 8), "88"), ev(1, 11, 121, 211, _at(T0, 8), "77"),  # no admission; other stay
        ev(2, 21, 211, 211, _at(T0, 1), "60"), ev(1, 11, 111, 999999, _at(T0, 1), "1"),  # no cohort stay; no variable
        ev(1, 12, None, 211, _at(T1, 3), "70"), ev(6, 61, 611, 211, _at(T6, 1), "100"),  # 121 recovered; 611
        ev(1, 11, 111, 211, _at(T0, -1), "81"),  # charted before the ICU stay its ICUSTAY_ID names: out of order
        ev(1, 11, None, 211, _at(T0, -1), "82"),  # no stay id, before the ICU admission: outside the ICU period
    ])
    labs = pd.DataFrame([ev(1, 11, None, 50931, _at(T0, 5), "120"), ev(1, None, None, 50931, _at(T0, 6), "130"),
                         ev(1, 11, None, 50868, _at(T0, 5), "12")]).drop(columns="ICUSTAY_ID")
    note = lambda h, t, text: dict(SUBJECT_ID=1, HADM_ID=h, CHARTDATE="", CHARTTIME=t, CATEGORY="Nursing", TEXT=text)  # noqa: E731
    notes = pd.DataFrame([note(11, _at(T0, 6), "Note 6: Pt. stable,\nBP ok!")]
                         + [note(11, _at(T0, k), f"Note {k}: Pt. stable,\nBP ok!") for k in range(1, 6)]
                         + [note(11, _at(T0, -1), "before"), note(11, _at(T0, 49), "after"), note(11, "", "untimed"),
                            note(12, _at(T1, 2), "Second stay.")])
    suffix = ".csv.gz" if gz else ".csv"
    for name, frame in (("PATIENTS", patients), ("ADMISSIONS", admissions), ("ICUSTAYS", stays),
                        ("DIAGNOSES_ICD", diagnoses), ("D_ICD_DIAGNOSES", dictionary), ("CHARTEVENTS", chart), ("LABEVENTS", labs), ("NOTEEVENTS", notes)):
        frame.to_csv(raw / f"{name}{suffix}", index=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    raw = tmp_path_factory.mktemp("tiny") / "raw"
    write_tiny(raw)
    return raw


def test_the_cohort_rules_drop_transfers_multi_stay_admissions_children_and_stays_without_events(tiny, tmp_path):
    summary = build(tiny, tmp_path / "out")
    att = pd.read_csv(tmp_path / "out" / "attrition.csv", keep_default_na=False)
    stays = att[att["unit"] == "stays"].set_index("step")[["included", "excluded"]]
    assert stays.to_dict("index") == {
        "icustays": {"included": 12, "excluded": 0}, "transfers": {"included": 11, "excluded": 1},
        "admission_rows": {"included": 11, "excluded": 0}, "one_icu_stay": {"included": 9, "excluded": 2},
        "adults": {"included": 8, "excluded": 1}, "dates:icu_stay": {"included": 7, "excluded": 1},
        "dates:admission": {"included": 6, "excluded": 1}, "dates:death": {"included": 4, "excluded": 2},
        "length_of_stay": {"included": 4, "excluded": 0}, "events_in_icu": {"included": 3, "excluded": 1}}
    assert summary["stays"] == {"train": 2, "test": 1, "total": 3}  # subject 6 is a test subject of testset.csv
    assert summary["database"].startswith("MIMIC-III subset of 10 patients")


def test_events_are_validated_cleaned_and_one_per_chart_time(tiny, tmp_path):
    build(tiny, tmp_path / "out")
    att = pd.read_csv(tmp_path / "out" / "attrition.csv", keep_default_na=False).set_index("step")
    dropped = {k: att.loc[f"chartevents:{k}", "excluded"] for k in
               ("itemids", "cohort_subjects", "admission_id", "icu_stay", "cleaning", "spelling", "ranges")}
    assert dropped == {"itemids": 1, "cohort_subjects": 1, "admission_id": 1, "icu_stay": 1, "cleaning": 1,
                       "spelling": 1, "ranges": 1}
    assert "2 events without one took their admission's stay" in att.loc["chartevents:icu_stay", "reason"]
    assert (att.loc["labevents:itemids", "excluded"], att.loc["labevents:admission_id", "excluded"]) == (1, 1)
    assert (att.loc["episodes:icu_period", "excluded"], att.loc["episodes:one_per_time", "excluded"]) == (2, 1)
    series = pd.read_csv(tmp_path / "out" / "ehr" / "1_episode1_timeseries.csv", dtype=str, keep_default_na=False)
    assert series["Hours"].astype(float).tolist() == [1.0, 2.0, 3.0, 5.0, 7.0]
    row = series.set_index(series["Hours"].astype(float))
    assert row.loc[1.0, "Heart Rate"] == "90.0"  # the larger of two values at one time
    assert float(row.loc[2.0, "Temperature"]) == pytest.approx(37.0)
    assert float(row.loc[2.0, "Weight"]) == pytest.approx(220 * 0.453592)
    assert row.loc[3.0, "Glascow coma scale verbal response"] == "Oriented"
    assert row.loc[5.0, "Glucose"] == "120.0"  # a lab event, which has no ICU stay id of its own
    assert (row.loc[7.0, "Systolic blood pressure"], row.loc[7.0, "Diastolic blood pressure"]) == ("120.0", "80.0")
    second = pd.read_csv(tmp_path / "out" / "ehr" / "1_episode2_timeseries.csv")
    assert second["Hours"].tolist() == [3.0] and second["Heart Rate"].tolist() == [70.0]


def test_labels_and_notes_of_the_hand_made_stays(tiny, tmp_path):
    build(tiny, tmp_path / "out")
    train, test = listfile(tmp_path / "out", "train"), listfile(tmp_path / "out", "test")
    assert list(train.columns) == ["patient_id", "stay_id", "stay", "period_length", "notes", *LABELS]
    by_stay = pd.concat([train, test]).set_index("stay_id")
    positive = {s: [n for n in LABELS if by_stay.loc[s, n] == 1] for s in by_stay.index}
    # 585 is not in D_ICD_DIAGNOSES: no chronic kidney disease, as the reference's join drops the code.
    assert positive == {111: ["Essential hypertension", "Septicemia (except in labor)"],
                        121: ["Acute and unspecified renal failure"], 611: ["Congestive heart failure; nonhypertensive"]}
    assert by_stay.loc[111, "period_length"] == 48.0 and by_stay.loc[111, "stay"] == "1_episode1_timeseries.csv"
    # The first five notes within 48 h, by chart time, lower case, no punctuation or line breaks.
    assert by_stay.loc[111, "notes"] == " ".join(f"note {k} pt stable bp ok" for k in range(1, 6))
    assert by_stay.loc[121, "notes"] == "second stay" and by_stay.loc[611, "notes"] == ""


def test_all_diagnosis_codes_labels_from_codes_outside_the_dictionary_too(tiny, tmp_path):
    build(tiny, tmp_path / "out", code_dictionary=False)
    train = listfile(tmp_path / "out", "train").set_index("stay_id")
    assert train.loc[111, "Chronic kidney disease"] == 1 and train.loc[121, "Chronic kidney disease"] == 0


def test_the_first_admission_only_switch_reproduces_the_reference_notes_bug(tiny, tmp_path):
    build(tiny, tmp_path / "out", first_admission_only=True)
    train = listfile(tmp_path / "out", "train").set_index("stay_id")
    assert train.loc[121, "notes"] == "" and train.loc[111, "notes"].startswith("note 1 pt stable")


def test_gzip_tables_and_several_stay_buckets_build_the_same_files(tiny, tmp_path):
    write_tiny(tmp_path / "gz", gz=True)
    build(tiny, tmp_path / "a")
    build(tmp_path / "gz", tmp_path / "b", buckets=3)
    assert len(list((tmp_path / "b" / ".steps" / "chartevents").glob("chartevents-*.csv"))) == 3
    for split in ("train", "test"):
        assert listfile(tmp_path / "a", split).equals(listfile(tmp_path / "b", split))
    for path in (tmp_path / "a" / "ehr").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / "ehr" / path.name).read_bytes()


def test_without_noteevents_every_note_is_empty_and_the_build_says_so(tiny, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny, raw)
    (raw / "NOTEEVENTS.csv").unlink()
    lines = []
    summary = build(raw, tmp_path / "out", lines)
    assert any("NOTEEVENTS not found" in line for line in lines)
    assert summary["stays_with_note"] == 0 and any("note modality is absent" in w for w in summary["warnings"])


# --- resumable steps ---------------------------------------------------------------------------------

def test_a_second_build_keeps_every_finished_step_and_redoes_only_what_changed(tiny, tmp_path):
    out = tmp_path / "out"
    first, second, third, fourth = [], [], [], []
    build(tiny, out, first)
    assert not any("done before" in line for line in first)
    listfiles = (out / "phenotyping" / "train_multimodal_listfile.csv").read_bytes()
    build(tiny, out, second)
    assert sum("done before, kept" in line for line in second) == 7
    assert (out / "phenotyping" / "train_multimodal_listfile.csv").read_bytes() == listfiles
    shutil.rmtree(out / ".steps" / "notes")  # a missing output: that step and the ones after it that read it
    build(tiny, out, third)
    redone = [line.split()[1].rstrip(":") for line in third if line.endswith("...")]
    assert redone == ["notes", "listfiles"]
    build(tiny, out, fourth, first_admission_only=True)  # an option a step reads
    assert [line.split()[1] for line in fourth if line.endswith("...")] == ["notes", "listfiles"]


# --- dates out of order ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_built(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_built") / "out"
    return build(tiny, out), pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step"), out


@pytest.mark.parametrize("step, dropped, reason, gone", [
    ("dates:icu_stay", 1, "OUTTIME before INTIME", [711]),
    ("dates:admission", 1, "DISCHTIME before its ADMITTIME", [811]),
    ("dates:death", 2, "ADMISSIONS.DEATHTIME before ADMITTIME; PATIENTS.DOD a day before", [911, 1011]),
])
def test_a_stay_whose_dates_are_out_of_order_is_dropped_counted_and_warned(tiny_built, step, dropped, reason, gone):
    summary, att, out = tiny_built
    assert att.loc[step, "excluded"] == dropped and att.loc[step, "unit"] == "stays" and reason in att.loc[step, "reason"]
    assert any(w.startswith(f"dates out of order: {dropped} stays dropped at {step} (") for w in summary["warnings"])
    kept = pd.concat([listfile(out, "train"), listfile(out, "test")])["stay_id"]
    assert not kept.isin(gone).any()


def test_a_chart_event_dated_before_the_stay_its_stay_id_names_is_dropped_counted_and_warned(tiny_built):
    summary, att, out = tiny_built
    assert att.loc["chartevents:before_stay", "excluded"] == 1
    assert att.loc["labevents:before_stay", ("excluded", "reason")].tolist() == [
        0, "(no ICUSTAY_ID in LABEVENTS: no stay to be before)"]
    assert "dates out of order: 1 chartevents rows dropped at chartevents:before_stay" in " ".join(summary["warnings"])
    # The same hour without a stay id claims no stay: it is outside the ICU period, not out of order.
    assert att.loc["episodes:icu_period", "excluded"] == 2
    series = pd.read_csv(out / "ehr" / "1_episode1_timeseries.csv")
    assert series["Hours"].min() > 0


def test_a_check_whose_columns_the_tables_lack_is_not_run_and_says_so(demo_build):
    _, out = demo_build  # the vendored demo keeps only the columns the reference reads
    att = pd.read_csv(out / "attrition.csv", keep_default_na=False).set_index("step")
    assert att.loc["dates:admission", "reason"] == "not checked: ADMISSIONS has no ADMITTIME and DISCHTIME columns"
    assert att.loc["dates:death", "reason"].startswith("not checked: no DEATHTIME in ADMISSIONS, no DOD in PATIENTS")
    assert att.loc["dates:icu_stay", "excluded"] == 0


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("table, column, value, row", [("ICUSTAYS", "INTIME", "2150-01-01T00:00", 2),
                                                       ("CHARTEVENTS", "CHARTTIME", "01/01/2150 01:00", 3),
                                                       ("ADMISSIONS", "DISCHTIME", "soon", 1)])
def test_an_unparsable_timestamp_names_the_file_the_column_the_row_and_the_form(tiny, tmp_path, table, column, value, row):
    raw = tmp_path / "raw"
    shutil.copytree(tiny, raw)
    frame = pd.read_csv(tiny / f"{table}.csv", dtype=str, keep_default_na=False)
    frame.loc[row - 1, column] = value
    frame.to_csv(raw / f"{table}.csv", index=False)
    expected = (f"{raw / table}.csv: table {table} column {column}: {value!r} (data row {row}) is not a timestamp, "
                f"expected 'YYYY-MM-DD HH:MM:SS'")
    with pytest.raises(UsageError) as caught:
        build(raw, tmp_path / "out")
    assert str(caught.value) == expected


def test_a_missing_column_is_one_line_naming_the_table_and_nothing_is_written(tiny, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny, raw)
    pd.read_csv(tiny / "ICUSTAYS.csv").drop(columns="LOS").to_csv(raw / "ICUSTAYS.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "benchmark", "data", "build", "mimic3", "--raw", str(raw),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "table ICUSTAYS has no column LOS" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_table_is_named_with_the_files_expected(tiny, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny, raw)
    (raw / "DIAGNOSES_ICD.csv").unlink()
    with pytest.raises(UsageError, match="table DIAGNOSES_ICD not found, expected DIAGNOSES_ICD.csv or DIAGNOSES_ICD.csv.gz"):
        build(raw, tmp_path / "out")


def test_a_truncated_gzip_names_the_table_and_keeps_the_finished_steps_only(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DEMO_RAW, raw)
    data = (raw / "LABEVENTS.csv.gz").read_bytes()
    (raw / "LABEVENTS.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"LABEVENTS.csv.gz: table LABEVENTS is a truncated gzip file"):
        build(raw, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / ".steps").iterdir()) == ["chartevents", "phenotypes", "stays"]
    assert not (tmp_path / "out" / "phenotyping").exists() and not (tmp_path / "out" / "ehr").exists()


# --- the demo track --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_demo_track_builds_into_the_cache_and_trains(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmark", "bench", "--method", "bce", "--track", "demo",
                           "--noise", "sym-20", "--seeds", "30", "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bce mimic3-demo sym-20" in proc.stdout and "track demo / task mimic3-demo" in proc.stdout
    assert np.isfinite(float(proc.stdout.split("mAP ")[1].split()[0]))
