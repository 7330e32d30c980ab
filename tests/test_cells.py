"""A cell is one run spec less its seed: runs that differ in anything else are separate rows, labelled by
what differs from the method's default spec; a noise column is a setting by its rates; a grid plans each
seed and noise setting once; a local note encoder is in the spec by its content, not its path."""
import copy
import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.protocol import ENCODER_FOLDER, parse_noise
from benchmark.records import run_id
from benchmark.runner import plan
from leaderboard.report import collect, render, run_row
from record_factory import make_record

BCE = {"structural_mask": "additive", "fusion_layout": "released", "modalities": "both"}  # the manifest's


def smoke(seed=30, noise="sym-20", map=0.4, **spec_changes) -> dict:
    """A bce record of the smoke track's syn-phe whose spec is changed by ``spec_changes`` (section ->
    {key: value}, or key -> value), its run id recomputed."""
    record = make_record("bce", noise, seed, map, track="smoke", task="syn-phe", hparams=BCE)
    for key, value in spec_changes.items():
        if isinstance(value, dict):
            record["spec"].setdefault(key, {}).update(value)
        else:
            record["spec"][key] = value
    record["run_id"] = run_id(record["spec"])
    return record


def table(records):
    return dict(collect([run_row(r) for r in copy.deepcopy(records)])[("smoke", "syn-phe")])


@pytest.mark.parametrize("change, label", [
    ({"method": {"hparams": {**BCE, "modalities": "ehr"}}}, "FlexCare (BCE) [modalities=ehr]"),
    ({"noise_seed_policy": "per-seed"}, "FlexCare (BCE) [noise seed per-seed]"),
    ({"budget": {"epochs": 3}}, "FlexCare (BCE) [epochs=3]"),
    ({"task_spec": {"encoder": ENCODER_FOLDER + "0123456789abcdef"}},
     f"FlexCare (BCE) [encoder={ENCODER_FOLDER}0123456789abcdef]"),
    # Not covered by the defaults the leaderboard reads: told apart within the table.
    ({"data_generator": "9"}, "FlexCare (BCE) [data_generator=9]"),
    ({"method": {"version": "9.9"}}, "FlexCare (BCE) [version=9.9]"),
])
def test_records_differing_in_one_spec_field_are_separate_rows_labelled_by_it(change, label):
    default = [smoke(seed, map=0.40 + seed / 1000, budget={"epochs": 2}, task_spec={"encoder": "minilm"},
                     data_generator="3") for seed in (30, 40, 100)]
    other = []
    for seed in (30, 40):
        record = copy.deepcopy(default[0])
        record["spec"]["seed"] = seed
        for key, value in change.items():
            if isinstance(value, dict):
                record["spec"][key].update(value)
            else:
                record["spec"][key] = value
        record["metrics"]["final"]["map"] = 0.2
        record["run_id"] = run_id(record["spec"])
        other.append(record)
    rows = table(default + other)
    assert set(rows) == {"FlexCare (BCE)", label}
    assert rows["FlexCare (BCE)"]["sym-20"]["maps"] == pytest.approx([0.43, 0.44, 0.5])  # never averaged with the other spec
    assert rows[label]["sym-20"]["maps"] == [0.2, 0.2]


def test_records_differing_only_in_their_seed_share_one_cell():
    rows = table([smoke(seed) for seed in (30, 40, 100)])
    assert list(rows) == ["FlexCare (BCE)"]
    assert len(rows["FlexCare (BCE)"]["sym-20"]["runs"]) == 3


def test_one_noise_setting_written_two_ways_is_one_column_and_headers_never_repeat():
    records = [smoke(30, noise="sym-20"), smoke(40, noise="sym-20.0"), smoke(100, noise="asym-20-20")]
    assert {r["spec"]["noise"]["name"] for r in records} == {"sym-20", "sym-20.0", "asym-20-20"}  # as written
    rows = table(records)
    assert list(rows["FlexCare (BCE)"]) == ["sym-20"]
    assert len(rows["FlexCare (BCE)"]["sym-20"]["runs"]) == 3
    assert render(records).count("(20,20)") == 1


def test_a_setting_is_named_by_its_rates():
    assert parse_noise("sym-20.0") == parse_noise("asym-20-20") == parse_noise("sym-20")
    assert parse_noise("asym-0-0").name == parse_noise("sym-0").name == "clean"
    assert parse_noise("asym-25.0-30").name == "asym-25-30" and parse_noise("bal-40.0").name == "bal-40"


def test_the_three_tables_of_the_readme_ablation_are_three_rows():
    records = ([smoke(s, map=0.27) for s in (30, 40)]
               + [smoke(s, map=0.25, method={"hparams": {**BCE, "modalities": "ehr"}}) for s in (30, 40)]
               + [smoke(s, map=0.25, noise_seed_policy="per-seed") for s in (30, 40)])
    text = render(records)
    rows = [line.split("  ")[0] for line in text.splitlines() if line.startswith("FlexCare")]
    assert rows == ["FlexCare (BCE)", "FlexCare (BCE) [modalities=ehr]", "FlexCare (BCE) [noise seed per-seed]"]


def test_duplicate_seeds_and_noise_settings_are_planned_once_with_one_line_each(tmp_path, capsys):
    grid = plan("bce", "smoke", ["syn-phe"], ["sym-20", "sym-20.0", "asym-20-20", "sym-40"], [30, 30, 40])
    assert [(s["noise"]["name"], s["seed"]) for s in grid.specs] == [("sym-20", 30), ("sym-20", 40), ("sym-40", 30),
                                                                     ("sym-40", 40)]
    assert grid.notes == ["--noise: one setting given more than once (a setting is its rates): sym-20, sym-20.0, "
                          "asym-20-20 are all sym-20 (20,20); planned once",
                          "--seeds: seed 30 given more than once: planned once (2 seeds)"]
    assert main(["status", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--noise", "sym-20",
                 "--seeds", "30,30", "--results", str(tmp_path), "--summary"]) == 0
    out, err = capsys.readouterr()
    assert err == "note: --seeds: seed 30 given more than once: planned once (1 seed)\n"
    assert out == "0 done, 0 failed, 0 running, 1 pending\n"


@pytest.mark.parametrize("flag, value", [("--seeds", ","), ("--seeds", ""), ("--noise", ",")])
def test_a_list_flag_given_without_a_value_is_a_usage_error_naming_it(tmp_path, capsys, flag, value):
    assert main(["status", "--method", "bce", "--track", "smoke", "--results", str(tmp_path), flag, value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"ehrbench: error: {flag}: no value in {value!r}")


# --- the note encoder's identity -----------------------------------------------------------------------

def encoder_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\na\nb\n")
    (path / "model.safetensors").write_bytes(b"weights" * 100)
    return path


def folder_spec(path):
    return plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30], encoder=str(path)).specs[0]


def test_an_encoder_folder_is_in_the_spec_by_its_content_so_moving_it_keeps_the_run_id(tmp_path):
    first = encoder_folder(tmp_path / "encoders" / "bert-small")
    spec = folder_spec(first)
    assert spec["task_spec"]["encoder"].startswith(ENCODER_FOLDER)
    assert str(tmp_path) not in str(spec)  # no path in the spec
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert run_id(folder_spec(moved)) == run_id(spec)
    copied = tmp_path / "copy"
    shutil.copytree(moved, copied)
    assert run_id(folder_spec(copied)) == run_id(spec)
    (copied / "model.safetensors").write_bytes(b"other weights" * 100)
    assert run_id(folder_spec(copied)) != run_id(spec)
    (moved / "vocab.txt").write_text("[PAD]\n[UNK]\na\nc\n")  # a tokenizer file counts too
    assert run_id(folder_spec(moved)) != run_id(spec)


def test_the_encoder_folder_is_found_again_by_its_identity_and_checked(tmp_path):
    from benchmark.data import notes
    from benchmark.errors import UsageError

    folder = encoder_folder(tmp_path / "enc")
    identity = folder_spec(folder)["task_spec"]["encoder"]
    assert notes.resolve(identity) == str(folder.resolve())
    (folder / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(UsageError, match="its content changed"):
        notes.resolve(identity)
    with pytest.raises(UsageError, match="no folder with this content is known here"):
        notes.resolve(ENCODER_FOLDER + "f" * 16)


def test_an_encoder_path_that_is_no_folder_or_no_model_is_a_usage_error(tmp_path):
    from benchmark.errors import UsageError

    with pytest.raises(UsageError, match="no such folder"):
        folder_spec(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no config.json and weights"):
        folder_spec(tmp_path / "empty")


def test_the_built_in_timing_encoder_is_named_by_name_and_built_once_into_the_cache(tmp_path, monkeypatch):
    import transformers

    from benchmark.data import notes
    from benchmark.marks import TIMING_ENCODER, TIMING_ENCODERS

    monkeypatch.setenv("EHRBENCH_CACHE", str(tmp_path))
    small = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    monkeypatch.setattr(transformers, "BertConfig", lambda: small)  # a BERT-base is 440 MB: the same steps, smaller
    assert notes.encoder_identity(TIMING_ENCODER) == TIMING_ENCODER and TIMING_ENCODER in TIMING_ENCODERS
    folder = Path(notes.resolve(TIMING_ENCODER))
    assert folder == tmp_path / "encoders" / TIMING_ENCODER
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {f.name for f in folder.iterdir()}
    first = notes.encoder_id(TIMING_ENCODER)
    assert notes.resolve(TIMING_ENCODER) == str(folder) and notes.encoder_id(TIMING_ENCODER) == first
    assert notes.load_tokenizer(TIMING_ENCODER)("a note").input_ids  # MiniLM's tokenizer
