"""Bad input in task files: each gives a clear error naming the file, or a documented handling."""
import numpy as np
import pytest

from benchmark.cards import label_names
from benchmark.data.loaders import EPISODE_HEADER, read_episodes, read_split
from benchmark.errors import UsageError

PHE = label_names("phenotyping")
DIA = label_names("diagnosis")


def write_task(root, rows, header=None, kind="phenotyping", split_files=("train", "val", "test")):
    names = PHE if kind == "phenotyping" else DIA
    task_dir = root / kind
    task_dir.mkdir(parents=True, exist_ok=True)
    (root / "ehr").mkdir(exist_ok=True)
    key, end = ("stay_id", "period_length") if kind == "phenotyping" else ("study_id", "period_len")
    header = header or ["subject_id", key, "time_series", end, "past_medical_history", *names]
    for split in split_files:
        lines = [",".join(f'"{h}"' if "," in h else h for h in header)] + (rows if split == "train" else [])
        (task_dir / f"{split}_multimodal_listfile.csv").write_text("\n".join(lines) + "\n")
    return root


def row(subject, key, series, end, note, labels):
    return ",".join([str(subject), str(key), series, str(end), note, *labels])


def episode(root, name, body):
    (root / "ehr" / name).write_text(",".join(EPISODE_HEADER) + "\n" + body)


def ok_row(key=1, note="past medical history htn", series="", labels=None):
    return row(10, key, series, 24.0, note, labels or ["0"] * 25)


def test_a_valid_listfile_reads_with_quoted_fields_and_empty_notes(tmp_path):
    root = write_task(tmp_path, [ok_row(1, '"history, with a comma"'), ok_row(2, "")])
    raw = read_split(root, "mimic4", "phenotyping", "train", PHE)
    assert raw.keys == ["1", "2"] and raw.notes == ["history, with a comma", ""]  # '' = no note
    assert raw.series == [None, None] and raw.labels.shape == (2, 25)


def test_missing_listfile_names_the_pipeline_step(tmp_path):
    with pytest.raises(UsageError, match=r"val_multimodal_listfile.csv: file not found \(made by mimic4extract"):
        write_task(tmp_path, [ok_row()], split_files=("train",))
        read_split(tmp_path, "mimic4", "phenotyping", "train", PHE)


def test_missing_column_is_named(tmp_path):
    header = ["subject_id", "stay_id", "time_series", "past_medical_history", *PHE]
    root = write_task(tmp_path, [], header=header)
    with pytest.raises(UsageError, match=r"missing column 'period_length' or 'period_len'"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)


def test_label_column_count_mismatch(tmp_path):
    header = ["subject_id", "stay_id", "time_series", "period_length", "past_medical_history", *PHE[:24]]
    root = write_task(tmp_path, [], header=header)
    with pytest.raises(UsageError, match="24 label columns after 'past_medical_history', expected 25"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)


def test_label_columns_out_of_order(tmp_path):
    header = ["subject_id", "stay_id", "time_series", "period_length", "past_medical_history", PHE[1], PHE[0], *PHE[2:]]
    root = write_task(tmp_path, [], header=header)
    with pytest.raises(UsageError, match="label column 'Acute cerebrovascular disease' where 'Acute and unspecified renal failure' was expected"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)


def test_bad_label_value(tmp_path):
    root = write_task(tmp_path, [ok_row(labels=["0"] * 24 + ["2"])])
    with pytest.raises(UsageError, match="line 2: label 'Shock' is '2', expected 1, 0, -1 or blank"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)


def test_duplicate_keys_are_refused_not_merged(tmp_path):
    root = write_task(tmp_path, [ok_row(7), ok_row(8), ok_row(7)])
    with pytest.raises(UsageError, match=r"duplicate sample key '7' \(lines \[2, 4\]\)"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)


def test_non_numeric_period_length(tmp_path):
    root = write_task(tmp_path, [row(10, 1, "", "soon", "x", ["0"] * 25)])
    with pytest.raises(UsageError, match="line 2: column 'period_length' is 'soon', expected a number of hours"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)


def test_chexpert_uncertain_and_missing_labels_follow_the_named_policy(tmp_path):
    root = write_task(tmp_path, [row(10, 1, "", 4.0, "x", ["1.0", "-1.0", "", "0.0"] + [""] * 10)], kind="diagnosis")
    negative = read_split(root, "mimic4", "diagnosis", "train", DIA)
    positive = read_split(root, "mimic4", "diagnosis", "train", DIA, uncertain="positive")
    assert negative.labels[0, :4].tolist() == [1, 0, 0, 0]
    assert positive.labels[0, :4].tolist() == [1, 1, 0, 0]
    with pytest.raises(UsageError, match="unknown uncertain-label policy 'ignore'"):
        read_split(root, "mimic4", "diagnosis", "train", DIA, uncertain="ignore")


def test_truncated_episode_row_names_file_and_line(tmp_path):
    write_task(tmp_path, [])
    episode(tmp_path, "a.csv", "0.5,,60,,,,,,,80,,,,,,,,\n1.5,,61,,,\n")
    with pytest.raises(UsageError, match=r"a.csv line 3: 6 fields, expected 18 \(truncated or malformed row\)"):
        read_episodes([str(tmp_path / "ehr" / "a.csv")])


def test_file_cut_mid_row_without_newline(tmp_path):
    write_task(tmp_path, [])
    episode(tmp_path, "b.csv", "0.5,,60,,,,,,,80,,,,,,,,\n1.5,,61")
    with pytest.raises(UsageError, match=r"b.csv line 3: 3 fields, expected 18"):
        read_episodes([str(tmp_path / "ehr" / "b.csv")])


def test_wrong_episode_header(tmp_path):
    write_task(tmp_path, [])
    (tmp_path / "ehr" / "c.csv").write_text("Hours,Heart Rate\n0.5,80\n")
    with pytest.raises(UsageError, match=r"c.csv: header is 'Hours,Heart Rate', expected 'Hours,Capillary refill rate"):
        read_episodes([str(tmp_path / "ehr" / "c.csv")])


def test_empty_episode_file(tmp_path):
    write_task(tmp_path, [])
    (tmp_path / "ehr" / "d.csv").write_text("")
    with pytest.raises(UsageError, match="d.csv: empty file, expected a header line"):
        read_episodes([str(tmp_path / "ehr" / "d.csv")])


def test_missing_episode_file(tmp_path):
    with pytest.raises(UsageError, match=r"nope.csv: episode file not found \(made by mimic4extract"):
        read_episodes([str(tmp_path / "nope.csv")])


def test_non_numeric_hours(tmp_path):
    write_task(tmp_path, [])
    episode(tmp_path, "e.csv", "abc,,60,,,,,,,80,,,,,,,,\n")
    with pytest.raises(UsageError, match="e.csv line 2: Hours is 'abc', expected a finite number"):
        read_episodes([str(tmp_path / "ehr" / "e.csv")])


def test_non_numeric_value_and_unknown_category_are_named(tmp_path):
    from benchmark.data import series_arrays
    from benchmark.protocol import SMOKE

    spec = SMOKE.task("syn-phe")
    write_task(tmp_path, [ok_row(1, series="f.csv"), ok_row(2, series="g.csv")])
    episode(tmp_path, "f.csv", "0.5,,60,,,,,,,80,,,,,,,,\n1.5,,61,,,,,,,eighty,,,,,,,,\n")
    episode(tmp_path, "g.csv", "0.5,,60,,,,,,,80,,,,,,,,\n")
    raw = read_split(tmp_path, "mimic4", "phenotyping", "train", PHE)
    with pytest.raises(UsageError, match="f.csv line 3: value 'eighty' of channel 'Heart Rate' is not a finite number"):
        series_arrays(raw, spec)
    episode(tmp_path, "f.csv", "0.5,,60,,,,,,,80,,,,,,,,\n")
    episode(tmp_path, "g.csv", "0.5,,60,,Eyes open,,,,,80,,,,,,,,\n")
    with pytest.raises(UsageError, match=r"g.csv line 2: unknown value 'Eyes open' for categorical channel "
                                          r"'Glascow coma scale eye opening'; expected one of \['To Pain'"):
        series_arrays(raw, spec)


def test_shared_episode_file_is_read_per_sample_up_to_its_own_end(tmp_path):
    from benchmark.data import series_arrays
    from benchmark.protocol import SMOKE

    spec = SMOKE.task("syn-dia")
    write_task(tmp_path, [row(10, 1, "s.csv", 2.0, "x", [""] * 14), row(10, 2, "s.csv", 6.0, "x", [""] * 14),
                          row(11, 3, "", 0.0, "", [""] * 14)], kind="diagnosis")
    episode(tmp_path, "s.csv", "0.5,,,,,,,,,80,,,,,,,,\n5.5,,,,,,,,,120,,,,,,,,\n")
    raw = read_split(tmp_path, "mimic4", "diagnosis", "train", DIA)
    flat, offsets = series_arrays(raw, spec)
    assert np.diff(offsets).tolist() == [2, 6, 0]  # study-time bins; the third has no series


def test_harutyunyan_layout_reads_stays_patients_and_series_without_notes(tmp_path):
    from benchmark.data import series_arrays
    from benchmark.protocol import SMOKE

    split_dir = tmp_path / "phenotyping" / "train"
    split_dir.mkdir(parents=True)
    (split_dir / "listfile.csv").write_text(
        "stay,period_length," + ",".join(PHE) + "\n"
        "123_episode1_timeseries.csv,3.5," + ",".join(["1"] + ["0"] * 24) + "\n"
        "123_episode2_timeseries.csv,2.0," + ",".join(["0"] * 24 + ["1"]) + "\n")
    for name, hr in (("123_episode1_timeseries.csv", "80"), ("123_episode2_timeseries.csv", "90")):
        (split_dir / name).write_text(",".join(EPISODE_HEADER) + "\n" + f"0.5,,,,,,,,,{hr},,,,,,,,\n")
    raw = read_split(tmp_path, "mimic3-benchmark", "phenotyping", "train", PHE)
    assert raw.patient_id.tolist() == [123, 123] and raw.notes == ["", ""]
    assert raw.labels[:, 0].tolist() == [1, 0] and raw.labels[:, 24].tolist() == [0, 1]
    flat, offsets = series_arrays(raw, SMOKE.task("syn-phe"))
    assert np.diff(offsets).tolist() == [4, 2]
    bad = tmp_path / "phenotyping" / "test"
    bad.mkdir()
    (bad / "listfile.csv").write_text("stay,period_length," + ",".join(PHE) + "\nstay1.csv,3.0," + ",".join(["0"] * 25) + "\n")
    with pytest.raises(UsageError, match="stay 'stay1.csv' is not named SUBJECT_episodeK_timeseries.csv"):
        read_split(tmp_path, "mimic3-benchmark", "phenotyping", "test", PHE)
