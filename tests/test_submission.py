"""Submitting a method: the scaffold runs as is, and `methods validate` names each problem of a broken
submission in one line (`results import`: tests/test_results_import.py)."""
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.submission import scaffold, validate
from helpers import changed

GOOD_MANIFEST = {
    "name": "broken",
    "display_name": "Broken",
    "version": "0.1",
    "entry": "method.py:Broken",
    "backbone": "flexcare",
    "citation": "Doe, J. A noisy-label loss for EHR. Venue 2026.",
    "license": "MIT",
    "hparams": {"structural_mask": "additive"},
    "hparam_schema": {"structural_mask": {"type": "str", "choices": ["additive", "blocking"]}},
}
HEAD = "import torch\nimport torch.nn.functional as F\nfrom benchmark.method import Method\n\n\n"
BCE = "    def loss(self, logits, targets, index, epoch):\n        return F.binary_cross_entropy_with_logits(logits, targets)\n"


def method_source(body=BCE, head=HEAD, cls="class Broken(Method):\n"):
    return head + cls + body


def make_submission(root: Path, manifest=None, source=None, name="broken") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest if manifest is not None else GOOD_MANIFEST, sort_keys=False))
    (folder / "method.py").write_text(source if source is not None else method_source())
    (folder / "README.md").write_text("# Broken\n")
    return folder


def manifest_with(**changes):
    return changed(GOOD_MANIFEST, **changes)


LEAK = "/tmp/ehrbench-validate-leak-{pid}.txt"

# (id, manifest, method.py, needs the smoke run, the line's expected text)
GALLERY = [
    ("missing-field", manifest_with(citation=None), None, False, "missing field 'citation' (str)"),
    ("wrong-type", manifest_with(version=1.0), None, False, "field 'version' must be a str, got float"),
    ("unknown-backbone", manifest_with(backbone="resnet"), None, False, "unknown backbone 'resnet'"),
    ("bad-license", manifest_with(license="proprietary"), None, False, "license 'proprietary' is not an accepted SPDX identifier"),
    ("citation-without-year", manifest_with(citation="see our paper"), None, False, "citation must name authors, title, venue and year"),
    ("hparam-out-of-range", manifest_with(hparams={**GOOD_MANIFEST["hparams"], "q": 2.0},
                                          hparam_schema={**GOOD_MANIFEST["hparam_schema"], "q": {"type": "float", "gt": 0, "max": 1}}),
     None, False, "hyper-parameter 'q' = 2.0 is out of range; allowed: float with 0 < q <= 1"),
    ("no-hparam-schema", manifest_with(hparam_schema=None), None, False, "missing field 'hparam_schema'"),
    ("name-is-not-folder", manifest_with(name="other"), None, False, "field 'name' is 'other' but the folder is 'broken'"),
    ("unknown-field", manifest_with(optimizer="sgd"), None, False, "unknown field 'optimizer'"),
    ("entry-class-missing", manifest_with(entry="method.py:Nope"), None, False, "'Nope' must be a subclass of benchmark.method.Method"),
    ("syntax-error", None, method_source(body="    def loss(self, logits targets):\n        pass\n"), False, "method.py:7: syntax error: invalid syntax"),
    ("import-error", None, method_source(head="import nonexistent_pkg_xyz\n" + HEAD), False,
     "import failed: ModuleNotFoundError: No module named 'nonexistent_pkg_xyz'"),
    ("class-missing-loss", None, method_source(body="    pass\n"), False,
     "class Broken does not implement loss(self, logits, targets, index, epoch)"),
    ("hook-wrong-signature", None, method_source(body=BCE + "    def end_epoch(self):\n        return None\n"), False,
     "Broken.end_epoch must accept (self, view), got end_epoch(self)"),
    ("loss-without-output", None, method_source(body="    wants_output = True\n" + BCE), False,
     "Broken.loss must accept (self, logits, targets, index, epoch, output=...), got loss(self, logits, targets, index, epoch)"),
    ("builds-own-optimiser", None, method_source(body=BCE + "    def build_model(self):\n        m = super().build_model()\n"
                                                 "        self.opt = torch.optim.SGD(m.parameters(), lr=0.1)\n        return m\n"), False,
     "builds its own optimiser or schedule (torch.optim.SGD)"),
    ("reads-test-labels", None, method_source(head="from benchmark.runner import load_task\n" + HEAD,
                                              body=BCE + "    def peek(self, spec):\n        return load_task(spec).test.labels\n"), False,
     "touches the test split (.test)"),
    ("reads-the-evidence", None, method_source(head="from benchmark.data.evidence import train_evidence\n" + HEAD), False,
     "reaches for the harness's data (benchmark.data.evidence.train_evidence)"),
    ("reads-the-noise-report", None, method_source(head="from benchmark import noise_report\n" + HEAD), False,
     "reaches for the clean labels and the under-coding evidence (benchmark.noise_report)"),
    ("opens-a-file", None, method_source(body=BCE + "    def end_epoch(self, view):\n        open('labels.csv').read()\n"), False,
     "opens files (open())"),
    ("data-loader", None, method_source(head="from torch.utils.data import DataLoader\n" + HEAD), False,
     "builds a data loader (torch.utils.data.DataLoader)"),
    ("evaluates-itself", None, method_source(head="from benchmark.fastpath import predict\n" + HEAD), False,
     "reaches into how the trainer's steps execute (benchmark.fastpath.predict)"),
    # Hidden from the static check: caught at run time, during the smoke run.
    ("nan-loss", None, method_source(body="    def loss(self, logits, targets, index, epoch):\n        return (logits * float('nan')).mean()\n"),
     True, "non-finite training loss (nan) in epoch 1"),
    ("loss-not-reduced", None, method_source(body="    def loss(self, logits, targets, index, epoch):\n"
                                             "        return F.binary_cross_entropy_with_logits(logits, targets, reduction='none')\n"),
     True, "loss must return a scalar tensor with a gradient (reduce by mean), got ["),
    ("hidden-optimiser", None, method_source(body=BCE + "    def build_model(self):\n        m = super().build_model()\n"
                                             "        self.opt = getattr(torch, 'opt' + 'im').SGD(m.parameters(), lr=0.1)\n        return m\n"),
     True, "at run time: builds its own optimiser (SGD)"),
    ("hidden-data-access", None, method_source(head="import importlib\n" + HEAD, body=BCE +
                                               "    def end_epoch(self, view):\n        importlib.import_module('benchmark.da' + 'ta').materialise(None)\n"),
     True, "at run time: reaches for the harness's data (materialise) at run time"),
    ("network-at-import", None, method_source(head="import importlib\n" + HEAD.replace("\n\n\n", "\n") +
                                              "importlib.import_module('soc' + 'ket').create_connection(('127.0.0.1', 9), timeout=1)\n\n\n"),
     True, "at run time: opens a network connection"),
    ("writes-outside-run-folder", None, method_source(head="import pathlib\n" + HEAD, body=BCE +
                                                      f"    def end_epoch(self, view):\n        pathlib.Path({LEAK!r}).open('w')\n"),
     True, "at run time: writes a file outside its run folder (/tmp/ehrbench-validate-leak-"),
    ("end-epoch-returns-a-tensor", None, method_source(body=BCE + "    def end_epoch(self, view):\n        return {'w': torch.ones(2)}\n"),
     True, "end_epoch must return None or a dict of plain numbers and strings"),
]


@pytest.mark.parametrize("manifest, source, smoke, message", [g[1:] for g in GALLERY], ids=[g[0] for g in GALLERY])
def test_each_broken_submission_gets_its_own_one_line_message(manifest, source, smoke, message, tmp_path, monkeypatch):
    if source and "{pid}" in source:
        source = source.replace("{pid}", str(tmp_path.name))
    make_submission(tmp_path / "methods", manifest, source)
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path / "methods"))
    report = validate("broken", smoke=smoke)
    assert not report.ok
    assert any(message in p for p in report.problems), report.problems
    assert all("\n" not in p for p in report.problems)
    if smoke:  # a run-time problem is one line, not also the exception it caused
        assert len(report.problems) == 1, report.problems
    assert not list(Path("/tmp").glob(f"ehrbench-validate-leak-{tmp_path.name}.txt"))  # the write was refused


def test_validate_cli_prints_one_line_per_problem_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    make_submission(tmp_path, manifest_with(backbone="resnet", license="proprietary"))
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path))
    assert main(["methods", "validate", "broken", "--no-smoke"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "unknown backbone" in line or "license" in line] == err[:2]
    assert err[-1] == "broken: 2 problem(s); see CONTRIBUTING.md"
    assert main(["methods", "validate", "nosuch"]) == 2


def test_every_shipped_method_passes_the_static_checks(capsys):
    from benchmark.registry import available_methods

    for name in available_methods():
        report = validate(name, smoke=False)
        assert report.ok, report.problems


def test_bce_passes_validation_with_its_smoke_run_and_parameter_count(capsys):
    assert main(["methods", "validate", "bce"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bce: ok: manifest, interface, harness boundaries, import hygiene, smoke run (mAP 0.")
    assert "33,321 trainable parameters on smoke/syn-phe" in out


def test_the_scaffold_runs_as_is_and_its_test_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path / "methods"))
    written = scaffold("my_loss", tests_dir=tmp_path / "tests")
    assert sorted(p.name for p in written) == ["README.md", "manifest.yaml", "method.py", "test_method_my_loss.py"]
    assert "class MyLoss(Method):" in (tmp_path / "methods" / "my_loss" / "method.py").read_text()
    namespace = {}
    exec(compile((tmp_path / "tests" / "test_method_my_loss.py").read_text(), "test_method_my_loss.py", "exec"), namespace)
    namespace["test_my_loss_passes_validation"]()  # the scaffold's own test: validate() with the smoke run
    with pytest.raises(Exception, match="already exists"):
        scaffold("my_loss", tests_dir=tmp_path / "tests")
    with pytest.raises(Exception, match="must be lower case letters"):
        scaffold("My-Loss", tests_dir=tmp_path / "tests")


def test_methods_list_is_the_methods_listing(capsys):
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert main(["methods", "list"]) == 0
    assert capsys.readouterr().out == listing and listing.startswith("asl ")


def test_the_guard_leaves_no_trace(tmp_path, monkeypatch):
    import os

    import torch

    from benchmark import data, runner

    before = (os.getcwd(), data.materialise, runner.load_task, torch.optim.Optimizer.__init__)
    make_submission(tmp_path, source=method_source(body=BCE + "    def end_epoch(self, view):\n        open('notes.txt', 'w').write('x')\n"))
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path))
    report = validate("broken")  # writing inside its own run folder is allowed at run time
    assert report.problems == [f"{tmp_path / 'broken' / 'method.py'}:10: opens files (open()): a method reads and writes no files"]
    assert (os.getcwd(), data.materialise, runner.load_task, torch.optim.Optimizer.__init__) == before
    assert not (tmp_path / "notes.txt").exists()
