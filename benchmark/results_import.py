"""Results-only submissions: ``ehrbench results import DIR`` checks foreign run records and files them.

This is how someone with MIMIC access submits ``paper``-track results without sharing data: they run
``ehrbench bench`` on their machine and send the records. Each record is checked on its own, then as
a group; a refused record is one line naming the file and the reason, and nothing of it is filed.

Verified for every record:

- the schema (``records.validate``: version, fields, types) and ``run_id`` = hash of the spec;
- a finished run (``status: done``) of this harness version (``environment.harness_version``);
- the spec is the one this checkout would plan: a known track, task, noise setting and seed policy
  (and, for a run of ``--noise-draws``' other draws, the known draw policy under the reference seed policy),
  the track's budget and backbone, the data generator version, a known method at its current version
  with hyper-parameters its schema accepts (``runner.make_spec`` rebuilds it; only the note encoder
  may differ from the task's) and the method's code hash equals this checkout's;
- the metrics are internally consistent: one curve row per epoch of the budget, ``metrics.final``
  equal to the last row, per-label APs (one per label, in [0, 1]) averaging to the mAP in every row,
  ``metrics.collapsed`` (where present) the one ``marks.collapse`` gives for the curve;
- the noise summary matches the spec (rates, the noise seed of its policy and draw) and its checksum is
  the recorded one.

Verified where the data is here: for synthetic tasks already in the tensor cache (or with
``--verify-data``, which builds them), the data fingerprint equals the local one and the noisy-label
checksum is recomputed from the clean training labels and the noise spec.

Verified as consistency only (real data never leaves its owner): every record of a (track, task,
encoder), imported or already under ``results/``, has one data fingerprint, and every record of a
(track, task, encoder, noise setting, noise seed) one noisy-label checksum.

Per group of seeds (a cell: the whole spec less its seed, i.e. method, version, hyper-parameters, track,
task, encoder, noise, seed policy, budget, backbone, data generator): the imported
and already filed records together cover the protocol's seeds.

Not verified: that the numbers came from training at all (a consistent forgery passes; a reviewer's
rerun of one cell is the remedy), the hardware and timings, the git state of the submitter's checkout.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BenchError, RecordError
from .marks import collapse
from .records import FINAL_METRICS, RecordStore, harness_mismatch

TOLERANCE = 1e-6  # mAP vs mean of per-label APs: float32 on the device, float64 here


@dataclass
class Outcome:
    filed: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_record(record: dict) -> str | None:
    """The reason a schema-valid record is refused on its own, or None."""
    from .noise import NOISE_DRAW_POLICY, spec_noise_seed
    from .protocol import SEEDS, get_track, parse_noise
    from .registry import get_method
    from .runner import make_spec

    spec = record["spec"]
    if record["status"] != "done":
        return f"a {record['status']} run: only finished runs are imported"
    other = harness_mismatch(record)
    if other:
        return f"{other}: rerun with this version"
    try:
        track = get_track(spec.get("track"))
        task = track.task(spec.get("task"))
        encoder = (spec.get("task_spec") or {}).get("encoder", task.encoder)
        task = dataclasses.replace(task, encoder=encoder)
        setting = parse_noise(spec["noise"]["name"])
        entry = get_method(spec["method"]["name"])
    except (BenchError, KeyError, TypeError) as e:
        return f"spec names something this harness does not know: {e}"
    if spec["method"].get("version") != entry.version:
        return f"method {entry.name} version {spec['method'].get('version')!r}, methods/{entry.name} is {entry.version}"
    hparams = spec["method"].get("hparams")
    if not isinstance(hparams, dict):
        return "spec.method.hparams must be a mapping"
    if "hparam_schema" in entry.manifest:
        from .hparams import validate as validate_hparams

        try:
            validate_hparams(entry.name, hparams, entry.manifest["hparam_schema"])
        except BenchError as e:
            return str(e)
    if spec.get("noise_seed_policy") not in ("reference", "per-seed"):
        return f"unknown noise seed policy {spec.get('noise_seed_policy')!r}"
    if spec.get("seed") not in SEEDS:
        return f"seed {spec.get('seed')!r} is not one of the protocol's seeds {', '.join(map(str, SEEDS))}"
    draw = spec.get("noise_draw")
    if draw is not None:  # the schema checked its fields' types
        if draw["policy"] != NOISE_DRAW_POLICY:
            return f"unknown noise draw policy {draw['policy']!r} (this harness draws by {NOISE_DRAW_POLICY!r})"
        if spec["noise_seed_policy"] != "reference":
            return "a noise draw other than the protocol's needs the reference noise seed policy"
    expected = json.loads(json.dumps(make_spec(entry, track, task, setting, spec["seed"], spec["noise_seed_policy"], hparams,
                                               draw["index"] if draw else 0)))
    diff = _first_difference(spec, expected, "spec")
    if diff:
        where, got, want = diff
        return f"{where} is {_short(got)}, the '{track.name}' protocol has {_short(want)}"
    if record["method"].get("code_hash") != entry.code_hash():
        return f"method code hash differs from methods/{entry.name} in this checkout: the run used other code"

    reason = _check_metrics(record["metrics"], track.budget.epochs, task.num_labels)
    if reason:
        return reason
    noise = record["noise"]
    if noise.get("checksum") != record["fingerprints"].get("noisy_labels"):
        return "noise.checksum differs from fingerprints.noisy_labels"
    if noise.get("seed") != spec_noise_seed(spec):
        return f"noise.seed {noise.get('seed')!r} does not follow the spec's noise seed policy and noise draw"
    if setting.family != "bal" and not (_close(noise.get("rho_plus"), setting.rho_plus / 100)
                                        and _close(noise.get("rho_minus"), setting.rho_minus / 100)):
        return f"noise rates {noise.get('rho_plus')!r}/{noise.get('rho_minus')!r} are not those of {setting.name}"
    return None


def _check_metrics(metrics: dict, epochs: int, num_labels: int) -> str | None:
    curve, final = metrics.get("curve"), metrics["final"]
    if not isinstance(curve, list) or len(curve) != epochs:
        return f"metrics.curve has {len(curve) if isinstance(curve, list) else 'no'} rows, the budget has {epochs} epochs"
    for i, row in enumerate(curve, 1):
        if not isinstance(row, dict) or row.get("epoch") != i:
            return f"metrics.curve row {i} is not epoch {i}"
        reason = _check_aps(row, f"metrics.curve epoch {i}", num_labels)
        if reason:
            return reason
    for key in FINAL_METRICS:
        if final.get(key) != curve[-1].get(key):
            return f"metrics.final.{key} differs from the last epoch of the curve ({_short(final.get(key))} vs {_short(curve[-1].get(key))})"
    # Absent in records written before the field; present, it must be what the curve says (no hidden collapse).
    if "collapsed" in metrics and metrics["collapsed"] != collapse(curve):
        return f"metrics.collapsed is not what the curve gives ({_short(metrics['collapsed'])} vs {_short(collapse(curve))})"
    return _check_aps(final, "metrics.final", num_labels)


def _check_aps(row: dict, where: str, num_labels: int) -> str | None:
    aps, value = row.get("per_label_ap"), row.get("map")
    if not (isinstance(aps, list) and len(aps) == num_labels and all(isinstance(a, (int, float)) and 0 <= a <= 1 for a in aps)):
        return f"{where}.per_label_ap must be {num_labels} numbers in [0, 1]"
    if not (isinstance(value, (int, float)) and math.isfinite(value) and abs(sum(aps) / len(aps) - value) <= TOLERANCE):
        return f"{where}.map {value!r} is not the mean of its per-label APs ({sum(aps) / len(aps):.6f})"
    return None


def _first_difference(got, want, where: str):
    """(dotted path, got, want) of the first leaf where two JSON values differ, or None."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(set(got) | set(want)):
            diff = _first_difference(got.get(key), want.get(key), f"{where}.{key}")
            if diff:
                return diff
        return None
    return None if got == want else (where, got, want)


def _close(a, b) -> bool:
    return isinstance(a, (int, float)) and abs(a - b) <= 1e-9


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _local_data(task_spec: dict, verify_data: bool, memo: dict):
    """(fingerprint, clean training labels) of a synthetic task from the tensor cache, or None."""
    from .protocol import TaskSpec

    key = json.dumps(task_spec, sort_keys=True)
    if key not in memo:
        memo[key] = None
        spec = TaskSpec(**task_spec)
        if spec.source == "synthetic":
            from .data.cache import TensorCache
            from .data import cache_key, materialise

            if verify_data:
                data = materialise(spec)
                memo[key] = (data.fingerprint, data.train.labels.numpy())
            else:
                hit = TensorCache().load(spec.name, cache_key(spec, None), verify=False)
                if hit is not None:
                    arrays, manifest = hit
                    memo[key] = (manifest["fingerprint"], arrays["train_labels"])
    return memo[key]


def _local_evidence(task_spec: dict, fingerprint: str, verify_data: bool):
    """The cached under-coding evidence of a synthetic task's training labels (computed with ``verify_data``), or None."""
    from .data import evidence
    from .protocol import TaskSpec

    spec = TaskSpec(**task_spec)
    found = evidence.load(spec, fingerprint)
    if found is None and verify_data:
        from .data import materialise

        found = evidence.train_evidence(spec, materialise(spec))
    return found


def _data_key(spec: dict) -> tuple:
    return spec["track"], spec["task"], (spec.get("task_spec") or {}).get("encoder")


def _seed_group(spec: dict) -> tuple:
    """A cell: the whole spec less its seed (as the tables group runs, ``leaderboard.report.cell_key``)."""
    return (*_data_key(spec), json.dumps({k: v for k, v in spec.items() if k != "seed"}, sort_keys=True))


def import_records(source: str | Path, results: str | Path = "results", check_only: bool = False,
                   verify_data: bool = False) -> Outcome:
    from .noise import make_noisy, spec_noise_seed
    from .protocol import SEEDS, parse_noise

    source, store, out = Path(source), RecordStore(results), Outcome()
    if not source.is_dir():
        from .errors import UsageError

        raise UsageError(f"{source}: not a folder of run records")
    files = sorted(source.rglob("*.json"))
    if not files:
        out.notes.append(f"{source}: no *.json run records found")
    candidates: dict[Path, dict] = {}
    for path in files:
        name = str(path.relative_to(source))
        try:
            record = store.read(path)
        except RecordError as e:
            out.refused.append(f"{name}: {str(e).removeprefix(f'{path}: ')}")
            continue
        reason = check_record(record)
        if reason:
            out.refused.append(f"{name}: {reason}")
            continue
        candidates[path] = record

    # The local data, where it is here: fingerprint and recomputed noisy-label checksum.
    memo: dict = {}
    for path, record in list(candidates.items()):
        local = _local_data(record["spec"]["task_spec"], verify_data, memo)
        if local is None:
            continue
        fingerprint, clean = local
        spec = record["spec"]
        reason = None
        if record["fingerprints"]["data"] != fingerprint:
            reason = f"data fingerprint {record['fingerprints']['data'][:16]} is not this task's ({fingerprint[:16]})"
        else:
            setting = parse_noise(spec["noise"]["name"])
            evidence = _local_evidence(spec["task_spec"], fingerprint, verify_data) if setting.family == "under" else None
            if setting.family == "under" and evidence is None:
                out.notes.append(f"{path.relative_to(source)}: no local evidence of {spec['task']} for under-coding; "
                                 f"noisy-label checksum checked for consistency only (--verify-data computes it)")
            else:
                noisy = make_noisy(clean, setting, spec_noise_seed(spec), evidence)
                if noisy.checksum != record["fingerprints"]["noisy_labels"]:
                    reason = "noisy-label checksum differs from the one recomputed from the clean labels and the noise spec"
        if reason:
            out.refused.append(f"{path.relative_to(source)}: {reason}")
            del candidates[path]
    verified = {k for k, v in memo.items() if v is not None}
    unverified = {_data_key(r["spec"]) for r in candidates.values()
                  if json.dumps(r["spec"]["task_spec"], sort_keys=True) not in verified}
    for key in sorted(unverified, key=str):
        out.notes.append(f"{'/'.join(k for k in key[:2])}: no local data; data fingerprint and noisy-label checksum "
                         "checked for consistency only")

    # Consistency with each other and with what is filed already.
    filed = [r for _, r, error in store.scan() if not error] if store.root.is_dir() else []
    fingerprints, checksums = defaultdict(set), defaultdict(set)
    # What a group's records must agree on: the filed records' value, else the candidates' most common one,
    # so that which record is refused does not depend on the order of the files (a tie accepts none).
    def data_key(r):
        return _data_key(r["spec"])

    def noise_key(r):
        return _data_key(r["spec"]), r["spec"]["noise"]["name"], r["noise"].get("seed")

    for r in filed:
        fingerprints[data_key(r)].add(r["fingerprints"]["data"])
        checksums[noise_key(r)].add(r["fingerprints"]["noisy_labels"])
    accepted_data = _agreed(fingerprints, candidates.values(), data_key, lambda r: r["fingerprints"]["data"])
    accepted_noisy = _agreed(checksums, candidates.values(), noise_key, lambda r: r["fingerprints"]["noisy_labels"])
    for path, record in list(candidates.items()):
        key = data_key(record)
        if record["fingerprints"]["data"] not in accepted_data[key]:
            others = fingerprints[key] | {r["fingerprints"]["data"] for p, r in candidates.items() if p != path and data_key(r) == key}
            out.refused.append(f"{path.relative_to(source)}: data fingerprint {record['fingerprints']['data'][:16]} differs from other "
                               f"records of {'/'.join(key[:2])} ({', '.join(sorted(f[:16] for f in others))})")
        elif record["fingerprints"]["noisy_labels"] not in accepted_noisy[noise_key(record)]:
            out.refused.append(f"{path.relative_to(source)}: noisy-label checksum differs from other records of "
                               f"{'/'.join(key[:2])} {record['spec']['noise']['name']} with the same noise seed")
        else:
            continue
        del candidates[path]

    # Complete seeds per group, counting what is filed already.
    have = defaultdict(set)
    for r in [*filed, *candidates.values()]:
        if r["status"] == "done":
            have[_seed_group(r["spec"])].add(r["spec"]["seed"])
    for path, record in list(candidates.items()):
        missing = sorted(set(SEEDS) - have[_seed_group(record["spec"])])
        if missing:
            spec = record["spec"]
            out.refused.append(f"{path.relative_to(source)}: incomplete seeds for {spec['method']['name']} {spec['track']}/"
                               f"{spec['task']} {spec['noise']['name']}: missing seed {', '.join(map(str, missing))}")
            del candidates[path]

    for path, record in candidates.items():
        target = store.path(record["spec"])
        if target.exists():
            try:
                same = store.read(target) == record
            except RecordError:
                same = False
            if same:
                out.present.append(target)
            else:
                out.refused.append(f"{path.relative_to(source)}: a different record with run id {record['run_id']} is already at {target}")
            continue
        if not check_only:
            store.write(record)
        out.filed.append(target)
    return out


def _agreed(filed: dict, candidates, key, value) -> dict:
    """Per group (``key`` of a record), the values its records may have: those filed already, else the
    candidates' one most common value (none when two are equally common)."""
    counts = defaultdict(Counter)
    for r in candidates:
        counts[key(r)][value(r)] += 1
    agreed = defaultdict(set, {k: set(v) if len(v) == 1 else set() for k, v in filed.items() if v})
    for k, c in counts.items():
        if k not in agreed:
            (top, n), *rest = c.most_common()
            agreed[k] = {top} if not rest or rest[0][1] < n else set()
    return agreed
