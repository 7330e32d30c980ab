"""The speed comparison measures what it says: the naive step is the reference's training loop as
written (anomaly detection on, inputs copied in), and it leaves nothing switched on behind it."""
import sys
from pathlib import Path

import pytest
import torch

from benchmark.runner import plan
from helpers import smoke_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import speed  # noqa: E402 - perf/ holds scripts, not a package


@pytest.mark.parametrize("as_written", [True, False])
def test_the_naive_step_runs_with_anomaly_detection_only_as_the_reference_does(monkeypatch, as_written):
    spec = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    _, data, _ = smoke_task()
    texts = ["patient stable overnight, creatinine rising"] * len(data.train)
    seen = []
    loss = torch.nn.functional.binary_cross_entropy_with_logits

    def recording_loss(*args, **kwargs):
        seen.append(torch.is_anomaly_enabled())
        return loss(*args, **kwargs)

    monkeypatch.setattr(speed.F, "binary_cross_entropy_with_logits", recording_loss)
    out = speed.naive_steps(spec, data, texts, "minilm", 1, torch.device("cpu"), as_written=as_written)
    assert seen == [as_written] * 4  # three warm-up steps and the timed one
    assert not torch.is_anomaly_enabled()  # the fast runs and the parity check after it run without
    assert out["as_written"] is as_written and out["ms_per_step"] > 0


def test_ranking_agreement_is_spearman_over_the_methods_both_tracks_hold(tmp_path):
    """Reference ranks a > b > c > d; the candidate swaps c and d and lacks e: rho = 1 - 6*2/(4*15) = 0.8."""
    import ranking
    from record_factory import make_record, write_records

    ref = {"bce": 0.7, "focal": 0.6, "gce": 0.5, "asl": 0.4, "miracl": 0.3}
    cand = {"bce": 0.40, "focal": 0.35, "gce": 0.20, "asl": 0.25}
    write_records(tmp_path / "ref", [make_record(m, "sym-40", map=v, track="full", task="mimic4-phe") for m, v in ref.items()])
    write_records(tmp_path / "cand", [make_record(m, "sym-40", map=v) for m, v in cand.items()]
                  + [make_record("bce", "sym-40", seed=40, map=0.30)])  # seed 40: not in --seeds 30
    out = tmp_path / "r.md"
    ranking.main(["--reference", str(tmp_path / "ref"), "--reference-track", "full", "--reference-task", "mimic4-phe",
                  "--candidate", str(tmp_path / "cand"), "--candidate-track", "quick", "--candidate-task", "syn-phe",
                  "--noise", "sym-40", "--seeds", "30", "--out", str(out)])
    text = out.read_text()
    assert "- sym-40: Spearman 0.80 over 4 methods; left out: miracl" in text
    assert "| bce | 0.700 | 0.400 |" in text


def test_a_quick_track_design_changes_sizes_only_and_never_reaches_the_leaderboard(monkeypatch):
    import dataclasses

    import quick_designs  # noqa: E402 - perf/ holds scripts
    from benchmark import protocol

    monkeypatch.setattr(protocol, "TRACKS", dict(protocol.TRACKS))  # the registration stays in this test
    for name, (sizes, backbone) in quick_designs.DESIGNS.items():
        track = quick_designs.register(name)
        assert protocol.get_track(f"quick-{name}") is track and not track.on_leaderboard
        assert track.budget == protocol.QUICK.budget  # the protocol: epochs, Adam's rate, schedule, batch
        task, quick = track.tasks[0], protocol.QUICK.tasks[0]
        changed = {f.name for f in dataclasses.fields(task) if getattr(task, f.name) != getattr(quick, f.name)}
        assert changed == set(sizes) <= {"n_total", "max_hours", "note_tokens"}
        assert track.backbone == backbone
        spec = plan("bce", track.name, noises=["sym-40"], seeds=[30]).specs[0]
        assert spec["track"] == f"quick-{name}" and spec["task_spec"]["n_total"] == task.n_total


def test_grid_costs_come_from_the_records_and_say_when_a_grid_is_incomplete(tmp_path):
    """Three quick BCE runs of 40 s (one of them also built the data, 30 s more) ending 20 s apart, two
    per device: 3 of the grid's 30 runs, wall from the first start to the last end, data left out of
    the run time, device-hours halved."""
    import os

    import grid_costs  # noqa: E402 - perf/ holds scripts
    from record_factory import make_record, write_records

    records = []
    for i, noise in enumerate(("sym-20", "sym-40", "bal-20")):
        r = make_record("bce", noise, total=40.0 + (30.0 if i == 0 else 0.0))
        r["timings"]["data"] = 30.0 if i == 0 else 0.0
        r["created_utc"] = f"2026-01-01T00:01:{20 * i:02d}Z"
        r["environment"]["packed_runs"] = 2
        records.append(r)
    write_records(tmp_path, records)
    [row] = grid_costs.cost_rows([tmp_path])
    assert (row["runs"], row["grid_runs"]) == (3, 30)
    assert row["sum_s"] == 120.0 and row["median_s"] == 40.0 and row["max_s"] == 40.0
    assert row["wall_s"] == 70.0 + 40.0  # the first run started 70 s before its end at 1:00, the last ended at 1:40
    assert row["device_hours"] == 60.0 / 3600
    assert f"| `{os.path.normpath(tmp_path)}` | quick | `syn-phe` | FlexCare (BCE) | CPU: Test CPU 2-core | fp32, 2 packed | 3 of 30 | 1:50 | 2:00 |" \
        in grid_costs.markdown([row])


def test_the_readmes_grid_cost_table_is_the_one_its_records_give(monkeypatch):
    import re

    import grid_costs  # noqa: E402 - perf/ holds scripts

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    found = re.search(r"<!-- grid-costs: (.+?) -->\n(.*?)<!-- /grid-costs -->", readme, re.S)
    assert found, "README.md has no grid-costs block"
    monkeypatch.chdir(root)  # the table names the folders as the README's command does
    folders = [Path(f) for f in found.group(1).split()]
    assert found.group(2).strip() == grid_costs.markdown(grid_costs.cost_rows(folders)), \
        "README's grid cost table differs from its records: regenerate it with perf/grid_costs.py " + found.group(1)
