"""The generator's raw MIMIC-III tables built by `ehrbench data build mimic3` give back the generator's own
task files (same stays, split, labels, notes and series), and the build's attrition drops exactly the
rows the raw writer planted to break each rule."""
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.data.extract import mimic3
from benchmark.data.rawgen import bulk, charting, compare, mimic3 as raw
from benchmark.errors import UsageError
from benchmark.protocol import FULL

# Small, with samples without a series and without a note, so that both omissions are exercised.
SPEC = dataclasses.replace(FULL.task("mimic3-phe"), name="raw-mimic3", n_total=150, missing_ehr=0.05)


def build(raw_dir, out, lines=None, **options):
    return mimic3.build(raw_dir, out, mimic3.Options(**options), log=(lines.append if lines is not None else lambda _: None))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rawgen")
    report = raw.write(SPEC, root / "raw", task_files=root / "expected")
    summary = build(root / "raw", root / "built", testset=str(root / "raw" / "testset.csv"))
    return root, report, summary


def listfile(root, split):
    return pd.read_csv(root / "phenotyping" / f"{split}_multimodal_listfile.csv", dtype=str, keep_default_na=False)


def test_the_build_of_the_raw_tables_equals_the_generators_own_task_files(built):
    root, report, summary = built
    assert compare.differences(root / "expected", root / "built") == []
    # Not vacuous: both splits, notes and empty notes, several episodes of a patient, every sample with a series.
    expected = pd.concat([listfile(root / "expected", s) for s in ("train", "test")])
    with_series = expected[expected["stay"] != ""]
    assert summary["stays"]["total"] == len(with_series) == report["stays"]["cohort"] > 100
    assert report["stays"]["without_series"] == (expected["stay"] == "").sum() > 0
    assert summary["stays"]["test"] > 10 and summary["stays"]["train"] > 10
    notes = listfile(root / "built", "train")["notes"]
    assert (notes != "").sum() > 30 and (notes == "").sum() > 10
    assert with_series["stay"].str.contains("_episode2_").any()
    assert report["timing"]["merged"] == 0 and report["timing"]["moved_bin"] == 0 and report["timing"]["max_shift_s"] < 2


def test_every_attrition_row_drops_exactly_the_rows_planted_to_break_its_rule(built):
    root, report, _ = built
    att = pd.read_csv(root / "built" / "attrition.csv", keep_default_na=False)
    assert compare.attrition(report["dropped"], att) == []
    rules = {"transfers", "admission_rows", "one_icu_stay", "adults", "dates:icu_stay", "dates:admission", "dates:death",
             "length_of_stay", "events_in_icu",
             "cohort_diagnoses", "code_dictionary", "benchmark_codes", "episodes:length_of_stay",
             "episodes:icu_period", "episodes:one_per_time", "notes:chart_time", "notes:admission",
             "notes:first_48h", "notes:first_five"}
    rules |= {f"chartevents:{r}" for r in ("itemids", "cohort_subjects", "admission_id", "admission", "icu_stay",
                                           "time_and_value", "before_stay", "cleaning", "spelling", "ranges")}
    rules |= {f"labevents:{r}" for r in ("itemids", "admission_id", "admission", "time_and_value", "cleaning")}
    assert {step for step, n in report["dropped"].items() if n > 0} >= rules  # every rule is met


def test_the_comparison_finds_a_changed_label_note_value_row_or_bin(built, tmp_path):
    root, _, _ = built
    name = listfile(root / "built", "train")["stay"].iloc[0]

    def broken(change) -> list[str]:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(root / "built", copy)
        change(copy)
        return compare.differences(root / "expected", copy)

    def edit_listfile(copy, column, value):
        path = copy / "phenotyping" / "train_multimodal_listfile.csv"
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.loc[0, column] = value(frame.loc[0, column])
        frame.to_csv(path, index=False)

    def edit_series(copy, change):
        path = copy / "ehr" / name
        frame = change(pd.read_csv(path, dtype=str, keep_default_na=False))
        frame.to_csv(path, index=False)

    label = "Shock"
    assert any(label in d for d in broken(lambda c: edit_listfile(c, label, lambda v: str(1 - int(v)))))
    assert any("note of stay" in d for d in broken(lambda c: edit_listfile(c, "notes", lambda v: v + " extra")))
    assert any("period_length" in d for d in broken(lambda c: edit_listfile(c, "period_length", lambda v: str(float(v) + 0.01))))
    assert any("rows where" in d for d in broken(lambda c: edit_series(c, lambda f: f.drop(index=3))))

    def heart(f):
        row = int(np.flatnonzero(f["Heart Rate"].to_numpy() != "")[0])
        f.loc[row, "Heart Rate"] = str(float(f.loc[row, "Heart Rate"]) + 1)
        return f

    assert any("Heart Rate" in d for d in broken(lambda c: edit_series(c, heart)))

    def later(f):  # the last row into the next hourly bin
        f.loc[len(f) - 1, "Hours"] = str(float(f.loc[len(f) - 1, "Hours"]) + 1)
        return f

    assert any("at hour" in d for d in broken(lambda c: edit_series(c, later)))


def test_chart_times_round_up_to_the_second_and_keep_every_event_in_its_bin():
    # Stay 0: 0.0001 h after hour 3 stays in bin 3; hour 3 itself stays in bin 2; two rows 0.36 s apart
    # become a second apart. Stay 1: a row in the period's last second stays inside it, a late row outside.
    stay = np.array([0, 0, 0, 0, 1, 1])
    hours = np.array([2.9999, 3.0, 3.0001, 3.0002, 5.0, 5.1235])
    end = np.array([10, 10, 10, 10, 5.1234, 5.1234])
    sec, inside, timing = charting.chart_seconds(stay, hours, end, end)
    assert sec.tolist()[:4] == [10800, 10801, 10802, 10803] and sec[4] == 18000
    assert np.trunc(sec[:4] / 3600 - 1e-6).tolist() == [2, 3, 3, 3]  # hour 3.0 moved from bin 2 to 3
    assert timing.moved_bin == 1 and timing.merged == 0
    assert inside.tolist() == [True] * 5 + [False] and sec[5] / 3600 > 5.1234 + 1e-6
    sec, _, timing = charting.chart_seconds(np.array([0, 0]), np.array([1.0, 1.0001]), np.array([9.0] * 2), np.array([9.0] * 2))
    assert sec.tolist() == [3600, 3601] and timing.moved_bin == 0  # 1.0001 h rounds up to 3601 s: bin 1 kept


def test_without_the_test_set_every_subject_is_in_training_and_only_listfiles_rerun(built, tmp_path):
    root, report, _ = built
    out = tmp_path / "built"
    shutil.copytree(root / "built", out)
    lines = []
    summary = build(root / "raw", out, lines)  # the packaged testset.csv lists none of the generator's subjects
    assert summary["stays"]["test"] == 0 and summary["stays"]["train"] == report["stays"]["cohort"]
    kept = [line for line in lines if "done before, kept" in line]
    assert len(kept) == 6 and not any("listfiles" in line for line in kept)
    assert set(summary["step_peak_mb"]) == {"listfiles"} and summary["step_peak_mb"]["listfiles"] > 10


def test_a_malformed_or_missing_test_set_is_one_line_naming_the_file(built, tmp_path):
    root, _, _ = built
    bad = tmp_path / "testset.csv"
    bad.write_text("10000001,1\nnot-a-subject,0\n")
    with pytest.raises(UsageError, match=r"testset.csv: not a test set file .* expected lines 'SUBJECT_ID,1'"):
        build(root / "raw", tmp_path / "out", testset=str(bad))
    with pytest.raises(UsageError, match="nowhere.csv: test set file cannot be read"):
        build(root / "raw", tmp_path / "out", testset=str(tmp_path / "nowhere.csv"))
    assert not (tmp_path / "out").exists()  # checked before the first step


def test_the_peak_memory_of_each_step_is_in_the_summary(built):
    _, _, summary = built
    assert set(summary["step_peak_mb"]) == set(summary["step_seconds"]) and summary["step_peak_own"]
    assert max(summary["step_peak_mb"].values()) <= summary["peak_mb"] * 1.01  # sampled within the process peak
    assert all(50 < mb < 2_000 for mb in summary["step_peak_mb"].values())


def test_the_raw_tables_are_the_same_bytes_every_time(tmp_path):
    spec = dataclasses.replace(SPEC, n_total=30)
    digests = []
    for run in ("a", "b"):
        raw.write(spec, tmp_path / run)
        digests.append(hashlib.sha256(b"".join(p.read_bytes() for p in sorted((tmp_path / run).iterdir()))).hexdigest())
    assert digests[0] == digests[1]


def test_scaled_tables_reach_their_share_of_mimic3_rows(tmp_path):
    scale = 0.0002  # 66 k chart rows
    n = bulk.cohort_size(scale)
    report = raw.write(dataclasses.replace(SPEC, n_total=n), tmp_path, bulk.volume(scale, n))
    for table in ("CHARTEVENTS", "LABEVENTS", "NOTEEVENTS", "OUTPUTEVENTS"):
        assert report["tables"][table] >= scale * bulk.MIMIC3[table], table
    assert report["tables"]["CHARTEVENTS"] < 1.01 * scale * bulk.MIMIC3["CHARTEVENTS"]
    for table in ("CHARTEVENTS", "LABEVENTS"):  # MIMIC-III's share of rows of the 17 variables' items
        assert abs(report["mapped_rows"][table] / report["tables"][table] - bulk.MAPPED[table] / bulk.MIMIC3[table]) < 0.02
    lengths = pd.read_csv(tmp_path / "NOTEEVENTS.csv", usecols=["TEXT"], keep_default_na=False)["TEXT"].str.len()
    assert 0.7 * bulk.NOTE_CHARS < lengths.mean() < 1.3 * bulk.NOTE_CHARS


def test_the_cli_writes_the_tables_and_refuses_a_task_it_cannot(tmp_path, capsys):
    assert main(["data", "raw", "mimic3", "--n-total", "20", "--out", str(tmp_path / "raw")]) == 0
    printed = capsys.readouterr().out
    assert "CHARTEVENTS" in printed and "--testset" in printed
    assert json.loads((tmp_path / "raw" / "report.json").read_text())["stays"]["cohort"] == 20
    assert main(["data", "raw", "mimic3", "--task", "syn-phe", "--track", "quick", "--out", str(tmp_path / "x")]) == 2
    assert "layout mimic3-miracl" in capsys.readouterr().err
    assert main(["data", "raw", "mimic3", "--scale", "1.5", "--out", str(tmp_path / "x")]) == 2
