import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import cards
from benchmark.errors import UsageError
from benchmark.protocol import (NOISE_SETTINGS, SEEDS, Budget, TaskSpec, balanced_rho_minus, card_task, get_track,
                                parse_noise, task_dict)


@pytest.mark.parametrize("epoch, lr", [(1, 1e-3), (6, 5e-4), (10, 2.4471741852e-5), (11, 0.0), (21, 1e-3)])
def test_learning_rate_follows_the_papers_cosine_schedule(epoch, lr):
    assert Budget().lr_at(epoch) == pytest.approx(lr, abs=1e-6)


def test_trainer_scheduler_matches_the_protocol_schedule_every_epoch():
    budget = Budget()
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=budget.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.cosine_t_max, eta_min=0)
    for epoch in range(1, budget.epochs + 1):
        assert opt.param_groups[0]["lr"] == pytest.approx(budget.lr_at(epoch), abs=1e-9)
        opt.step()
        sched.step()


def test_budget_is_the_papers():
    b = Budget()
    assert (b.epochs, b.lr, b.batch_size, b.cosine_t_max, b.cosine_eta_min) == (30, 1e-3, 128, 10, 0.0)
    assert SEEDS == (30, 40, 100)


def test_grid_has_the_papers_ten_noise_settings_in_order():
    pairs = [(n.family, n.rho_plus, n.rho_minus) for n in NOISE_SETTINGS]
    assert pairs == [
        ("sym", 20, 20), ("sym", 40, 40),
        ("asym", 0, 20), ("asym", 0, 40), ("asym", 20, 0), ("asym", 20, 40), ("asym", 40, 0), ("asym", 40, 20),
        ("bal", 20, None), ("bal", 40, None),
    ]


@pytest.mark.parametrize("c, l_avg, expected", [(25, 4.575, 0.0448), (25, 4.126, 0.0395), (14, 2.246, 0.0382)])
def test_balanced_rho_minus_matches_paper_values(c, l_avg, expected):
    assert balanced_rho_minus(0.2, c, l_avg) == pytest.approx(expected, abs=1e-4)
    assert parse_noise("bal-20").rates(c, l_avg) == pytest.approx((0.2, expected), abs=1e-4)
    assert parse_noise("bal-40").rates(c, l_avg)[1] == pytest.approx(2 * expected, abs=2e-4)


def test_noise_names_parse_to_rates():
    assert parse_noise("asym-20-40").rates(25, 4.0) == (0.2, 0.4)
    assert parse_noise("SYM-40").rates(25, 4.0) == (0.4, 0.4)
    assert parse_noise("asym-12.5-3").rates(25, 4.0) == (0.125, 0.03)
    assert parse_noise("clean").rates(25, 4.0) == (0.0, 0.0)
    assert parse_noise("bal-20").label() == "(20,r)"


def test_under_coding_settings_parse_to_their_own_setting_with_a_class_conditional_twin():
    under = parse_noise("under-40")
    assert (under.name, under.family, under.rates(25, 4.0), under.label()) == ("under-40", "under", (0.4, 0.0), "u(40,0)")
    assert parse_noise("UNDER-40.0") == under and parse_noise(" under-20 ").name == "under-20"
    assert under.twin() == parse_noise("asym-40-0")  # the paper's setting, as the user names it
    assert parse_noise("under-12.5").name == "under-12.5" and parse_noise("under-12.5").twin().name == "asym-12.5-0"
    assert parse_noise("under-0").name == "clean"  # drops nothing
    assert parse_noise("under-40") != parse_noise("asym-40-0")  # same counts, other entries: not one setting
    with pytest.raises(ValueError, match="only under-coding settings have a twin"):
        parse_noise("asym-40-0").twin()
    assert under.spec_fields() == {"law_version": "1", "strength": 2.0, "evidence_version": "1"}
    assert all(s.spec_fields() == {} for s in NOISE_SETTINGS)
    assert [s.name for s in NOISE_SETTINGS] == ["sym-20", "sym-40", "asym-0-20", "asym-0-40", "asym-20-0", "asym-20-40",
                                                "asym-40-0", "asym-40-20", "bal-20", "bal-40"]  # the default grid


# Run ids of the quick track's task, method bce version 1 without hyper-parameters, seed 30, reference noise
# seed, as they were before under-coding entered the protocol: a new family leaves them as they are.
PINNED_RUN_IDS = {"sym-20": "d995ea4b5f444c86", "sym-40": "9423fd4dad696bbd", "asym-0-20": "1441604aed719fa3",
                  "asym-0-40": "d0a38958a9693c53", "asym-20-0": "25c33453cf15d692", "asym-20-40": "015564624038b7c4",
                  "asym-40-0": "d4bd82e739876184", "asym-40-20": "4f171dbed9e2a307", "bal-20": "e305b2be01cc4e85",
                  "bal-40": "d44de556c7ea23e4", "clean": "2c8de4acb1f33bed", "asym-12.5-0": "91cdc14bd91890da",
                  "sym-7": "1e721078d3c65ec5", "bal-5": "e4f470aa8385b1bf"}


def test_run_ids_of_the_class_conditional_settings_are_unchanged_and_under_coding_has_its_own():
    from types import SimpleNamespace

    from benchmark.protocol import QUICK
    from benchmark.records import run_id
    from benchmark.runner import make_spec

    entry = SimpleNamespace(name="bce", version="1", hparams={})

    def spec(noise):
        return make_spec(entry, QUICK, QUICK.tasks[0], parse_noise(noise), 30, "reference")

    assert {name: run_id(spec(name)) for name in PINNED_RUN_IDS} == PINNED_RUN_IDS
    assert spec("asym-40-0")["noise"] == {"name": "asym-40-0", "family": "asym", "rho_plus_pct": 40, "rho_minus_pct": 0}
    under = spec("under-40")
    assert under["noise"] == {"name": "under-40", "family": "under", "rho_plus_pct": 40, "rho_minus_pct": 0,
                              "law_version": "1", "strength": 2.0, "evidence_version": "1"}
    ids = {run_id(spec(n)) for n in ("under-40", "under-20", "under-12.5", "asym-40-0")}
    assert len(ids) == 4 and run_id(spec("under-40.0")) == run_id(under)


@pytest.mark.parametrize("text, message", [
    ("gauss-20", "unknown noise setting 'gauss-20'"),
    ("asym-20", "malformed noise setting 'asym-20'"),
    ("sym-20-30", "malformed noise setting 'sym-20-30'"),
    ("asym-120-0", "rate 120 is not in [0, 100)"),
    ("sym-abc", "malformed noise setting 'sym-abc'"),
    ("bal", "malformed noise setting 'bal'"),
    ("", "unknown noise setting ''"),
    ("sym-100", "malformed noise setting 'sym-100': rate 100 is not in [0, 100)"),
    ("asym-20-100", "malformed noise setting 'asym-20-100': rate 100 is not in [0, 100)"),
    ("asym-20-", "malformed noise setting 'asym-20-': expected sym-R, asym-RPLUS-RMINUS, bal-RPLUS or under-RPLUS"),
    ("under", "malformed noise setting 'under': expected sym-R, asym-RPLUS-RMINUS, bal-RPLUS or under-RPLUS"),
    ("under-", "malformed noise setting 'under-': expected"),
    ("under-20-0", "malformed noise setting 'under-20-0': expected"),  # rho- of under-coding is always 0
    ("under-100", "malformed noise setting 'under-100': rate 100 is not in [0, 100)"),
    ("under--20", "malformed noise setting 'under--20'"),
    ("under-forty", "malformed noise setting 'under-forty'"),
    ("undr-40", "unknown noise setting 'undr-40'; did you mean 'under-40'?"),
    ("bal-20-10", "malformed noise setting 'bal-20-10': expected sym-R"),
    ("sym--5", "malformed noise setting 'sym--5'"),
    ("sym-1e3", "malformed noise setting 'sym-1e3'"),
    ("sym-20.5.1", "malformed noise setting 'sym-20.5.1'"),
    ("sym-\u0662\u0660", "malformed noise setting 'sym-\u0662\u0660'"),  # Arabic-Indic digits are not rates
    ("symm-20", "unknown noise setting 'symm-20'; did you mean 'sym-20'?"),
])
def test_bad_noise_strings_name_the_problem(text, message):
    with pytest.raises(UsageError) as err:
        parse_noise(text)
    assert message in str(err.value)


def test_unknown_track_lists_valid_choices():
    with pytest.raises(UsageError, match="unknown track 'quik'; did you mean 'quick'\\?; valid choices: demo, full, paper, quick, smoke"):
        get_track("quik")


def test_unknown_task_lists_the_tracks_tasks():
    with pytest.raises(UsageError, match="unknown task 'phe' in track 'quick'.*valid choices: syn-phe"):
        get_track("quick").task("phe")


def test_full_track_has_the_papers_three_tasks_at_mimic_scale():
    tasks = {t.name: (t.n_total, t.num_labels, t.cardinality) for t in get_track("full").tasks}
    assert tasks == {"mimic4-phe": (59_798, 25, 4.575), "mimic4-dia": (132_576, 14, 2.246),
                     "mimic3-phe": (41_904, 25, 4.126)}
    dia = get_track("full").task("mimic4-dia")
    assert (dia.missing_ehr, dia.missing_note, dia.task_weight) == (0.763, 0.326, 0.2)


# Every field of every task of every track, as they were before the tracks were built from the task cards.
# A run id hashes its task spec: changing one value here changes every run id of that task.
_SPEC = {"n_total": 0, "cardinality": 0.0, "missing_ehr": 0.0, "missing_note": 0.0, "max_hours": 512,
         "note_tokens": 512, "encoder": "minilm", "normaliser": "train", "uncertain": "negative",
         "task_dir": "phenotyping", "data_dir": "", "task_weight": 1.0}
_PHE4 = {"kind": "phenotyping", "layout": "mimic4", "num_labels": 25}
_DIA4 = {"kind": "diagnosis", "layout": "mimic4", "num_labels": 14, "task_dir": "diagnosis", "task_weight": 0.2}
_PHE3 = {"kind": "phenotyping", "layout": "mimic3-miracl", "num_labels": 25}
TASK_SPECS = {
    "quick": [_SPEC | _PHE4 | {"name": "syn-phe", "source": "synthetic", "n_total": 1792, "cardinality": 4.575,
                               "missing_note": 0.08, "max_hours": 24, "note_tokens": 16}],
    # Notes at the real pipelines' lengths (generator 4): the only track whose specs, hence run ids, changed.
    "full": [
        _SPEC | _PHE4 | {"name": "mimic4-phe", "source": "synthetic", "n_total": 59798, "cardinality": 4.575,
                         "missing_note": 0.08, "note_scale": 1.0},
        _SPEC | _DIA4 | {"name": "mimic4-dia", "source": "synthetic", "n_total": 132576, "cardinality": 2.246,
                         "missing_ehr": 0.763, "missing_note": 0.326, "note_scale": 1.0},
        _SPEC | _PHE3 | {"name": "mimic3-phe", "source": "synthetic", "n_total": 41904, "cardinality": 4.126,
                         "missing_note": 0.35, "note_scale": 1.0},
    ],
    # The reference z-scores real data with the published MIMIC-III statistics (11.6).
    "paper": [
        _SPEC | _PHE4 | {"name": "mimic4-phe", "source": "real", "data_dir": "mimic4", "normaliser": "reference"},
        _SPEC | _DIA4 | {"name": "mimic4-dia", "source": "real", "data_dir": "mimic4", "normaliser": "reference"},
        _SPEC | _PHE3 | {"name": "mimic3-phe", "source": "real", "data_dir": "mimic3", "normaliser": "reference"},
    ],
    "smoke": [
        _SPEC | _PHE4 | {"name": "syn-phe", "source": "synthetic", "n_total": 160, "cardinality": 4.575,
                         "missing_ehr": 0.1, "missing_note": 0.1, "max_hours": 8, "note_tokens": 8},
        _SPEC | _DIA4 | {"name": "syn-dia", "source": "synthetic", "n_total": 160, "cardinality": 2.246,
                         "missing_ehr": 0.5, "missing_note": 0.326, "max_hours": 8, "note_tokens": 8},
    ],
}


@pytest.mark.parametrize("track", sorted(TASK_SPECS))
def test_tasks_built_from_the_cards_are_field_for_field_the_pinned_specs(track):
    got = [task_dict(task) for task in get_track(track).tasks]  # what a run spec holds
    assert got == TASK_SPECS[track]
    # Equal and of the same types: a run id is the hash of the JSON text, where 1 and 1.0 differ.
    assert json.dumps(got, sort_keys=True) == json.dumps(TASK_SPECS[track], sort_keys=True)


def test_only_the_tasks_with_long_notes_changed_their_generator_version_and_cache_key():
    """quick and smoke keep generator 3's notes (note_scale 0): their specs name generator "3" as before, so
    their run ids and records stay, and their tensor caches keep the keys of harness 0.4.0; the full
    track's tasks, whose notes are now as long as MIMIC's, are planned with generator "4"."""
    from benchmark.data.taskdata import cache_key
    from benchmark.runner import plan

    for track, task in (("quick", "syn-phe"), ("smoke", "syn-phe"), ("smoke", "syn-dia")):
        spec = plan("bce", track, [task], ["sym-20"], [30]).specs[0]
        assert spec["data_generator"] == "3" and "note_scale" not in spec["task_spec"]
    assert cache_key(get_track("quick").task("syn-phe"), None)[:16] == "d8b99a38676ca6ab"  # as harness 0.4.0's
    assert cache_key(get_track("smoke").task("syn-dia"), None)[:16] == "be7f1de9bbb09ede"
    for task in ("mimic4-phe", "mimic4-dia", "mimic3-phe"):
        spec = plan("bce", "full", [task], ["sym-20"], [30]).specs[0]
        assert spec["data_generator"] == "4" and spec["task_spec"]["note_scale"] == 1.0
    # A record of an earlier harness has no note_scale: its spec reads back as the short notes it ran on.
    old = {k: v for k, v in spec["task_spec"].items() if k != "note_scale"}
    assert TaskSpec(**old).note_scale == 0.0


def test_note_scale_is_a_synthetic_tasks_and_at_least_0():
    from benchmark.runner import plan

    spec = plan("bce", "quick", noises=["sym-20"], seeds=[30], note_scale=1.0).specs[0]
    assert spec["task_spec"]["note_scale"] == 1.0 and spec["data_generator"] == "4"
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="--note-scale"):
            plan("bce", "quick", noises=["sym-20"], seeds=[30], note_scale=bad)
    with pytest.raises(UsageError, match="--note-scale: task 'mimic3-demo' of track 'demo' reads vendored files"):
        plan("bce", "demo", noises=["sym-20"], seeds=[30], note_scale=1.0)


def test_a_track_overrides_only_the_sizes_it_writes():
    card = cards.get_card("mimic4-dia")
    task = card_task(card, "synthetic", "tiny", n_total=10, max_hours=4)
    assert (task.name, task.n_total, task.max_hours, task.missing_ehr, task.cardinality) == ("tiny", 10, 4, 0.763, 2.246)
    assert (task.uncertain, task.task_dir, task.task_weight, task.data_dir) == ("negative", "diagnosis", 0.2, "")
    assert card_task(card, "real").data_dir == "mimic4" and card_task(card, "real").n_total == 0
    with pytest.raises(ValueError, match="source must be 'synthetic', 'real' or 'vendored'"):
        card_task(card, "demo")


def test_importing_the_protocol_reads_the_cards_without_torch():
    code = "import sys, benchmark.protocol; print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    assert out == "[]"


def test_the_paper_track_normalises_with_the_published_statistics_unless_told_otherwise():
    from benchmark.errors import UsageError
    from benchmark.records import run_id
    from benchmark.runner import plan

    assert {t.normaliser for t in get_track("paper").tasks} == {"reference"}
    assert {t.normaliser for t in get_track("full").tasks} == {"train"}  # synthetic series are not MIMIC's
    default = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30]).specs[0]
    switched = plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30], normaliser="reference").specs[0]
    assert switched["task_spec"]["normaliser"] == "reference" and run_id(switched) != run_id(default)
    with pytest.raises(UsageError, match="--normaliser tarin: expected train or reference or a JSON file"):
        plan("bce", "paper", normaliser="tarin")
