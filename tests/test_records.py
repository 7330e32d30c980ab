import copy
import json
import sys
from pathlib import Path

import pytest

from benchmark import protocol
from benchmark.errors import RecordError
from benchmark.hparams import legacy_overrides
from benchmark.marks import collapse
from benchmark.options import Execution
from benchmark.protocol import TASK_FIELDS_SINCE, legacy_encoder_path
from benchmark.records import SCHEMA, RecordStore, run_id, validate
from benchmark.registry import get_method
from benchmark.runner import plan, run_one

DOCS_RECORDS = Path(__file__).resolve().parents[1] / "docs" / "records"
sys.path.insert(0, str(DOCS_RECORDS.parents[1] / "perf"))
import quick_designs  # noqa: E402 - perf/ holds scripts, not a package
# Kept for what they showed, not as runs of today's protocol.
NOT_REPRODUCIBLE = ("diagnostics-h100", "superseded-h100")
COMMITTED = sorted(p for p in DOCS_RECORDS.rglob("*.json")
                   if not set(NOT_REPRODUCIBLE) & set(p.relative_to(DOCS_RECORDS).parts)
                   and "run_id" in json.loads(p.read_text()))


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    spec = plan("bce", "smoke", ["syn-phe"], ["asym-20-0"], [30]).specs[0]
    return run_one(spec, str(tmp_path_factory.mktemp("results")), Execution(device="cpu"))


def test_run_id_is_a_stable_hash_of_the_whole_spec(record):
    spec = record["spec"]
    assert run_id(copy.deepcopy(spec)) == record["run_id"]
    for key, value in [("seed", 40), ("noise_seed_policy", "per-seed"), ("task", "syn-dia")]:
        assert run_id({**spec, key: value}) != record["run_id"]
    changed = copy.deepcopy(spec)
    changed["method"]["hparams"]["structural_mask"] = "blocking"
    assert run_id(changed) != record["run_id"]


def test_a_record_carries_provenance_timings_and_the_per_epoch_curve(record):
    assert record["status"] == "done"
    assert set(SCHEMA) <= set(record)
    assert len(record["metrics"]["curve"]) == record["spec"]["budget"]["epochs"]
    assert record["metrics"]["final"]["map"] == record["metrics"]["curve"][-1]["map"]
    assert {"data", "noise", "train", "method_hooks", "eval", "total"} <= set(record["timings"])
    assert len(record["fingerprints"]["data"]) == 64 and len(record["fingerprints"]["noisy_labels"]) == 64
    assert record["noise"]["rho_plus"] == 0.2 and record["noise"]["rho_minus"] == 0.0
    assert record["noise"]["realised_rho_minus"] == 0.0
    env = record["environment"]
    assert {"harness_version", "git", "torch", "python", "cpu", "device"} <= set(env)
    assert set(env["git"]) == {"sha", "dirty"}
    assert record["method"]["parameters"] > 0


def test_a_record_says_whether_its_run_collapsed_as_its_curve_does(record):
    assert "collapsed" in record["metrics"]  # null, or where it fell: written, not left to the readers
    assert record["metrics"]["collapsed"] == collapse(record["metrics"]["curve"])


def test_a_run_that_falls_below_the_collapse_auc_records_the_epoch_it_fell(tmp_path, monkeypatch):
    from benchmark import trainer

    aucs, evaluate = iter([0.8, 0.5]), trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: {**evaluate(*a, **k), "macro_auc": next(aucs)})
    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    run_one(spec, str(tmp_path), Execution(device="cpu"))
    written = RecordStore(tmp_path).read(RecordStore(tmp_path).path(spec))  # validated on the way back
    assert [row["macro_auc"] for row in written["metrics"]["curve"]] == [0.8, 0.5]
    assert written["metrics"]["collapsed"] == {"epoch": 2, "macro_auc": 0.5, "peak_macro_auc": 0.8, "peak_epoch": 1,
                                               "never_learned": False}


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("timings"), "missing field 'timings'"),
    (lambda r: r.update(schema_version=99), "schema_version 99 is not supported"),
    (lambda r: r.update(status="running"), "field 'status' is 'running'"),
    (lambda r: r["spec"].update(seed=1), "does not match the hash of its spec"),
    (lambda r: r["metrics"]["final"].pop("map"), "needs metrics.final"),
    (lambda r: r["metrics"]["final"].update(map=float("nan")), "metrics.final.map is nan, expected a number in"),
    (lambda r: r["metrics"]["final"].update(map=1.5), "metrics.final.map is 1.5, expected a number in"),
    (lambda r: r["metrics"]["final"].update(macro_auc=-0.1), "metrics.final.macro_auc is -0.1, expected a number in"),
    (lambda r: r["metrics"]["final"]["per_label_ap"].__setitem__(0, 2.0), "per_label_ap must be a list of numbers in"),
    (lambda r: r["metrics"]["final"].update(map=r["metrics"]["final"]["map"] / 2),
     "metrics.final.map differs from the last epoch of the curve"),
    (lambda r: r["metrics"].update(curve=[]), "needs metrics.curve, one row per epoch"),
    (lambda r: r.update(status="failed", failure=None), "needs a 'failure' reason"),
    (lambda r: r.update(peak_memory_bytes="big"), "field 'peak_memory_bytes' has type str"),
])
def test_validation_names_the_broken_field(record, mutate, message):
    broken = copy.deepcopy(record)
    mutate(broken)
    with pytest.raises(RecordError, match="my.json: .*" + message.replace("'", ".").split("(")[0]):
        validate(broken, "my.json")


def test_write_is_atomic_and_round_trips(record, tmp_path):
    store = RecordStore(tmp_path)
    path = store.write(record)
    assert store.read(path) == json.loads(json.dumps(record))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    assert path == tmp_path / "smoke" / "syn-phe" / "bce" / f"{record['run_id']}.json"


def test_invalid_records_are_never_written(record, tmp_path):
    broken = copy.deepcopy(record)
    broken["status"] = "maybe"
    with pytest.raises(RecordError):
        RecordStore(tmp_path).write(broken)
    assert not any(tmp_path.rglob("*.json"))


def test_corrupt_and_truncated_files_are_reported_by_path_and_scanning_goes_on(record, tmp_path):
    store = RecordStore(tmp_path)
    good = store.write(record)
    truncated = good.parent / "truncated.json"
    truncated.write_text(good.read_text()[:100])
    (good.parent / "list.json").write_text("[1, 2]")
    results = {p.name: (r, e) for p, r, e in store.scan()}
    assert results[good.name][0] is not None
    assert "truncated.json: not valid JSON" in results["truncated.json"][1]
    assert "list.json: expected a JSON object, got list" in results["list.json"][1]
    assert store.status(record["spec"]) == ("done", "")
    good.write_text("{")
    assert store.status(record["spec"])[0] == "corrupt"
    moved = store.quarantine(record["spec"])
    assert moved.exists() and store.status(record["spec"]) == ("missing", "")


def test_a_record_says_what_ran_when_compiling_failed(tmp_path, monkeypatch):
    """Asked to compile, a model the compiler fails on trains eagerly: the record says "off" and why,
    so a compute table never credits compilation to an eager run."""
    import torch

    from benchmark import fastpath
    from helpers import compile_failing_with

    monkeypatch.setattr(fastpath, "_COMPILE_FAILED", {})
    monkeypatch.setattr(torch, "compile", compile_failing_with("an Inductor assertion"))
    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    record = run_one(spec, str(tmp_path), Execution(device="cpu", compile="on"))
    assert record["status"] == "done"
    assert record["environment"]["compile"] == "off"
    assert "an Inductor assertion" in record["environment"]["compile_fallback"]
    assert 0 < record["timings"]["train_first_epoch"] <= record["timings"]["train"]
    validate(json.loads((next(tmp_path.rglob("*.json"))).read_text()))


def test_the_committed_records_are_there_to_check():
    assert len(COMMITTED) >= 40


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(DOCS_RECORDS)))
def test_a_committed_record_is_planned_again_under_its_own_id(path, monkeypatch):
    """What today's code plans from a record's choices (method, track, task, noise, seed, noise-seed
    policy, hyper-parameter overrides, encoder) has the record's id, and the record sits at the path
    that id implies: the protocol, tasks and manifests have not moved under it. A record made before a
    switch existed (its spec lacks the key) is planned with the switch's ``before`` value: then the
    spec is the record's plus exactly those keys, so the old run is still named by what it ran."""
    record = json.loads(path.read_text())
    spec = record["spec"]
    if spec["track"].startswith("quick-"):  # a candidate design of the ranking study (perf/quick_designs.py)
        monkeypatch.setattr(protocol, "TRACKS", dict(protocol.TRACKS))
        quick_designs.register(spec["track"].removeprefix("quick-"))
    entry = get_method(spec["method"]["name"])
    legacy = legacy_overrides(entry.manifest["hparam_schema"], spec["method"]["hparams"])
    recorded = {**spec["method"]["hparams"], **legacy}
    overrides = {k: v for k, v in recorded.items() if entry.hparams.get(k, object()) != v}
    encoder = spec["task_spec"]["encoder"]
    # Harness < 0.4.0 wrote a local encoder folder's path into the spec; today's spec has its content
    # (``data.notes.encoder_identity``). Such a record is planned with the task's default encoder, and then
    # must differ from its spec in the encoder only, as a record that predates a hyper-parameter does.
    path_encoder = legacy_encoder_path(encoder)
    # A synthetic task's note lengths: a record of generator 3 lacks note_scale, and its full-track run is
    # planned again with the earlier value (--note-scale 0), the short notes it ran on.
    note_scale = (spec["task_spec"].get("note_scale", TASK_FIELDS_SINCE["note_scale"])
                  if spec["task_spec"].get("source") == "synthetic" else None)
    # A run of --noise-draws' draw d is the last spec of a plan of d + 1 draws.
    draws = (spec.get("noise_draw") or {}).get("index", 0) + 1
    planned = plan(spec["method"]["name"], spec["track"], [spec["task"]], [spec["noise"]["name"]], [spec["seed"]],
                   spec["noise_seed_policy"], overrides,
                   None if encoder == "minilm" or path_encoder else encoder, note_scale=note_scale,
                   noise_draws=draws).specs[-1]
    if "note_scale" not in spec["task_spec"]:
        assert spec.get("data_generator") in ("3", None)  # generator 3 or real files: short notes or none
    if legacy or path_encoder:
        version = tuple(int(x) for x in record["environment"]["harness_version"].split("."))
        assert version < ((0, 4, 0) if path_encoder else (0, 3, 0))  # only records of older harnesses
    if path_encoder:
        planned["task_spec"]["encoder"] = encoder
    if legacy:
        assert version < (0, 3, 0)  # only records of older harnesses lack keys
        assert {k: v for k, v in planned["method"]["hparams"].items() if k not in legacy} == spec["method"]["hparams"]
        planned["method"]["hparams"] = spec["method"]["hparams"]
    assert planned == spec
    assert run_id(planned) == record["run_id"]
    root = next(p for p in path.parents if p.name == spec["track"]).parent
    assert RecordStore(root).path(planned) == path


def _tamper(root: Path, original: Path) -> dict[str, str]:
    """Copies, moves and edits of one record, each under the results folder: {path: the reason expected}."""
    text = json.loads(original.read_text())
    renamed = original.with_name("0123456789abcdef.json")
    renamed.write_text(original.read_text())
    focal = root / "smoke" / "syn-phe" / "focal" / original.name
    focal.parent.mkdir(parents=True)
    focal.write_text(original.read_text())
    nested = root / "copies" / "smoke" / "syn-phe" / "bce" / original.name
    nested.parent.mkdir(parents=True)
    nested.write_text(original.read_text())
    edited = copy.deepcopy(text)
    edited["metrics"]["final"]["map"] = 1.5
    other_seed = copy.deepcopy(edited)
    other_seed["spec"]["seed"] = 40
    other_seed["run_id"] = run_id(other_seed["spec"])
    forged = RecordStore(root).path(other_seed["spec"])
    forged.write_text(json.dumps(other_seed))
    return {str(renamed): "the file name is not the record's run id",
            str(focal): "a record of smoke/syn-phe/bce (its spec's track, task and method) filed under smoke/syn-phe/focal",
            str(nested): f"a second record of run {text['run_id']}; only the first",
            str(forged): "metrics.final.map is 1.5, expected a number in [0, 1]"}


def test_a_copied_moved_or_edited_record_never_changes_a_cell_and_is_named(record, tmp_path, capsys):
    from benchmark.cli import main
    from leaderboard import load

    store = RecordStore(tmp_path)
    original = store.write(record)
    assert main(["table", "--track", "smoke", "--results", str(tmp_path)]) == 0
    clean = capsys.readouterr().out
    expected = _tamper(tmp_path, original)
    assert main(["table", "--track", "smoke", "--results", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == clean  # still one run in the cell: '[n=1]', the same mean
    nested = next(p for p in expected if "/copies/" in p)
    for path, reason in expected.items():
        if path != nested:  # the table reads <results>/<track> only
            assert any(line.startswith(f"warning: skipping {path}: {reason}") for line in err.splitlines()), (path, err)
    rows, skipped = load(tmp_path, ["smoke"])  # the leaderboard reads every folder: one of the two copies counts
    assert [r["run_id"] for r in rows] == [record["run_id"]]
    named = {str(tmp_path / f): e for f, e in skipped}
    second = str(original) if str(original) in named else nested
    assert set(named) == set(expected) - {nested} | {second}
    assert all(named[p].startswith(expected.get(p, expected[nested])) for p in named)
