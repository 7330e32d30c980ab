"""Noise draws as a variance source: ``--noise-draws K`` plans each (setting, seed) on K noise draws."""
import json

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.errors import RecordError, UsageError
from benchmark.noise import NOISE_DRAW_POLICY, make_noisy, noise_draw_seed, spec_noise_seed
from benchmark.options import Execution
from benchmark.protocol import REFERENCE_NOISE_SEED, SMOKE, parse_noise
from benchmark.records import run_id, validate
from benchmark.runner import load_task, plan, run_one
from leaderboard.reproduce import arguments

# Run ids of these specs as harness 0.4.0 planned them before noise draws existed (commit 86b3051):
# the default (one draw) and draw 0 of any --noise-draws must keep them.
BEFORE = {("bce", "smoke", "syn-phe", 30): "c198c6bffdfbeac2", ("miracl", "quick", "syn-phe", 100): "0923cc8dbbe0a21b"}


@pytest.mark.parametrize("key", BEFORE)
def test_run_ids_are_unchanged_at_the_default_and_for_draw_0(key):
    method, track, task, seed = key
    one = plan(method, track, [task], ["sym-20"], [seed]).specs
    assert [run_id(s) for s in one] == [BEFORE[key]]
    assert "noise_draw" not in one[0]
    assert plan(method, track, [task], ["sym-20"], [seed], noise_draws=1).specs == one
    three = plan(method, track, [task], ["sym-20"], [seed], noise_draws=3).specs
    assert three[0] == one[0] and run_id(three[0]) == BEFORE[key]
    assert [s.get("noise_draw") for s in three] == [None, {"index": 1, "policy": NOISE_DRAW_POLICY},
                                                   {"index": 2, "policy": NOISE_DRAW_POLICY}]
    assert len({run_id(s) for s in three}) == 3


def test_a_grid_of_draws_is_draw_0_of_the_whole_grid_then_each_other_draw():
    default = plan("bce", "smoke", None, ["sym-20", "asym-0-40"], [30, 40]).specs
    drawn = plan("bce", "smoke", None, ["sym-20", "asym-0-40"], [30, 40], noise_draws=2).specs
    assert drawn[:len(default)] == default
    rest = drawn[len(default):]
    assert all(s["noise_draw"]["index"] == 1 for s in rest)
    assert [{k: v for k, v in s.items() if k != "noise_draw"} for s in rest] == default


def test_a_draw_is_one_noisy_matrix_for_every_run_seed_and_draws_differ():
    seeds = {}
    for draw in range(4):
        per_seed = {spec_noise_seed(s) for s in plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30, 40, 100],
                                                      noise_draws=4).specs if (s.get("noise_draw") or {}).get("index", 0) == draw}
        assert len(per_seed) == 1  # crossed: the draw, not the run seed, fixes the noise
        seeds[draw] = per_seed.pop()
    assert seeds[0] == REFERENCE_NOISE_SEED == noise_draw_seed(REFERENCE_NOISE_SEED, 0)
    assert len(set(seeds.values())) == 4
    assert seeds[1] == int(np.random.SeedSequence([123, 1]).generate_state(1)[0])  # the documented rule
    assert all(0 <= s < 2**32 for s in seeds.values())
    clean = load_task(SMOKE.task("syn-phe")).train.labels.numpy()
    matrices = [make_noisy(clean, parse_noise("sym-20"), seeds[d]) for d in range(4)]
    assert len({m.checksum for m in matrices}) == 4
    for m in matrices:  # every draw is the same setting: its realised rates near the nominal ones
        assert abs(m.realised_rho_plus - 0.2) < 0.05 and abs(m.realised_rho_minus - 0.2) < 0.03


def test_draws_need_the_reference_policy_and_a_count_of_at_least_one():
    with pytest.raises(UsageError, match="--noise-draws 2 with --noise-seed per-seed"):
        plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30], noise_seed_policy="per-seed", noise_draws=2)
    plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30], noise_seed_policy="per-seed", noise_draws=1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="--noise-draws"):
            plan("bce", "smoke", ["syn-phe"], ["sym-20"], [30], noise_draws=bad)


def test_the_cli_refuses_a_bad_count_and_a_per_seed_policy(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--method", "bce", "--track", "smoke", "--noise-draws", "0"])
    assert "argument --noise-draws: expected a positive integer, got '0'" in capsys.readouterr().err
    assert main(["bench", "--method", "bce", "--track", "smoke", "--noise-draws", "2", "--noise-seed", "per-seed"]) == 2
    assert "--noise-seed reference" in capsys.readouterr().err


def test_status_plans_the_same_draws(tmp_path, capsys):
    assert main(["status", "--method", "bce", "--track", "smoke", "--tasks", "syn-phe", "--noise", "sym-20",
                 "--seeds", "30", "--noise-draws", "3", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "draw" in out.splitlines()[0] and "0 done, 0 failed, 0 running, 3 pending" in out


@pytest.fixture(scope="module")
def draw_records(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    specs = plan("bce", "smoke", ["syn-phe"], ["asym-20-40"], [30], noise_draws=2).specs
    return [run_one(spec, str(results), Execution(device="cpu")) for spec in specs], results


def test_a_draw_run_records_its_seed_and_its_own_noisy_matrix(draw_records):
    (zero, one), _ = draw_records
    assert zero["status"] == one["status"] == "done"
    assert zero["run_id"] == run_id(plan("bce", "smoke", ["syn-phe"], ["asym-20-40"], [30]).specs[0])
    assert zero["noise"]["seed"] == 123 and one["noise"]["seed"] == noise_draw_seed(123, 1)
    assert zero["fingerprints"]["noisy_labels"] != one["fingerprints"]["noisy_labels"]
    assert zero["fingerprints"]["data"] == one["fingerprints"]["data"]
    assert one["spec"]["noise_draw"] == {"index": 1, "policy": NOISE_DRAW_POLICY}


def test_a_draw_records_spec_is_validated_naming_the_field(draw_records):
    (_, one), _ = draw_records
    validate(json.loads(json.dumps(one)))
    for draw, field in (({"index": 0, "policy": NOISE_DRAW_POLICY}, "spec.noise_draw.index"),
                        ({"index": "1", "policy": NOISE_DRAW_POLICY}, "spec.noise_draw.index"),
                        ({"index": 1}, "spec.noise_draw.policy"), (3, "spec.noise_draw")):
        bad = json.loads(json.dumps(one))
        bad["spec"]["noise_draw"] = draw
        bad["run_id"] = run_id(bad["spec"])
        with pytest.raises(RecordError, match=field):
            validate(bad)


def test_results_import_checks_a_draws_noise_seed(draw_records):
    from benchmark.results_import import check_record

    (_, one), _ = draw_records
    assert check_record(json.loads(json.dumps(one))) is None
    forged = json.loads(json.dumps(one))
    forged["noise"]["seed"] = 123
    assert "noise draw" in check_record(forged)
    other = json.loads(json.dumps(one))
    other["spec"]["noise_draw"]["policy"] = "counter"
    other["run_id"] = run_id(other["spec"])
    assert "unknown noise draw policy" in check_record(other)


def test_a_draw_runs_command_plans_it_again(draw_records):
    (_, one), _ = draw_records
    words = arguments(one["spec"])
    assert words[words.index("--noise-draws") + 1] == "2"
    assert one["spec"] in plan("bce", "smoke", ["syn-phe"], ["asym-20-40"], [30], noise_draws=2).specs
