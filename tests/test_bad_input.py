"""Malformed input to every user-facing parser gives one clear error naming the thing, never a traceback.

Two halves: a table of malformed inputs, each with the message the user reads (CLI arguments, method
manifests, run records, listfiles, episode CSVs; noise strings are in test_protocol.py), and
property-based fuzzing of these parsers and the noise strings with hypothesis: whatever the input, the
outcome is a parsed value or our error.
"""
import copy
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.cli import main
from benchmark.data import series_arrays
from benchmark.data.loaders import EPISODE_HEADER, read_episodes, read_split
from benchmark.errors import RecordError, UsageError
from benchmark.protocol import SMOKE, parse_noise
from benchmark.records import RecordStore, validate
from benchmark.registry import read_manifest
from record_factory import make_record
from test_loaders import PHE, episode, ok_row, write_task

METHODS = Path(__file__).parent.parent / "methods"
# CI runs the same 150 examples per parser every time (derandomized); EHRBENCH_FUZZ_EXAMPLES=N explores N new ones.
EXAMPLES = int(os.environ.get("EHRBENCH_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=EXAMPLES or 150, derandomize=not EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- CLI arguments -----------------------------------------------------------------------------

BENCH = ["bench", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--device", "cpu"]


@pytest.mark.parametrize("argv, message", [
    (BENCH + ["--seeds", "30,-5"], "ehrbench: error: --seeds: seed -5 is not in [0, 2**32)"),
    (BENCH + ["--seeds", "4294967296"], "ehrbench: error: --seeds: seed 4294967296 is not in [0, 2**32)"),
    (BENCH + ["--set", "modalities=[1"], "ehrbench: error: --set modalities: value '[1' is not valid YAML"),
    (BENCH + ["--set", "=3"], "ehrbench: error: --set: expected KEY=VALUE, got '=3'"),
    (BENCH + ["--set", "structural_mask=7"], "ehrbench: error: method 'bce': hyper-parameter 'structural_mask' must be str, got int 7"),
    (BENCH + ["--tasks", "syn-ph"], "ehrbench: error: unknown task 'syn-ph' in track 'smoke'; did you mean 'syn-phe'?"),
    (BENCH[:2] + ["bce,../bce"] + BENCH[3:], "ehrbench: error: unknown method '../bce'"),
    (BENCH[:-1] + ["gpu"], "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    (BENCH[:-1] + ["cuda:x"], "argument --device: expected auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    (BENCH + ["--length-chunks", "0"], "argument --length-chunks: expected a positive integer, got '0'"),
    (BENCH + ["--jobs", "two"], "argument --jobs: expected a non-negative integer, got 'two'"),
    (BENCH + ["--jobs", "-2"], "argument --jobs: expected a non-negative integer, got '-2'"),
    (BENCH + ["--runs-per-gpu", "-1"], "argument --runs-per-gpu: expected a non-negative integer, got '-1'"),
    (BENCH + ["--noise-seed", "random"], "argument --noise-seed: invalid choice: 'random'"),
    (BENCH + ["--precision", "fp16"], "argument --precision: invalid choice: 'fp16'"),
    (BENCH + ["--note-scale", "-1"], "argument --note-scale: expected a number of at least 0"),
    (BENCH + ["--note-scale", "long"], "argument --note-scale: expected a number of at least 0"),
    (["methods", "describe", "--note-dim", "-1"], "argument --note-dim: expected a positive integer, got '-1'"),
    (["data", "prepare", "nope"], "ehrbench: error: unknown task 'nope' in track 'quick'; valid choices: syn-phe"),
    (["leaderboard", "--alpha", "x"], "argument --alpha: invalid float value: 'x'"),
    (BENCH + ["--tasks", ","], "ehrbench: error: --tasks: no value in ','; expected a comma-separated list"),
    (BENCH + ["--partition", "gpu"], "ehrbench: error: --partition: a setting of submitted jobs, but the executor is "
     "local (runs on this machine); add --executor slurm (or submitit-local, local-gpus), or leave --partition out"),
    (BENCH + ["--no-wait"], "ehrbench: error: --no-wait: a setting of submitted jobs, but the executor is local"),
    (["data", "prepare", "syn-phe", "--track", "smoke", "--root", "/x"], "ehrbench: error: --root /x: task 'syn-phe' "
     "of track 'smoke' is synthetic (generated, not read from files); --root is for real tasks (track paper)"),
])
def test_malformed_cli_arguments_are_one_line(argv, message, capsys, tmp_path):
    results = ["--results", str(tmp_path / "r")] if argv[0] == "bench" else []
    with mock.patch("benchmark.runner.execute", side_effect=AssertionError("nothing may run")):
        try:
            code = main(argv + results)
        except SystemExit as e:  # argparse: usage line, then the error line
            code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_malformed_normaliser_file_is_refused_before_any_run(tmp_path, capsys):
    (tmp_path / "norm.json").write_text('{"means": [0], "stds": [1]}')
    with mock.patch("benchmark.runner.execute", side_effect=AssertionError("nothing may run")):
        assert main(BENCH + ["--normaliser", str(tmp_path / "norm.json"), "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"ehrbench: error: {tmp_path / 'norm.json'}: 'means' and 'stds' must each have 76 values\n"
    assert not (tmp_path / "r").exists()


def test_a_methods_folder_that_is_not_there_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path / "nowhere"))
    assert main(BENCH + ["--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (f"ehrbench: error: methods folder {tmp_path / 'nowhere'} (EHRBENCH_METHODS): no "
                                       f"such folder, expected a folder of method submissions\n")


def test_a_results_path_that_is_a_file_is_refused_before_any_run(tmp_path, capsys):
    (tmp_path / "r").write_text("")
    with mock.patch("benchmark.runner.execute", side_effect=AssertionError("nothing may run")):
        assert main(BENCH + ["--results", str(tmp_path / "r")]) == 2
    assert f"ehrbench: error: --results {tmp_path / 'r'}: is a file, expected a folder of run records" in capsys.readouterr().err


def test_control_characters_in_an_echoed_name_keep_the_error_on_one_line(tmp_path, capsys):
    assert main(["bench", "--method", "bc\ne", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "ehrbench: error: unknown method 'bc\\ne'; did you mean 'bce'?; valid choices: " \
        "asl, bce, focal, gce, m3care, medfuse, miracl, mllsc, multit\n"


# --- table and leaderboard --------------------------------------------------------------------

@pytest.fixture
def smoke_only(tmp_path):
    """A results folder holding two smoke-track records only (as a first `bench --track smoke` leaves)."""
    from record_factory import make_record, write_records

    write_records(tmp_path / "r", [make_record(track="smoke", seed=s) for s in (30, 40)])
    (tmp_path / "file").write_text("")
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["table", "--track", "smoke", "--tasks", "syn-ph"], "unknown task 'syn-ph' in track 'smoke'; did you mean 'syn-phe'?; "
     "valid choices: syn-dia, syn-phe"),
    (["table", "--track", "smoke", "--tasks", ","], "--tasks: no value in ','; expected a comma-separated list (e.g. "
     "syn-phe,syn-dia), or leave the flag out for the defaults"),
    (["table", "--track", "quik"], "unknown track 'quik'; did you mean 'quick'?; valid choices: demo, full, paper, quick, smoke"),
    (["table", "--track", "quick"], "--results {r}: no records of track 'quick'; it holds records of track smoke "
     "(--track smoke)"),
    (["table", "--track", "smoke", "--results", "{tmp}/nowhere"], "--results {tmp}/nowhere: no such folder; expected a "
     "folder of run records (as `ehrbench bench --results {tmp}/nowhere` writes)"),
    (["table", "--track", "smoke", "--results", "{tmp}/file"], "--results {tmp}/file: is a file, expected a folder of "
     "run records"),
    (["leaderboard", "--out", "{tmp}/site"], "--results {r}: nothing to render: left out 2 record(s) of track smoke (the "
     "smoke track is for tests and smoke checks, not results; --tracks smoke renders them)"),
    (["leaderboard", "--tracks", "quick,smok", "--out", "{tmp}/site"], "unknown track 'smok'; did you mean 'smoke'?"),
    (["leaderboard", "--tracks", ",", "--out", "{tmp}/site"], "--tracks: no value in ','"),
    (["leaderboard", "--results", "{tmp}/nowhere", "--out", "{tmp}/site"], "--results {tmp}/nowhere: no such folder"),
    (["leaderboard", "--tracks", "smoke", "--out", "{tmp}/file"], "--out {tmp}/file: is a file, expected a folder for "
     "the site (made if missing)"),
])
def test_table_and_leaderboard_refuse_with_one_line(smoke_only, capsys, argv, message):
    tmp, r = smoke_only, smoke_only / "r"
    argv = [a.format(tmp=tmp) for a in argv] + ([] if "--results" in argv else ["--results", str(r)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ehrbench: error: {message.format(tmp=tmp, r=r)}"), err
    assert not (tmp / "site").exists()


def test_the_leaderboard_says_what_it_left_out_and_why(smoke_only, capsys):
    from record_factory import make_record, write_records

    write_records(smoke_only / "r", [make_record(track="quick", seed=s) for s in (30, 40, 100)])
    assert main(["leaderboard", "--results", str(smoke_only / "r"), "--out", str(smoke_only / "site")]) == 0
    out, err = capsys.readouterr()
    assert err == ("note: left out 2 record(s) of track smoke (the smoke track is for tests and smoke checks, not "
                   "results; --tracks smoke renders them)\n")
    assert "3 run records, 0 skipped" in out
    assert main(["leaderboard", "--results", str(smoke_only / "r"), "--out", str(smoke_only / "site"), "--tracks",
                 "smoke", "--format", "none"]) == 0
    assert capsys.readouterr().err == "note: left out 3 record(s) of track quick (not in --tracks)\n"


@pytest.mark.parametrize("argv", [["table", "--track", "smoke"], ["leaderboard", "--out", "site"],
                                  ["bench", "--method", "bce"], ["status", "--method", "bce"]])
def test_an_unknown_table_format_is_named_not_replaced_by_simple(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--results", str(tmp_path), "--format", "githb"])
    assert e.value.code == 2
    assert "argument --format: unknown table format 'githb'; did you mean 'github'?; valid choices: " in capsys.readouterr().err


# --- method manifests --------------------------------------------------------------------------

def _bce_manifest():
    return (METHODS / "bce" / "manifest.yaml").read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda m: "name: [", "manifest.yaml: not valid YAML"),
    (lambda m: "- a\n- b\n", "manifest.yaml: expected a mapping of fields, got list"),
    (lambda m: "", "manifest.yaml: expected a mapping of fields, got NoneType"),
    (lambda m: m.replace("entry:", "entree:"), "manifest.yaml: missing field 'entry' (str)"),
    (lambda m: m.replace("version:", "version: [1]\nold_version:"), "manifest.yaml: field 'version' must be a str, got list"),
    (lambda m: m.replace("name: bce", "name: bce2"), "manifest.yaml: field 'name' is 'bce2' but the folder is 'bce'"),
    (lambda m: m + "hparam_schema: [1, 2]\n", "hparam_schema must be a mapping of key -> rule, got list"),
    (lambda m: m.replace("hparam_schema:", "hparam_schema:\n  q: {type: float, maximum: 1}"),
     "hparam_schema entry 'q' has unknown field 'maximum'; did you mean 'max'?"),
])
def test_malformed_manifests_name_the_file_and_field(tmp_path, edit, message):
    folder = tmp_path / "bce"
    shutil.copytree(METHODS / "bce", folder)
    (folder / "manifest.yaml").write_text(edit(_bce_manifest()))
    with pytest.raises(UsageError) as e:
        read_manifest(folder)
    assert message in str(e.value)


@pytest.mark.parametrize("entry, message", [
    ("method.py", "entry 'method.py' must be 'FILE.py:Class' with FILE.py in the folder"),
    ("nothere.py:BCE", "entry 'nothere.py:BCE' must be 'FILE.py:Class'"),
    ("method.py:torch", "'torch' must be a subclass of benchmark.method.Method"),
])
def test_a_manifest_entry_that_is_not_a_method_class_is_named(tmp_path, monkeypatch, entry, message):
    from benchmark.registry import get_method

    shutil.copytree(METHODS / "bce", tmp_path / "bce")
    manifest = tmp_path / "bce" / "manifest.yaml"
    manifest.write_text("\n".join(f"entry: {entry}" if line.startswith("entry:") else line
                                  for line in manifest.read_text().splitlines()) + "\n")
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path))
    with pytest.raises(UsageError) as e:
        get_method("bce").load_class()
    assert message in str(e.value)


# --- run records -------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["spec"].pop("task"), "field 'spec.task' is missing or not a str"),
    (lambda r: r["spec"].update(seed="30"), "field 'spec.seed' is missing or not a int"),
    (lambda r: r["spec"].update(seed=True), "field 'spec.seed' is missing or not a int"),
    (lambda r: r["spec"]["method"].pop("name"), "field 'spec.method.name' is missing or not a str"),
    (lambda r: r["spec"].update(noise="sym-20"), "field 'spec.noise' is missing or not a dict"),
    (lambda r: r["spec"]["noise"].update(name="sym-200"), "field 'spec.noise.name': malformed noise setting 'sym-200'"),
    (lambda r: r.pop("schema_version"), "schema_version None is not supported"),
    (lambda r: r.update(created_utc=20260101), "field 'created_utc' has type int"),
    (lambda r: r.update(status="failed", failure=""), "a failed record needs a 'failure' reason"),
    (lambda r: r["metrics"]["final"].update(map=1), "metrics.final.map differs from the last epoch of the curve"),
    (lambda r: r["metrics"]["final"].update(map="0.5"), "metrics.final.map is '0.5', expected a number in [0, 1]"),
    (lambda r: r["metrics"].update(final=[]), "a done record needs metrics.final with map"),
    (lambda r: r["method"].pop("display_name"), "field 'method.display_name' is None, expected str"),
    (lambda r: r["environment"].update(gpu=["H100"]), "field 'environment.gpu' is ['H100'], expected str or null"),
    (lambda r: r["timings"].update(total="10s"), "field 'timings.total' must be a number of seconds"),
    (lambda r: r["metrics"].update(collapsed=21), "field 'metrics.collapsed' is 21, expected dict or null"),
    (lambda r: r["spec"]["method"]["hparams"].update(fusion_layout=None),
     "field 'spec.method.hparams.fusion_layout' is None, expected str"),
])
def test_malformed_records_name_the_field(mutate, message):
    record = copy.deepcopy(make_record())
    mutate(record)
    if "spec" in record and isinstance(record["spec"], dict):  # the hash follows the spec: only the field is wrong
        from benchmark.records import run_id
        record["run_id"] = run_id(record["spec"])
    with pytest.raises(RecordError) as e:
        validate(record, "r.json")
    assert f"r.json: {message}" in str(e.value)


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"null", "expected a JSON object, got NoneType"),
    (b'{"schema_version": 1}', "missing field 'run_id'"),
])
def test_unreadable_record_files_are_named(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(RecordError) as e:
        RecordStore(tmp_path).read(path)
    assert str(e.value).startswith(f"{path}: {message}")


# --- listfiles and episode CSVs ----------------------------------------------------------------

def _listfile(root):
    return root / "phenotyping" / "train_multimodal_listfile.csv"


@pytest.mark.parametrize("content, message", [
    (lambda ok: b"", "train_multimodal_listfile.csv: empty file (made by mimic4extract"),
    (lambda ok: ok.replace(b"subject_id", b"subject"), "missing column 'subject_id'"),
    (lambda ok: ok.replace(b"\n10,", b"\nabc,"), "train_multimodal_listfile.csv line 2: column 'subject_id' is 'abc', expected an integer id"),
    (lambda ok: ok + b"1,2,3" + b",0" * 40 + b"\n", "malformed CSV"),
    (lambda ok: ok.replace(b",htn,", b",h\xe9t,"), "train_multimodal_listfile.csv line 2: not UTF-8 text (byte 0xe9)"),
    (lambda ok: ok.replace(b",24.0,", b",inf,"), "line 2: column 'period_length' is 'inf', expected a number of hours"),
    (lambda ok: ok.replace(b",0\n", b",1.5\n"), "line 2: label 'Shock' is '1.5', expected 1, 0, -1 or blank"),
    (lambda ok: ok + b'"10,1,,24.0,x' + b",0" * 25 + b"\n", "malformed CSV"),
    (lambda ok: ok.partition(b"\n")[0] + b"\n", "phenotyping/train_multimodal_listfile.csv and {root}/phenotyping/"
     "val_multimodal_listfile.csv: no rows after the header, expected one row per sample (made by mimic4extract"),
    (lambda ok: ok + b"10,2,,24.0\n", "train_multimodal_listfile.csv line 3: 4 fields, expected 30 as in the header "
     "(a truncated or malformed row: read as it is, its missing labels would be negatives)"),
    (lambda ok: ok + b"10,2,,24.0,last row cut before its labels", "train_multimodal_listfile.csv line 3: 5 fields, "
     "expected 30 as in the header (a truncated or malformed row: read as it is, its missing labels would be negatives)"),
    (lambda ok: ok + b"10,2,,24.0,note" + b",1" * 24 + b"\n", "line 3: 29 fields, expected 30"),
    (lambda ok: ok.rstrip(b"\n") + b",0\n", "train_multimodal_listfile.csv line 2: 31 fields, expected 30 as in the "
     "header (a truncated or malformed row)"),
])
def test_malformed_listfiles_name_the_file_and_line(tmp_path, content, message):
    root = write_task(tmp_path, [ok_row(1, note="htn")])
    _listfile(root).write_bytes(content(_listfile(root).read_bytes()))
    with pytest.raises(UsageError) as e:
        read_split(root, "mimic4", "phenotyping", "train", PHE)
    assert message.format(root=root) in str(e.value)


@pytest.mark.parametrize("entry", ["stay-1", "."])
def test_a_time_series_entry_naming_a_folder_is_named(tmp_path, entry):
    root = write_task(tmp_path, [ok_row(1, series=entry)])
    (root / "ehr" / entry).mkdir(exist_ok=True)
    raw = read_split(root, "mimic4", "phenotyping", "train", PHE)
    with pytest.raises(UsageError) as e:
        series_arrays(raw, SMOKE.task("syn-phe"))
    assert str(e.value) == (f"{root / 'ehr' / entry}: is a folder, expected an episode file (the CSV of hourly rows "
                            f"a listfile's time_series column, or stay column, names)")


def test_a_key_in_both_train_and_val_and_a_bad_layout_are_named(tmp_path):
    root = write_task(tmp_path, [ok_row(1)])
    val = root / "phenotyping" / "val_multimodal_listfile.csv"
    val.write_text(_listfile(root).read_text())
    with pytest.raises(UsageError, match="sample key '1' is in both train and val"):
        read_split(root, "mimic4", "phenotyping", "train", PHE)
    with pytest.raises(UsageError, match="unknown layout 'mimic5'; valid choices: mimic4, mimic3-miracl, mimic3-benchmark"):
        read_split(root, "mimic5", "phenotyping", "train", PHE)


@pytest.mark.parametrize("body, message", [
    (b"1\xff.5,,,,,,,,,80,,,,,,,,\n", "a.csv line 2: not UTF-8 text (byte 0xff)"),
    (b"0.5,,,,,,,,,80,,,,,,,,\n1e400,,,,,,,,,80,,,,,,,,\n", "a.csv line 3: Hours is '1e400', expected a finite number"),
    (b",,,,,,,,,80,,,,,,,,\n", "a.csv line 2: Hours is '', expected a finite number"),
    (b'"0,5",,,,,,,,,80,,,,,,,,\n', "a.csv line 2: 19 fields, expected 18"),
    (b"0.5,,,,,,,,,80,,,,,,,,,\n", "a.csv line 2: 19 fields, expected 18 (truncated or malformed row)"),
    (b"0.5,,,,,,,,,80,,,,,,,,\n1.5,\r,,,,,,,,80,,,,,,,,\n", "a.csv line 3: a carriage return (\\r) inside a row"),
])
def test_malformed_episode_files_name_the_file_and_line(tmp_path, body, message):
    write_task(tmp_path, [])
    (tmp_path / "ehr" / "a.csv").write_bytes(",".join(EPISODE_HEADER).encode() + b"\n" + body)
    with pytest.raises(UsageError) as e:
        read_episodes([str(tmp_path / "ehr" / "a.csv")])
    assert message in str(e.value)


def test_an_episode_header_with_an_extra_column_is_named(tmp_path):
    write_task(tmp_path, [])
    (tmp_path / "ehr" / "a.csv").write_text(",".join(EPISODE_HEADER) + ",Extra\n")
    with pytest.raises(UsageError, match=r"a.csv: header is 'Hours,.*', expected 'Hours,.*' \(extra column 'Extra'\)"):
        read_episodes([str(tmp_path / "ehr" / "a.csv")])


# --- fuzzing -----------------------------------------------------------------------------------

def tally(result):
    """With EHRBENCH_FUZZ_TALLY=FILE, one line per fuzzed input: 'ok' or 'error' (docs/reliability.md's figures)."""
    if os.environ.get("EHRBENCH_FUZZ_TALLY"):
        with open(os.environ["EHRBENCH_FUZZ_TALLY"], "a") as f:
            f.write(f"{result}\n")


def outcome(call, errors=(UsageError,)):
    """'ok' or our error's message; anything else (a traceback for the user) fails the test."""
    try:
        call()
        tally("ok")
        return "ok"
    except errors as e:
        assert str(e) and "\n" not in str(e).strip()
        tally("error")
        return str(e)


NOISE_TEXT = st.one_of(st.text(max_size=20), st.from_regex(r"(sym|asym|bal|clean|x)?-?[0-9.e\-]{0,8}", fullmatch=True))


@FUZZ
@given(NOISE_TEXT)
def test_fuzz_noise_strings(text):
    outcome(lambda: parse_noise(text))


CLI_VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
CLI_OPTIONS = ["--method", "--track", "--tasks", "--noise", "--seeds", "--set", "--jobs", "--device", "--encoder",
               "--length-chunks", "--noise-seed", "--precision", "--packing", "--runs-per-gpu",
               "--token-layout", "--compile"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(CLI_OPTIONS), st.one_of(CLI_VALUES, st.sampled_from(
    ["bce", "smoke", "syn-phe", "sym-20", "30", "cpu", "1", "modalities=ehr", "-1", "auto"]))), max_size=4))
def test_fuzz_bench_arguments(tmp_path, capsys, options):
    argv = ["bench", "--method", "bce", "--track", "smoke"] + [x for pair in options for x in pair]
    with mock.patch("benchmark.runner.execute", return_value=[]):
        try:
            code = main(argv + ["--results", str(tmp_path / "r")])
        except SystemExit as e:
            code = e.code
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    tally("ok" if code == 0 else "error")
    if code == 2:
        assert "error: " in err.splitlines()[-1]


@FUZZ
@given(st.sampled_from(["name", "display_name", "version", "citation", "license", "backbone", "entry", "hparams",
                        "hparam_schema"]),
       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6))
def test_fuzz_manifest_fields(tmp_path_factory, field, value):
    import yaml

    folder = tmp_path_factory.mktemp("m") / "bce"
    shutil.copytree(METHODS / "bce", folder)
    manifest = yaml.safe_load(_bce_manifest())
    manifest[field] = value
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    outcome(lambda: read_manifest(folder))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))


@FUZZ
@given(st.data())
def test_fuzz_run_records(data):
    """A valid record with one field anywhere replaced: refused by field, or readable by the tables."""
    from benchmark.records import run_id
    from leaderboard.report import render

    record = copy.deepcopy(make_record())
    path = data.draw(st.sampled_from([p for p in _paths(record) if p]))
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = data.draw(JSON)
    if data.draw(st.booleans()) and isinstance(record.get("spec"), dict):
        record["run_id"] = run_id(record["spec"])  # else the hash check alone would refuse most
    if outcome(lambda: validate(record, "r.json"), RecordError) == "ok":
        render([record], "simple")


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzz_listfile_bytes(tmp_path_factory, content):
    root = write_task(tmp_path_factory.mktemp("l"), [])
    _listfile(root).write_bytes(content)
    outcome(lambda: read_split(root, "mimic4", "phenotyping", "train", PHE))


@FUZZ
@given(st.integers(0, 29), st.text(max_size=6) | st.sampled_from(["", "-1", "1.0", "nan", "1e9", '"', "\n"]))
def test_fuzz_listfile_cells(tmp_path_factory, column, value):
    root = write_task(tmp_path_factory.mktemp("l"), [ok_row(1), ok_row(2)])
    lines = _listfile(root).read_text().splitlines()
    cells = lines[2].split(",")
    cells[column] = value
    lines[2] = ",".join(cells)
    _listfile(root).write_text("\n".join(lines) + "\n")
    outcome(lambda: read_split(root, "mimic4", "phenotyping", "train", PHE))


EPISODE_CELL = st.text(max_size=6) | st.sampled_from(["", "nan", "inf", "-5", "1e400", "To Pain", "eighty", "0x1"])


@FUZZ
@given(st.integers(0, 17), EPISODE_CELL, st.binary(max_size=40))
def test_fuzz_episode_files(tmp_path_factory, column, value, tail):
    """One cell of a valid episode file replaced, and random bytes appended: read through to the arrays."""
    root = tmp_path_factory.mktemp("e")
    write_task(root, [ok_row(1, series="a.csv")])
    cells = ["0.5", "", "60", "", "", "", "", "", "", "80", "", "", "", "", "", "", "", ""]
    cells[column] = value
    episode(root, "a.csv", ",".join(cells) + "\n")
    with open(root / "ehr" / "a.csv", "ab") as f:
        f.write(tail)

    def read():
        raw = read_split(root, "mimic4", "phenotyping", "train", PHE)
        series_arrays(raw, SMOKE.task("syn-phe"))
    outcome(read)
