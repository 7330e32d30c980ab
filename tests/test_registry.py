"""Loading a method folder: a private package whose entry module may import its own sibling modules."""
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.registry import get_method
from benchmark.submission import check_source, validate

MANIFEST = {
    "name": "twofiles",
    "display_name": "Two files",
    "version": "0.1",
    "entry": "method.py:TwoFiles",
    "backbone": "own",
    "citation": "Doe, J. A method in two files. Venue 2026.",
    "license": "MIT",
    "hparams": {"hidden": 8},
    "hparam_schema": {"hidden": {"type": "int", "min": 1}},
}
MODEL = '''import torch
from torch import nn

from benchmark.backbones.flexcare import ModelOutput
from benchmark.backbones.sequence import masked_mean


class Tiny(nn.Module):
    def __init__(self, num_labels, ehr_dim, note_dim, hidden):
        super().__init__()
        self.ehr, self.note = nn.Linear(ehr_dim, hidden), nn.Linear(note_dim, hidden)
        self.head = nn.Linear(2 * hidden, num_labels)

    def forward(self, batch):
        h = torch.cat([masked_mean(self.ehr(batch.ehr), batch.ehr_len), masked_mean(self.note(batch.note), batch.note_len)], -1)
        return ModelOutput(logits=self.head(h), aux=h.new_zeros(()))
'''
LOSSES = '''import torch.nn.functional as F


def bce(logits, targets):
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
'''
METHOD = '''from benchmark.method import Method

from . import losses
from .model import Tiny


class TwoFiles(Method):
    def build_model(self):
        return Tiny(self.task.num_labels, self.task.ehr_dim, self.task.note_dim, self.hparams["hidden"])

    def loss(self, logits, targets, index, epoch):
        return losses.bce(logits, targets)
'''


def write_method(root: Path, files: dict, name="twofiles") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.yaml").write_text(yaml.safe_dump({**MANIFEST, "name": name}, sort_keys=False))
    (folder / "README.md").write_text("# Two files\n")
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


@pytest.fixture
def methods(tmp_path, monkeypatch):
    monkeypatch.setenv("EHRBENCH_METHODS", str(tmp_path / "methods"))
    return tmp_path / "methods"


def test_an_entry_module_imports_its_siblings_and_the_method_validates_and_trains(methods, capsys):
    write_method(methods, {"method.py": METHOD, "model.py": MODEL, "losses.py": LOSSES})
    cls = get_method("twofiles").load_class()
    assert cls.__name__ == "TwoFiles" and type(cls(None, {"hidden": 8})).__module__.endswith(".method")
    report = validate("twofiles")  # the static checks, the guard and a one-epoch smoke run through the trainer
    assert report.ok, report.problems
    assert report.parameters == (76 + 1) * 8 + (384 + 1) * 8 + (16 + 1) * 25 and report.smoke.startswith("mAP ")


def test_the_same_folder_gives_the_same_class_and_its_modules_once(methods):
    write_method(methods, {"method.py": METHOD, "model.py": MODEL, "losses.py": LOSSES})
    first = get_method("twofiles").load_class()
    assert get_method("twofiles").load_class() is first
    assert get_method("twofiles").module("model").Tiny is sys.modules[first.__module__].Tiny
    found = []
    threads = [threading.Thread(target=lambda: found.append(get_method("twofiles").load_class())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == [first] * 4  # runs packed as threads share the class


def test_another_folder_or_changed_code_is_imported_anew(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    write_method(one, {"method.py": METHOD, "model.py": MODEL, "losses.py": LOSSES})
    write_method(two, {"method.py": METHOD, "model.py": MODEL, "losses.py": LOSSES.replace("logits.float()", "2 * logits.float()")})
    monkeypatch.setenv("EHRBENCH_METHODS", str(one))
    from_one = get_method("twofiles").load_class()
    monkeypatch.setenv("EHRBENCH_METHODS", str(two))
    from_two = get_method("twofiles").load_class()
    assert from_two is not from_one and from_two.__module__ != from_one.__module__
    logits, targets = torch.tensor([[1.0]]), torch.tensor([[1.0]])
    assert from_one(None, {}).loss(logits, targets, None, 1) != from_two(None, {}).loss(logits, targets, None, 1)
    # The sibling changed under the same folder: the next load imports it anew, the old class keeps working.
    (two / "twofiles" / "losses.py").write_text(LOSSES + "\nEDITED = True\n")
    edited = get_method("twofiles").load_class()
    assert edited is not from_two and get_method("twofiles").module("losses").EDITED
    monkeypatch.setenv("EHRBENCH_METHODS", str(one))
    assert get_method("twofiles").load_class() is from_one


@pytest.mark.parametrize("files, message", [
    ({"model.py": "import nonexistent_pkg_xyz\n" + MODEL},
     "twofiles/model.py:1: import failed: ModuleNotFoundError: No module named 'nonexistent_pkg_xyz'"),
    ({"method.py": METHOD.replace("from .model import Tiny", "from .nope import Tiny")},
     "twofiles/method.py:4: import failed: ModuleNotFoundError: No module named"),
    ({"model.py": MODEL + "raise RuntimeError('bad model module')\n"},
     "twofiles/model.py:17: importing the module raised RuntimeError: bad model module"),
    ({"model.py": MODEL.replace("def forward(self, batch):", "def forward(self batch):")},
     "twofiles/model.py:14: syntax error"),
])
def test_an_error_in_a_sibling_module_is_one_line_naming_that_file(methods, files, message):
    write_method(methods, {"method.py": METHOD, "model.py": MODEL, "losses.py": LOSSES, **files})
    report = validate("twofiles", smoke=False)
    assert [p for p in report.problems if message in p] and all("\n" not in p for p in report.problems), report.problems


def test_relative_imports_are_not_matched_against_the_harness_rules(tmp_path):
    folder = write_method(tmp_path, {"method.py": "from .http import helper\nfrom . import socket\n",
                                     "http.py": "def helper():\n    return 1\n", "socket.py": ""})
    assert check_source(folder) == []


def test_the_method_interface_imports_no_backbone_and_no_torch():
    code = ("import sys, benchmark.method\n"
            "print(sorted(m for m in ('benchmark.backbones.flexcare', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout
    assert out.strip() == "[]"


def test_the_default_model_is_flexcare_at_the_tracks_size_as_before():
    from benchmark.backbones.flexcare import FlexCare
    from benchmark.method_card import shape_info
    from benchmark.protocol import SMOKE

    info = shape_info(SMOKE, "syn-dia", note_dim=24)
    torch.manual_seed(0)
    built = get_method("bce").load_class()(info, {"structural_mask": "blocking", "modalities": "ehr"}).build_model()
    size = info.backbone
    torch.manual_seed(0)
    direct = FlexCare(num_labels=info.num_labels, task=info.kind, ehr_dim=info.ehr_dim, note_dim=info.note_dim,
                      hidden=size.hidden, layers=size.layers, heads=size.heads, ff=size.ff, experts=size.experts,
                      top_k=size.top_k, structural_mask="blocking", modalities="ehr")
    assert isinstance(built, FlexCare) and (built.structural_mask, built.modalities) == ("blocking", "ehr")
    assert built.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))
