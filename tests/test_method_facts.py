"""Method facts on the leaderboard: parameter counts (trainable, frozen, the note encoder's), whether the
note encoder saw MIMIC notes, and the protocol flags (harness guarantees and the manifest's)."""
import pytest

from benchmark.errors import UsageError
from benchmark.marks import encoder_pretraining
from leaderboard import Options, build
from leaderboard.aggregate import build_board
from leaderboard.report import run_row
from record_factory import SEEDS, make_record, write_records


def test_a_runs_record_counts_trainable_frozen_and_note_encoder_parameters(tmp_path):
    from transformers import AutoModel

    from benchmark.data.notes import resolve
    from benchmark.runner import plan, run_one

    spec = plan("bce", "smoke", tasks=["syn-phe"], noises=["sym-20"], seeds=[30]).specs[0]
    record = run_one(spec, str(tmp_path))
    # Counted here from the real weights (the harness counts from the configuration alone).
    minilm = AutoModel.from_pretrained(resolve("minilm"))
    assert record["environment"]["encoder_parameters"] == sum(p.numel() for p in minilm.parameters()) == 22_713_216
    assert record["method"]["parameters_frozen"] == 0 and record["method"]["parameters"] > 0
    row = run_row(record)
    assert (row["parameters_frozen"], row["encoder_parameters"]) == (0, 22_713_216)


def test_the_encoder_count_comes_from_the_notes_build_and_an_older_cache_entry_is_counted_anew(tmp_path, monkeypatch):
    import dataclasses

    from benchmark import runner

    spec = runner.plan("bce", "smoke", tasks=["syn-phe"], noises=["sym-20"], seeds=[30]).specs[0]

    def no_count(name):
        raise AssertionError("the encoder was built again to count it")

    monkeypatch.setattr(runner, "count_encoder", no_count)
    assert runner.run_one(spec, str(tmp_path / "a"))["environment"]["encoder_parameters"] == 22_713_216
    # An entry built before the count was kept: the encoder is counted from its configuration.
    monkeypatch.undo()
    loaded = runner.load_task
    monkeypatch.setattr(runner, "load_task", lambda task: dataclasses.replace(loaded(task), encoder_parameters=None))
    assert runner.run_one(spec, str(tmp_path / "b"))["environment"]["encoder_parameters"] == 22_713_216


@pytest.mark.parametrize("name, path, saw", [
    ("emilyalsentzer/Bio_ClinicalBERT", None, True),
    ("folder-sha256:0123", "/models/bluebert_pubmed_mimic_uncased", True),
    ("yikuan8/Clinical-Longformer", None, True),
    ("dmis-lab/biobert-base-cased-v1.2", None, False),
    ("minilm", None, False),
    ("random-bert-base", None, False),
    ("folder-sha256:4567", "/models/my-encoder", None),
])
def test_the_contamination_flag_names_clinicalbert_family_encoders(name, path, saw):
    assert encoder_pretraining(name, path)[0] is saw


def records(encoder, frozen=12, encoder_parameters=108_310_272):
    out = []
    for s in SEEDS:
        r = make_record("bce", "sym-20", s, 0.4, encoder=encoder)
        r["method"]["parameters_frozen"] = frozen
        r["environment"]["encoder_parameters"] = encoder_parameters
        out.append(r)
    return out


def test_the_methods_table_states_parameters_encoder_contamination_and_protocol(tmp_path):
    rows = [run_row(r) for r in records("emilyalsentzer/Bio_ClinicalBERT") + [make_record("gce", "sym-20", 30, 0.3)]]
    manifests = {"bce": {"tuned_per_noise_setting": False}, "gce": {"tuned_per_noise_setting": True}}
    meta = {m["name"]: m for m in build_board(rows, Options(), manifests)["tracks"][0]["methods"]}
    bce = meta["bce"]
    assert bce["parameters"] == [1000] and bce["parameters_frozen"] == [12]
    assert bce["encoders"] == [{"encoder": "emilyalsentzer/Bio_ClinicalBERT", "path": None, "parameters": [108_310_272],
                                "mimic_notes": True, "pretraining": "ClinicalBERT family: pretrained on MIMIC-III notes"}]
    assert bce["protocol"] == {"clean_labels": "never", "selection_on_test": "never", "tuned_per_noise_setting": False}
    assert meta["gce"]["protocol"]["tuned_per_noise_setting"] is True and meta["gce"]["parameters_frozen"] == []
    # Records of harnesses before these fields: no frozen count, no encoder count.
    assert meta["gce"]["encoders"][0]["parameters"] == []

    write_records(tmp_path / "r", records("emilyalsentzer/Bio_ClinicalBERT"))
    build(tmp_path / "r", tmp_path / "site", Options())
    page = (tmp_path / "site" / "index.html").read_text()
    assert "<code>emilyalsentzer/Bio_ClinicalBERT</code>: 108,310,272" in page
    assert "MIMIC notes: yes (contaminated)" in page and "<td>never</td><td>never</td><td>no</td>" in page
    assert "Uses clean labels: never, and selection on test: never, for every method" in page


def test_the_manifest_flag_is_a_boolean(tmp_path, monkeypatch):
    from pathlib import Path

    from benchmark.registry import read_manifest

    source = (Path(__file__).parent.parent / "methods" / "bce" / "manifest.yaml").read_text()
    assert read_manifest(Path(__file__).parent.parent / "methods" / "bce")["tuned_per_noise_setting"] is False
    (tmp_path / "bce").mkdir()
    (tmp_path / "bce" / "manifest.yaml").write_text(source.replace("tuned_per_noise_setting: false",
                                                                   "tuned_per_noise_setting: sometimes"))
    with pytest.raises(UsageError, match="'tuned_per_noise_setting' must be true or false"):
        read_manifest(tmp_path / "bce")
