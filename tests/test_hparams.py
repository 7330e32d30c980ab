"""Malformed hyper-parameters are refused when the manifest is read, before any training."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.errors import UsageError
from benchmark.hparams import allowed, check_schema, legacy_overrides, validate
from benchmark.registry import available_methods, get_method

ROOT = Path(__file__).parent.parent
SCHEMA = {
    "q": {"type": "float", "gt": 0, "max": 1},
    "warmup_epochs": {"type": "int", "min": 1},
    "detach": {"type": "bool"},
    "structural_mask": {"type": "str", "choices": ["additive", "blocking"]},
}
GOOD = {"q": 0.7, "warmup_epochs": 10, "detach": True, "structural_mask": "additive"}


def refused(hparams, schema=SCHEMA) -> str:
    with pytest.raises(UsageError) as e:
        validate("gce", hparams, schema)
    message = str(e.value)
    assert "\n" not in message and message.startswith("method 'gce': ")
    return message


def test_a_well_formed_manifest_passes_and_an_int_is_a_float():
    validate("gce", GOOD, SCHEMA)
    validate("gce", {**GOOD, "q": 1}, SCHEMA)


@pytest.mark.parametrize("key, value, message", [
    ("q", "0.7", "hyper-parameter 'q' must be float, got str '0.7'; allowed: float with 0 < q <= 1"),
    ("q", True, "hyper-parameter 'q' must be float, got bool True; allowed: float with 0 < q <= 1"),
    ("warmup_epochs", 2.5, "hyper-parameter 'warmup_epochs' must be int, got float 2.5; allowed: int with 1 <= warmup_epochs"),
    ("detach", "yes", "hyper-parameter 'detach' must be bool, got str 'yes'; allowed: true or false"),
    ("structural_mask", 1, "hyper-parameter 'structural_mask' must be str, got int 1; allowed: one of additive, blocking"),
])
def test_wrong_type_names_method_key_and_allowed_values(key, value, message):
    assert refused({**GOOD, key: value}) == f"method 'gce': {message}"


@pytest.mark.parametrize("key, value, message", [
    ("q", 0.0, "hyper-parameter 'q' = 0.0 is out of range; allowed: float with 0 < q <= 1"),
    ("q", 1.5, "hyper-parameter 'q' = 1.5 is out of range; allowed: float with 0 < q <= 1"),
    ("q", float("nan"), "hyper-parameter 'q' = nan is not finite; allowed: float with 0 < q <= 1"),
    ("warmup_epochs", 0, "hyper-parameter 'warmup_epochs' = 0 is out of range; allowed: int with 1 <= warmup_epochs"),
    ("structural_mask", "block", "hyper-parameter 'structural_mask' = 'block' is not allowed; allowed: one of additive, blocking"),
])
def test_out_of_range_names_method_key_and_range(key, value, message):
    assert refused({**GOOD, key: value}) == f"method 'gce': {message}"


def test_unknown_and_missing_keys_are_refused():
    assert refused({**GOOD, "qq": 0.5}) == (
        "method 'gce': unknown hyper-parameter 'qq'; did you mean 'q'?; "
        "valid choices: detach, q, structural_mask, warmup_epochs")
    missing = {k: v for k, v in GOOD.items() if k != "q"}
    assert refused(missing) == "method 'gce': hyper-parameter 'q' is missing from hparams; allowed: float with 0 < q <= 1"


def test_a_malformed_schema_is_refused_too():
    assert "has unknown field 'mn'" in refused(GOOD, {**SCHEMA, "q": {"type": "float", "mn": 0}})
    assert "needs a type; did you mean 'float'?" in refused(GOOD, {**SCHEMA, "q": {"type": "flaot"}})


def test_allowed_reads_like_the_rule():
    assert allowed("alpha", {"type": "float", "min": 0, "max": 1}) == "float with 0 <= alpha <= 1"
    assert allowed("clip", {"type": "float", "min": 0, "lt": 1}) == "float with 0 <= clip < 1"
    assert allowed("name", {"type": "str"}) == "any str"


def test_every_shipped_method_declares_and_passes_its_schema():
    for name in available_methods():
        manifest = get_method(name).manifest
        assert set(manifest.get("hparam_schema", {})) == set(manifest["hparams"]), name


@pytest.mark.parametrize("name, key, value, message", [
    ("focal", "alpha", 1.5, "hyper-parameter 'alpha' = 1.5 is out of range; allowed: float with 0 <= alpha <= 1"),
    ("asl", "clip", 1.0, "hyper-parameter 'clip' = 1.0 is out of range; allowed: float with 0 <= clip < 1"),
    ("asl", "detach_focusing", "yes", "hyper-parameter 'detach_focusing' must be bool, got str 'yes'"),
    ("gce", "q", 0, "hyper-parameter 'q' = 0 is out of range; allowed: float with 0 < q <= 1"),
    ("mllsc", "tau_pos", 0.4, "hyper-parameter 'tau_pos' = 0.4 is out of range; allowed: float with 0.5 <= tau_pos < 1"),
    ("mllsc", "warmup_epochs", 2.0, "hyper-parameter 'warmup_epochs' must be int, got float 2.0"),
    ("multit", "window", 0, "hyper-parameter 'window' = 0 is out of range; allowed: int with 1 <= window"),
    ("multit", "rho_plus", 0.2, "unknown hyper-parameter 'rho_plus'; valid choices: fusion_layout, min_selected,"),
])
def test_the_new_methods_manifests_refuse_malformed_values(name, key, value, message):
    manifest = get_method(name).manifest
    with pytest.raises(UsageError) as e:
        validate(name, {**manifest["hparams"], key: value}, manifest["hparam_schema"])
    assert str(e.value).startswith(f"method '{name}': {message}")


def bad_methods_folder(tmp_path, **override):
    """A copy of bce under another folder whose manifest has ``override`` in its hparams."""
    folder = tmp_path / "methods" / "bce"
    folder.mkdir(parents=True)
    manifest = yaml.safe_load((ROOT / "methods" / "bce" / "manifest.yaml").read_text())
    manifest["hparams"].update(override)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "method.py").write_text((ROOT / "methods" / "bce" / "method.py").read_text())
    return folder.parent


@pytest.mark.parametrize("override, message", [
    ({"structural_mask": "block"}, "method 'bce': hyper-parameter 'structural_mask' = 'block' is not allowed; "
                                   "allowed: one of additive, blocking"),
    ({"structural_mask": 3}, "method 'bce': hyper-parameter 'structural_mask' must be str, got int 3"),
    ({"gamma": 2.0}, "method 'bce': unknown hyper-parameter 'gamma'; valid choices: fusion_layout, modalities, structural_mask"),
])
def test_bench_refuses_a_bad_manifest_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.setenv("EHRBENCH_METHODS", str(bad_methods_folder(tmp_path, **override)))
    results = tmp_path / "results"
    code = main(["bench", "--method", "bce", "--track", "smoke", "--jobs", "1", "--device", "cpu", "--results", str(results)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ehrbench: error: ") and message in err
    assert not results.exists() or not any(results.rglob("*.json"))


def test_the_cli_process_exits_2_on_a_bad_manifest_before_any_training(tmp_path):
    env = {**os.environ, "EHRBENCH_METHODS": str(bad_methods_folder(tmp_path, structural_mask="block"))}
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "bench", "--method", "bce", "--track", "smoke",
                           "--jobs", "1", "--device", "cpu", "--results", str(results)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("ehrbench: error: method 'bce': hyper-parameter 'structural_mask' = 'block' is not "
                           "allowed; allowed: one of additive, blocking\n")
    assert not results.exists() or not any(results.rglob("*.json"))


def test_a_before_value_must_obey_its_own_rule_and_fills_only_keys_a_record_lacks():
    schema = {"layout": {"type": "str", "choices": ["new", "old"], "before": "old"}, "q": {"type": "float"}}
    assert legacy_overrides(check_schema("m", schema), {"q": 0.5}) == {"layout": "old"}
    assert legacy_overrides(schema, {"q": 0.5, "layout": "new"}) == {}
    with pytest.raises(UsageError, match="hparam_schema entry 'layout': 'before' = 'older' breaks its own rule; allowed: one of new, old"):
        check_schema("m", {"layout": {**schema["layout"], "before": "older"}})
