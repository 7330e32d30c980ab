"""`ehrbench results import`: genuine records are filed once; tampered ones (metric, spec, fingerprint,
seed, version, code) are refused, each with its reason in one line."""
import json
import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.records import run_id


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """Three genuine records (bce, smoke/syn-phe, sym-40, seeds 30, 40, 100) from the real runner."""
    from benchmark.options import Execution
    from benchmark.runner import plan, run_one

    folder = tmp_path_factory.mktemp("genuine")
    for spec in plan("bce", "smoke", ["syn-phe"], ["sym-40"]).specs:
        assert run_one(spec, str(folder), Execution(device="cpu"))["status"] == "done"
    return folder


def copy_records(genuine: Path, dest: Path) -> dict[int, Path]:
    shutil.copytree(genuine, dest)
    return {json.loads(p.read_text())["spec"]["seed"]: p for p in dest.rglob("*.json")}


def test_genuine_records_are_filed_once(genuine, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["results", "import", str(genuine), "--results", str(results)]) == 0
    assert "3 record(s) filed" in capsys.readouterr().out
    assert len(list(results.rglob("*.json"))) == 3
    assert main(["results", "import", str(genuine), "--results", str(results)]) == 0
    assert f"0 record(s) filed under {results}/, 3 already there, 0 refused" in capsys.readouterr().out


def _rehash(record):
    record["run_id"] = run_id(record["spec"])


def _set_map(record, delta, curve_too=False):
    record["metrics"]["final"]["map"] += delta
    if curve_too:
        record["metrics"]["curve"][-1]["map"] += delta


TAMPERED = [
    ("final-map-edited", lambda r: _set_map(r, 0.05), "metrics.final.map differs from the last epoch of the curve"),
    ("map-edited-in-final-and-curve", lambda r: _set_map(r, 0.05, curve_too=True), "is not the mean of its per-label APs"),
    ("per-label-ap-edited", lambda r: r["metrics"]["final"]["per_label_ap"].__setitem__(0, 1.0),
     "metrics.final.per_label_ap differs from the last epoch of the curve"),
    ("spec-edited", lambda r: r["spec"]["budget"].__setitem__("epochs", 1), "does not match the hash of its spec"),
    ("spec-edited-and-rehashed", lambda r: (r["spec"]["budget"].__setitem__("lr", 0.01), _rehash(r)),
     "spec.budget.lr is 0.01, the 'smoke' protocol has 0.001"),
    ("wrong-data-fingerprint", lambda r: r["fingerprints"].__setitem__("data", "0" * 64), "data fingerprint 0000000000000000 is not this task's"),
    ("wrong-noisy-checksum", lambda r: (r["fingerprints"].__setitem__("noisy_labels", "1" * 64), r["noise"].__setitem__("checksum", "1" * 64)),
     "noisy-label checksum differs from the one recomputed from the clean labels and the noise spec"),
    ("other-harness-version", lambda r: r["environment"].__setitem__("harness_version", "0.0.9"), "harness version '0.0.9', this harness is"),
    ("other-schema-version", lambda r: r.__setitem__("schema_version", 2), "schema_version 2 is not supported"),
    ("other-code", lambda r: r["method"].__setitem__("code_hash", "f" * 64), "method code hash differs from methods/bce"),
    ("failed-run", lambda r: r.update(status="failed", failure="boom"), "a failed run: only finished runs are imported"),
    ("collapse-rewritten", lambda r: r["metrics"].update(collapsed={"epoch": 9, "macro_auc": 0.1, "peak_macro_auc": 0.9,
                                                                    "peak_epoch": 1, "never_learned": False}),
     "metrics.collapsed is not what the curve gives"),
]


@pytest.mark.parametrize("tamper, message", [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED])
def test_a_tampered_record_is_refused_saying_why(tamper, message, genuine, tmp_path, capsys):
    path = copy_records(genuine, tmp_path / "submitted")[40]
    record = json.loads(path.read_text())
    tamper(record)
    path.write_text(json.dumps(record))
    results = tmp_path / "results"
    assert main(["results", "import", str(tmp_path / "submitted"), "--results", str(results)]) == 1
    refused = [line for line in capsys.readouterr().err.splitlines() if line.startswith("refused: ")]
    mine = [line for line in refused if path.name in line]
    assert len(mine) == 1 and message in mine[0], refused
    # Without seed 40 the other two seeds are incomplete: nothing of the group is filed.
    assert len(refused) == 3 and all("missing seed 40" in line for line in refused if line not in mine)
    assert not results.exists() or not list(results.rglob("*.json"))


def test_a_missing_seed_refuses_the_group(genuine, tmp_path, capsys):
    records = copy_records(genuine, tmp_path / "submitted")
    records[100].unlink()
    assert main(["results", "import", str(tmp_path / "submitted"), "--results", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert err.count("incomplete seeds for bce smoke/syn-phe sym-40: missing seed 100") == 2


def test_without_local_data_fingerprints_must_agree_with_each_other(genuine, tmp_path, monkeypatch, capsys):
    import benchmark.results_import as ri

    monkeypatch.setattr(ri, "_local_data", lambda *a, **kw: None)  # as for real data: nothing to recompute
    records = copy_records(genuine, tmp_path / "submitted")
    record = json.loads(records[30].read_text())
    record["fingerprints"]["data"] = "0" * 64
    records[30].write_text(json.dumps(record))
    assert main(["results", "import", str(tmp_path / "submitted"), "--results", str(tmp_path / "results"), "--check"]) == 1
    out = capsys.readouterr()
    assert "data fingerprint 0000000000000000 differs from other records of smoke/syn-phe" in out.err
    assert "no local data; data fingerprint and noisy-label checksum checked for consistency only" in out.out


@pytest.mark.parametrize("tampered", [30, 40, 100])
def test_the_record_that_disagrees_with_the_others_is_the_one_refused_whatever_the_file_order(
        genuine, tmp_path, monkeypatch, capsys, tampered):
    import benchmark.results_import as ri

    monkeypatch.setattr(ri, "_local_data", lambda *a, **kw: None)
    records = copy_records(genuine, tmp_path / "submitted")
    record = json.loads(records[tampered].read_text())
    record["fingerprints"]["data"] = "0" * 64
    records[tampered].write_text(json.dumps(record))
    main(["results", "import", str(tmp_path / "submitted"), "--results", str(tmp_path / "results"), "--check"])
    refused = [line for line in capsys.readouterr().err.splitlines() if "data fingerprint" in line]
    assert len(refused) == 1 and records[tampered].name in refused[0] and "0000000000000000 differs" in refused[0]


@pytest.fixture(scope="module")
def under_coded(tmp_path_factory):
    """Genuine under-40 records (bce, smoke/syn-phe, seeds 30, 40, 100)."""
    from benchmark.options import Execution
    from benchmark.runner import plan, run_one

    folder = tmp_path_factory.mktemp("under")
    for spec in plan("bce", "smoke", ["syn-phe"], ["under-40"]).specs:
        record = run_one(spec, str(folder), Execution(device="cpu"))
        assert record["status"] == "done" and record["noise"]["under_coding"]["twin"] == "asym-40-0"
    return folder


def test_under_coded_records_are_recomputed_from_the_evidence_and_a_wrong_checksum_refused(under_coded, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["results", "import", str(under_coded), "--results", str(results)]) == 0
    assert "3 record(s) filed" in capsys.readouterr().out
    path = copy_records(under_coded, tmp_path / "submitted")[40]
    record = json.loads(path.read_text())
    record["fingerprints"]["noisy_labels"] = record["noise"]["checksum"] = "1" * 64
    path.write_text(json.dumps(record))
    assert main(["results", "import", str(tmp_path / "submitted"), "--results", str(tmp_path / "r2")]) == 1
    assert "noisy-label checksum differs from the one recomputed" in capsys.readouterr().err
