"""``ehrbench``: run a method's grid, print tables, build the leaderboard, list methods and tracks, and
publish the baselines (every shipped method's grid, committed with the project).

Every user error is one line on stderr (``ehrbench: error: ...``) naming the thing and the valid
choices, with exit status 2; failed runs give exit status 1 once the grid is through.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__, options
from .errors import BenchError, UsageError
from .marks import record_collapse
from .noise import NOISE_SEED_POLICIES
from .options import count, positive_int
from .protocol import NOISE_SETTINGS, SEEDS, TRACKS
from .records import RecordStore


def _csv(text: str | None) -> list[str] | None:
    items = [t.strip() for t in (text or "").replace(" ", ",").split(",") if t.strip()]
    return items or None


def _given(text: str | None, flag: str, example: str) -> list[str] | None:
    """The items of a comma-separated flag; None when the flag was not given, an error when it was
    given without any item (``--seeds ,``): never the defaults in silence."""
    items = _csv(text)
    if items is None and text is not None:
        raise UsageError(f"{flag}: no value in {text!r}; expected a comma-separated list (e.g. {example}), or leave "
                         f"the flag out for the defaults")
    return items


def _seeds(text: str | None) -> list[int] | None:
    items = _given(text, "--seeds", "30,40,100")
    if items is None:
        return None
    try:
        seeds = [int(s) for s in items]
    except ValueError:
        raise UsageError(f"--seeds: expected comma-separated integers (e.g. 30,40,100), got {text!r}") from None
    bad = [s for s in seeds if not 0 <= s < 2**32]  # NumPy's and the noise draw's range
    if bad:
        raise UsageError(f"--seeds: seed {bad[0]} is not in [0, 2**32)")
    return seeds


def _table_format(*extra: str):
    """An argparse type: a tabulate format (or one of ``extra``), not tabulate's silent fallback to 'simple'."""
    def check(text: str) -> str:
        from tabulate import tabulate_formats

        if text in tabulate_formats or text in extra:
            return text
        from .errors import choices_hint

        raise argparse.ArgumentTypeError(f"unknown table format {text!r}{choices_hint(text, [*extra, *tabulate_formats])}")
    check.__name__ = "table format"
    return check


def _note_scale(text: str) -> float:
    """An argparse type: a finite share of the real note lengths, at least 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0 (0: the history section alone, 1: the "
                                         f"real pipelines' note lengths), got {text!r}")
    return value


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _overrides(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set: expected KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise UsageError(f"--set {key.strip()}: value '{value}' is not valid YAML ({str(e).splitlines()[0]})") from None
    return out


def _eta(finished: list[dict], done_at: list[float], left: int, elapsed: float, workers: int) -> float:
    """Seconds until the grid is done. With ``workers`` local workers, a run starts at time 0 on each
    worker and then whenever one finishes (``done_at``, seconds since the start), so the runs in
    flight are the latest starts, each with the mean finished run's wall still to go minus the time
    it has had; the runs queued behind them share the workers. (Elapsed time per finished run counts
    the first runs once per worker: about ``workers`` times too high at the start.) Elsewhere (a
    scheduler's queue) the observed rate is all there is."""
    if not left:
        return 0.0
    if workers < 1:
        return elapsed / len(finished) * left
    per_run = sum(r["timings"]["total"] for r in finished) / len(finished)
    flying = min(workers, left)
    starts = ([0.0] * workers + done_at)[-flying:]
    to_go = [max(0.0, per_run - (elapsed - s)) for s in starts]
    return max(max(to_go), (sum(to_go) + (left - flying) * per_run) / workers)


def cmd_bench(args) -> int:
    import os
    import signal

    # Ctrl-C must stop a grid cleanly even if the parent shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from .runner import execute, plan

    if args.data:
        os.environ["EHRBENCH_DATA"] = args.data  # inherited by worker processes
    # Several methods (comma-separated) make one grid: packed runs can then mix methods.
    grids = _grids(args)
    grid, specs = grids[0], [spec for g in grids for spec in g.specs]
    execution = options.from_args(args)
    _slurm_flags_need_an_executor(args, execution.executor)
    if execution.executor == "slurm":  # before anything is written: nothing could run it
        from .executors import require_slurm

        require_slurm(execution.executor)
    store = _results(args.results)
    try:  # a results path that cannot hold records fails now, not after the first run
        store.root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--results {args.results}: cannot create the folder ({e.strerror})") from None
    if not os.access(store.root, os.W_OK):
        raise UsageError(f"--results {args.results}: the folder is not writable")
    todo = []
    for spec in specs:
        status, detail = store.status(spec)
        if status == "corrupt":
            moved = store.quarantine(spec)
            print(f"warning: {detail}; moved to {moved} and the run will be redone", file=sys.stderr)
        if status != "done":
            todo.append(spec)
    store.prepare(todo)
    n = len(specs)
    if execution.executor == "local":  # elsewhere the runs resolve it where they execute
        execution = execution.resolved(len(todo))
        where = f"{execution.jobs} worker{'s' if execution.jobs > 1 else ''}"
        if execution.compile == "on":
            where += ", model compiled once for all runs"
    else:
        where = f"executor {execution.executor}"
    print(f"{','.join(g.method.name for g in grids)} on track '{grid.track.name}': {n} runs, {n - len(todo)} already done, "
          f"{len(todo)} to run ({where}, device {args.device})", flush=True)

    start, finished, done_at = time.perf_counter(), [], []

    def report(spec: dict, record: dict) -> None:
        finished.append(record)
        elapsed = time.perf_counter() - start
        done_at.append(elapsed)
        eta = _eta(finished, done_at, len(todo) - len(finished), elapsed,
                   execution.jobs if execution.executor == "local" else 0)
        outcome = (f"mAP {record['metrics']['final']['map']:.4f}" if record["status"] == "done"
                   else f"FAILED: {record['failure']}")
        if fell := record_collapse(record):
            outcome += (f" (collapsed: macro AUC {fell['macro_auc']:.3f}, "
                        + ("never learned)" if fell["never_learned"] else f"fell at epoch {fell['epoch']})"))
        draw = f" draw {spec['noise_draw']['index']}" if "noise_draw" in spec else ""
        print(f"[{len(finished):>{len(str(len(todo)))}}/{len(todo)}] {spec['method']['name']} {spec['task']} "
              f"{spec['noise']['name']:<10}{draw} seed {spec['seed']:<3} {outcome}  ({_duration(record['timings']['total'])}; "
              f"elapsed {_duration(elapsed)}, ETA {_duration(eta)})", flush=True)

    lost = 0
    try:
        if execution.executor == "local":
            execute(todo, args.results, execution, report)
        elif todo:
            from .executors import make_executor

            lost = make_executor(execution, args.results, _slurm_params(args)).run(
                todo, args.results, report, wait=not args.no_wait)
            if args.no_wait:
                print(f"not waiting: `ehrbench status` shows their progress; rerun the same command to collect "
                      f"the table (it submits only runs without a record)")
                return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(finished)} finished runs are kept in {args.results}/; rerun the same "
              f"command to do the remaining {len(todo) - len(finished)}", file=sys.stderr)
        return 130
    print()
    tasks = {s["task"] for s in specs}
    print(_table(store, grid.track.name, tasks, args.format))
    failed = [r for r in finished if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed; their records under {args.results}/ say why", file=sys.stderr)
        return 1
    if lost:
        print(f"{lost} job(s) ended without a record (killed, timed out or preempted); rerun the same command to "
              f"resubmit their runs", file=sys.stderr)
        return 1
    return 0


def _results(path: str, must_exist: bool = False) -> RecordStore:
    """The store of ``--results``: a folder, or (where nothing needs to be read) one to be made."""
    store = RecordStore(path)
    if store.root.exists() and not store.root.is_dir():
        raise UsageError(f"--results {path}: is a file, expected a folder of run records")
    if must_exist and not store.root.exists():
        raise UsageError(f"--results {path}: no such folder; expected a folder of run records (as `ehrbench bench "
                         f"--results {path}` writes)")
    return store


SLURM_FLAGS = ("profile", "partition", "time", "gpus_per_task", "array_parallelism", "account", "no_wait")


def _slurm_flags_need_an_executor(args, executor: str) -> None:
    """Slurm's flags with the local executor: the grid would run here, on a login node say, ignoring them."""
    given = [f"--{k.replace('_', '-')}" for k in SLURM_FLAGS if getattr(args, k) not in (None, False)]
    if given and executor == "local":
        raise UsageError(f"{given[0]}: a setting of submitted jobs, but the executor is local (runs on this machine); "
                         f"add --executor slurm (or submitit-local, local-gpus), or leave {given[0]} out")


def _slurm_params(args) -> dict:
    from .executors import load_profile

    params = load_profile(args.profile)
    for key in ("partition", "time", "gpus_per_task", "array_parallelism", "account"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return params


def _grids(args) -> list:
    """One plan per method of ``--method`` (comma-separated methods make one grid)."""
    from .runner import plan

    grids = [plan(method, args.track, _given(args.tasks, "--tasks", "syn-phe,syn-dia"),
                  _given(args.noise, "--noise", "sym-20,asym-0-40"),
                  _seeds(args.seeds), args.noise_seed, _overrides(args.set), encoder=args.encoder,
                  normaliser=args.normaliser, note_scale=args.note_scale, noise_draws=args.noise_draws)
             for method in (_csv(args.method) or [args.method])]
    for note in grids[0].notes:  # the same for every method of the grid
        print(f"note: {note}", file=sys.stderr)
    return grids


def _grid_specs(args) -> list[dict]:
    return [spec for g in _grids(args) for spec in g.specs]


def cmd_status(args) -> int:
    """Per run of the planned grid: done / failed (record), running (a held claim), pending (otherwise)."""
    from tabulate import tabulate

    from .executors import run_state, submissions
    from .records import run_id

    store, jobs = _results(args.results), submissions(args.results)
    counts: dict[str, int] = {}
    rows = []
    for spec in _grid_specs(args):
        state, rid = run_state(store, spec), run_id(spec)
        counts[state] = counts.get(state, 0) + 1
        sub = jobs.get(rid, {})
        draw = [spec.get("noise_draw", {}).get("index", 0)] if args.noise_draws > 1 else []
        rows.append([rid, spec["method"]["name"], spec["task"], spec["noise"]["name"], *draw, spec["seed"], state,
                     sub.get("executor", ""), sub.get("job_id", "")])
    if not args.summary:
        draw = ["draw"] if args.noise_draws > 1 else []
        print(tabulate(rows, headers=["run", "method", "task", "noise", *draw, "seed", "state", "executor", "job"],
                       tablefmt=args.format))
    print(", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "failed", "running", "pending")))
    return 0


def _table(store: RecordStore, track: str, tasks: set[str] | None, fmt: str) -> str:
    from leaderboard.report import render

    records = []
    for path, record, error in store.scan(track):
        if error:
            print(f"warning: skipping {error}", file=sys.stderr)
        elif tasks is None or record["spec"]["task"] in tasks:
            records.append(record)
    return render(records, fmt)


def cmd_table(args) -> int:
    from .protocol import get_track

    track = get_track(args.track)
    tasks = _given(args.tasks, "--tasks", ",".join(t.name for t in track.tasks))
    for name in tasks or []:
        track.task(name)  # an unknown task is named, with the track's tasks
    store = _results(args.results, must_exist=True)
    held = _tracks_held(store)
    if held and track.name not in held:  # not "no finished runs yet": they are there, under another track
        raise UsageError(f"--results {args.results}: no records of track '{track.name}'; it holds records of track "
                         f"{', '.join(held)} (--track {held[0]})")
    print(_table(store, track.name, set(tasks) if tasks else None, args.format))
    return 0


def _tracks_held(store: RecordStore) -> list[str]:
    """The tracks with a record file in their folder under ``store``."""
    return sorted(p.name for p in store.root.iterdir() if p.name in TRACKS and p.is_dir() and any(p.rglob("*.json")))


def cmd_leaderboard(args) -> int:
    from leaderboard import Options, build, publish
    from leaderboard.tables import render

    from .protocol import get_track

    options = Options(test=args.test, correction=args.correction, alpha=args.alpha,
                      timing_encoders=args.timing_encoders)
    tracks = _given(args.tracks, "--tracks", "quick,full")
    for name in tracks or []:
        get_track(name)
    _results(args.results, must_exist=True)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: is a file, expected a folder for the site (made if missing)")
    if args.release:
        from leaderboard.release import check_new

        check_new(args.out, args.release)  # before the records are read: a release is never rewritten
    published = _published_root(args)
    result = build(args.results, None, options, tracks, published_root=published)
    for file, error in result.skipped:
        print(f"warning: skipping {file}: {error}", file=sys.stderr)
    left = _left_out(result.left_out)
    if left and not result.rows:  # an empty page would say only "no run records yet"
        raise UsageError(f"--results {args.results}: nothing to render: {left}")
    if left:
        print(f"note: {left}", file=sys.stderr)
    try:
        publish(result, args.out, args.publish, args.release)
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot write the site ({e.strerror or e})") from None
    if args.format != "none":
        print(render(result.board, args.format))  # it says which published sets it read, and which are missing
    else:
        from leaderboard.tables import published_line

        for track in result.board["tracks"]:
            if track["published"] and not track["published"]["present"]:
                print(published_line(track))
    print(f"{len(result.rows)} run records, {len(result.skipped)} skipped; site written to {result.page}"
          + (" (ready for a static host)" if args.publish else ""))
    if result.release:
        print(f"release {args.release} frozen at {result.release} (checksums in manifest.json and SHA256SUMS)")
    return 0


def _published_root(args) -> Path | None:
    """The folder of published sets the leaderboard reads beside --results (None: --no-published)."""
    from leaderboard.sources import default_root

    if args.no_published:
        return None
    root = Path(args.published) if args.published else default_root()
    if root.exists() and not root.is_dir():
        raise UsageError(f"--published {root}: is a file, expected a folder of published sets "
                         f"(<track>/<task>/<method>/<run id>.json)")
    return root


def cmd_publish_baselines(args) -> int:
    """Every shipped method's grid of ``--track`` by ``bench`` into the published set (``baselines``)."""
    import dataclasses

    from leaderboard.sources import default_root, shown

    from . import baselines
    from .registry import get_method

    out = Path(args.out) if args.out else default_root()
    if args.track == "smoke" and not args.out:
        raise UsageError("--track smoke: the smoke track is for tests and never on a leaderboard; give --out DIR to "
                         "publish it somewhere else than the published set")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, expected a folder of published sets")
    methods = _given(args.methods, "--methods", "bce,focal")
    for method in methods or []:
        get_method(method)  # an unknown name is refused with the choices, before anything is removed
    tasks = _given(args.tasks, "--tasks", "syn-phe")
    noises = _given(args.noise, "--noise", "sym-20,asym-0-40")
    seeds = _seeds(args.seeds)
    specs = baselines.grid(args.track, methods, tasks, noises, seeds)
    whole = not (methods or tasks or noises or seeds)  # a part of the grid leaves the rest of the set alone
    for line in baselines.prune(out, args.track, specs, whole):
        print(f"removed {line}")
    names = methods or list(dict.fromkeys(spec["method"]["name"] for spec in specs))  # the registry's order
    argv = ["bench", "--method", ",".join(names), "--track", args.track, "--results", str(out),
            "--format", args.format]
    for flag, value in (("--tasks", args.tasks), ("--noise", args.noise), ("--seeds", args.seeds)):
        if value is not None:
            argv += [flag, value]
    bench = build_parser().parse_args(argv)
    for field in dataclasses.fields(options.Execution):  # the execution switches, as given
        if hasattr(args, field.name):
            setattr(bench, field.name, getattr(args, field.name))
    code = cmd_bench(bench)
    left = baselines.problems(out, args.track, specs, whole)
    folder = shown(out / args.track)
    for line in left:
        print(f"published set {folder}: {line}", file=sys.stderr)
    if left:
        print(f"published set {folder}: {len(left)} problem(s); rerun the same command (finished runs are kept)",
              file=sys.stderr)
        return code or 1
    print(f"published set {folder}: complete, {len(specs)} record(s) of harness {__version__}"
          + ("" if whole else " (the part of the grid asked for)")
          + ("; commit them with the change that made them" if not args.out else ""))
    return code


def _left_out(counts: dict[str, int]) -> str:
    """What the leaderboard left out of the records it read, and why, in one clause ('' for nothing)."""
    from leaderboard import EXCLUDED_TRACKS

    why = {t: f"the {t} track is for tests and smoke checks, not results; --tracks {t} renders them"
           for t in EXCLUDED_TRACKS}
    return "; ".join(f"left out {n} record(s) of track {t} ({why.get(t, 'not in --tracks')})"
                     for t, n in sorted(counts.items()))


def cmd_methods(args) -> int:
    from .registry import PLANNED, available_methods, get_method

    for name in available_methods():
        m = get_method(name).manifest
        print(f"{name:<10} {m['display_name']} (v{m['version']}, {m['license']})")
    missing = [p for p in PLANNED if p not in available_methods()]
    if missing:
        print(f"planned, not available yet: {', '.join(missing)}")
    return 0


def cmd_methods_validate(args) -> int:
    from .errors import choices_hint
    from .registry import available_methods, methods_dir
    from .submission import validate

    if not args.name:
        raise UsageError(f"no method given (e.g. METHOD=bce); available: {', '.join(available_methods())}")
    if not (methods_dir() / args.name).is_dir():  # a broken manifest is validate's to report, not a usage error
        raise UsageError(f"unknown method '{args.name}'{choices_hint(args.name, available_methods())}")
    report = validate(args.name, smoke=not args.no_smoke)
    for problem in report.problems:
        print(f"{args.name}: {problem}", file=sys.stderr)
    if not report.ok:
        print(f"{args.name}: {len(report.problems)} problem(s); see CONTRIBUTING.md", file=sys.stderr)
        return 1
    smoke = f"smoke run ({report.smoke}), {report.parameters:,} trainable parameters on smoke/syn-phe" if report.smoke \
        else "smoke run skipped"
    print(f"{args.name}: ok: manifest, interface, harness boundaries, import hygiene, {smoke}")
    return 0


def cmd_methods_new(args) -> int:
    from .submission import scaffold

    written = scaffold(args.name)
    for path in written:
        print(f"wrote {path}")
    print(f"next: edit methods/{args.name}/method.py, then `make validate METHOD={args.name}` and "
          f"`make bench METHOD={args.name}`")
    return 0


def cmd_results_import(args) -> int:
    from .results_import import import_records

    _results(args.results)
    outcome = import_records(args.dir, args.results, check_only=args.check, verify_data=args.verify_data)
    for line in outcome.refused:
        print(f"refused: {line}", file=sys.stderr)
    for line in outcome.notes:
        print(f"note: {line}")
    verb = "would file" if args.check else "filed"
    print(f"{len(outcome.filed)} record(s) {verb} under {args.results}/, {len(outcome.present)} already there, "
          f"{len(outcome.refused)} refused")
    return 1 if outcome.refused else 0


def cmd_methods_describe(args) -> int:
    from .method_card import card, shape_info
    from .protocol import get_track
    from .registry import available_methods, get_method

    track = get_track(args.track)
    info = shape_info(track, args.task or track.tasks[0].name, args.note_dim)
    entries = [get_method(name) for name in (args.names or available_methods())]  # every name checked before any model is built
    print("\n".join(card(entry, track, info) for entry in entries))
    return 0


def cmd_tracks(args) -> int:
    for t in TRACKS.values():
        state = "" if t.available else f"  [not available yet: {t.unavailable_reason}]"
        tasks = ", ".join(x.name for x in t.tasks) or "-"
        print(f"{t.name:<6} tasks: {tasks}{state}\n       {t.description}")
    return 0


def _task(args):
    import dataclasses

    from .protocol import get_track

    from .data.notes import encoder_identity

    task = get_track(args.track).task(args.task)
    if getattr(args, "root", None) and task.source == "synthetic":  # else --root would be ignored in silence
        raise UsageError(f"--root {args.root}: task '{task.name}' of track '{args.track}' is synthetic (generated, "
                         f"not read from files); --root is for real tasks (track paper)")
    # As `bench` plans it: a local folder by its content (the cache `bench` then reads).
    return dataclasses.replace(task, encoder=encoder_identity(args.encoder)) if getattr(args, "encoder", None) else task


def cmd_noise_show(args) -> int:
    from .noise import noise_seed_for
    from .noise_report import report
    from .protocol import parse_noise

    setting = parse_noise(args.setting)
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed: seed {args.seed} is not in [0, 2**32)")
    seed = noise_seed_for(args.noise_seed, SEEDS[0] if args.seed is None else args.seed)
    spec = _task(args)
    if spec.source != "synthetic":
        from .data import check_source

        check_source(spec, args.root)
    result = report(spec, args.track, setting, seed, data=_materialised(spec, args.root))
    print(result.render(args.format))
    if args.png != "none":
        path = args.png or f"noise-{args.track}-{spec.name}-{setting.name}-seed{seed}.png"
        print(f"\nfigure: {result.plot(path)}")
    return 0


def _materialised(spec, root):
    from .data import materialise

    return materialise(spec, root=root)


def cmd_data_prepare(args) -> int:
    from .data import materialise

    spec = _task(args)
    start = time.perf_counter()
    data = materialise(spec, root=args.root, rebuild=args.rebuild)
    print(f"{spec.name}: {len(data.train):,} train / {len(data.test):,} test samples, note dim {data.note_dim}, "
          f"fingerprint {data.fingerprint[:16]} ({_duration(time.perf_counter() - start)})")
    return 0


def cmd_data_describe(args) -> int:
    from .data.cache import TensorCache
    from .data.describe import describe, render
    from .data.taskdata import task_files

    spec = _task(args)
    root = task_files(spec, TensorCache(), args.root)
    print(render(describe(spec, root)))
    return 0


def cmd_data_build(args) -> int:
    if args.database == "mimic4":
        return _build_mimic4(args)
    import os

    import pandas as pd

    from .data.extract import mimic3, summary
    from .protocol import MIMIC3_PHE

    for flag, value in (("--note", args.note), ("--cxr", args.cxr), ("--split-file", args.split_file)):
        if value:  # a MIMIC-IV input given to the MIMIC-III build would be silently unused
            raise UsageError(f"{flag} is for `data build mimic4`; MIMIC-III's notes are its NOTEEVENTS table")
    # Where the paper track's mimic3-phe task reads its files, unless told otherwise.
    out = args.out or os.path.join(os.environ.get("EHRBENCH_DATA", "data"), MIMIC3_PHE.data_dir)
    options = mimic3.Options(first_admission_only=args.notes_first_admission_only, ranges=not args.no_ranges,
                             code_dictionary=not args.all_diagnosis_codes, buckets=args.buckets, testset=args.testset)
    start = time.perf_counter()
    result = mimic3.build(args.raw, out, options)
    print(summary.render(result, pd.read_csv(f"{out}/attrition.csv", keep_default_na=False)))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"built in {_duration(time.perf_counter() - start)}: {out}/phenotyping, {out}/ehr "
          f"(read by task mimic3-phe of track paper: --root {out})")
    return 0


def _build_mimic4(args) -> int:
    import os

    import pandas as pd

    from .data.extract import mimic4, summary

    if args.notes_first_admission_only:
        raise UsageError("--notes-first-admission-only is MIMIC-III's notes bug; MIMIC-IV's notes are discharge summaries")
    # Where the paper track's mimic4-phe and mimic4-dia tasks read their files, unless told otherwise.
    out = args.out or os.path.join(os.environ.get("EHRBENCH_DATA", "data"), "mimic4")
    options = mimic4.Options(note=args.note, cxr=args.cxr, split_file=args.split_file, ranges=not args.no_ranges,
                             code_dictionary=not args.all_diagnosis_codes, buckets=args.buckets)
    start = time.perf_counter()
    result = mimic4.build(args.raw, out, options)
    print(summary.render_mimic4(result, pd.read_csv(f"{out}/attrition.csv", keep_default_na=False)))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    built = [t for t, got in result["tasks"].items() if got is not None]
    print(f"built in {_duration(time.perf_counter() - start)}: {', '.join(f'{out}/{t}' for t in built)}, {out}/ehr "
          f"(read by tasks {', '.join('mimic4-' + t[:3] for t in built)} of track paper: --root {out})")
    return 0


def cmd_data_raw(args) -> int:
    import dataclasses

    from .data.rawgen import bulk, mimic3, mimic4, schema
    from .protocol import get_track

    if args.scale is not None and args.database == "mimic4":
        raise UsageError("--scale is for `data raw mimic3` (a share of MIMIC-III 1.4's row counts); "
                         "`data raw mimic4` writes the task's own rows and its distractors")
    if args.scale is not None and not 0 < args.scale <= 1:
        raise UsageError(f"--scale {args.scale}: expected a share of MIMIC-III's size in (0, 1], e.g. 0.05")
    task = args.task or ("mimic3-phe" if args.database == "mimic3" else "mimic4-phe")
    spec = get_track(args.track).task(task)
    if spec.source != "synthetic":
        raise UsageError(f"task '{spec.name}' of track '{args.track}' is not synthetic: raw tables are written for a "
                         f"generated task (e.g. --track full --task {task})")
    n_total = args.n_total or (bulk.cohort_size(args.scale) if args.scale else spec.n_total)
    spec = dataclasses.replace(spec, n_total=n_total)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    if args.database == "mimic3":
        volume = bulk.volume(args.scale, n_total) if args.scale else mimic3.Volume()
        report = mimic3.write(spec, args.out, volume, args.task_files, log=log)
    else:
        report = mimic4.write(spec, args.out, task_files=args.task_files, log=log)
    for table, n in report["tables"].items():
        print(f"{table:<26} {n:>12,} rows")
    if "masked_values" in report:
        print(f"{report['masked_values']:,} lab values masked as '___' (the build reads them from valuenum)")
    print(f"{report['stays']['cohort']:,} ICU stays of task {spec.name} ({report['stays']['without_series']:,} samples "
          f"without a series{' left out' if spec.kind == 'phenotyping' else ''}), written in "
          f"{_duration(time.perf_counter() - start)}: {args.out}")
    out = args.out
    if args.database == "mimic3":
        print(f"build them: ehrbench data build mimic3 --raw {out} --testset {out}/testset.csv --out DIR")
    else:
        cxr = f" --cxr {out}/{schema.FOLDERS['cxr']}" if spec.kind == "diagnosis" else ""
        print(f"build them: ehrbench data build mimic4 --raw {out}/{schema.FOLDERS['mimic4']} --note "
              f"{out}/{schema.FOLDERS['note']}{cxr} --split-file {out}/tvtset.csv --out DIR")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ehrbench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="run a method over a track's grid (skips finished runs) and print the table")
    b.add_argument("--method", "-m", default="", help="a folder name under methods/ (see `ehrbench methods`); "
                   "several, comma-separated, make one grid")
    b.add_argument("--track", default="quick", help=f"one of {', '.join(TRACKS)} (default quick)")
    b.add_argument("--tasks", help="comma-separated task names of the track (default: all)")
    b.add_argument("--noise", help=f"comma-separated noise settings (default: the paper's ten: {', '.join(n.name for n in NOISE_SETTINGS)})")
    b.add_argument("--seeds", help=f"comma-separated seeds (default {','.join(map(str, SEEDS))})")
    b.add_argument("--noise-seed", default="reference", choices=NOISE_SEED_POLICIES,
                   help="'reference': seed 123 for every run (the paper); 'per-seed': the run seed")
    b.add_argument("--noise-draws", type=positive_int, default=1, metavar="K",
                   help="run each (setting, seed) on K noise draws (default 1): draw 0 is the protocol's (its run ids "
                        "are those of a grid without draws), draws 1..K-1 enter the run spec; the leaderboard splits "
                        "a cell's variance into noise-draw and training-seed parts (needs --noise-seed reference)")
    b.add_argument("--results", default="results", help="folder of run records (default results/)")
    options.add_arguments(b, exclude=("executor",))
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a hyper-parameter of the method's manifest (part of the run id); repeatable")
    b.add_argument("--encoder", help="note encoder for every task: 'minilm', 'random-bert-base' (random weights: timing only), a local folder or a hub name")
    b.add_argument("--normaliser", help="time-series z-scoring for every task: 'train' (training-split statistics; "
                   "the synthetic tracks' default), 'reference' (the published MIMIC-III ones; the paper track's "
                   "default) or a JSON file; part of the run id")
    b.add_argument("--note-scale", type=_note_scale, help="synthetic tasks' note lengths as a share of the real "
                   "pipelines' (the full track's default 1; 0: the history section alone, the quick and smoke "
                   "tracks' default and the full track's notes before generator 4); part of the run id")
    b.add_argument("--data", help="folder holding real task data (sets EHRBENCH_DATA)")
    b.add_argument("--format", default="simple", type=_table_format(),
                   help="table format (tabulate's: simple, github, latex, ...)")
    b.set_defaults(func=cmd_bench)

    options.add_arguments(b, include=("executor",))
    b.add_argument("--profile", help="YAML file of Slurm settings (partition, time, gpus_per_task, "
                                     "array_parallelism, account, cpus_per_task, mem_gb)")
    b.add_argument("--partition", help="Slurm partition")
    b.add_argument("--time", type=positive_int, help="time limit per run, minutes (default 60)")
    b.add_argument("--gpus-per-task", type=count, help="GPUs per array task")
    b.add_argument("--array-parallelism", type=positive_int, help="most array tasks running at once")
    b.add_argument("--account", help="Slurm account")
    b.add_argument("--no-wait", action="store_true", help="submit and return (executors other than local)")

    st = sub.add_parser("status", help="per run of a grid: done, failed, running or pending (and its job id)")
    for flag, kw in (("--method", {"default": "", "help": "as for bench (comma-separated methods)"}),
                     ("--track", {"default": "quick"}), ("--tasks", {}), ("--noise", {}), ("--seeds", {}),
                     ("--results", {"default": "results"}), ("--encoder", {}), ("--normaliser", {}),
                     ("--note-scale", {"type": _note_scale}),
                     ("--format", {"default": "simple", "type": _table_format()})):
        st.add_argument(flag, **kw)
    st.add_argument("--noise-seed", default="reference", choices=NOISE_SEED_POLICIES)
    st.add_argument("--noise-draws", type=positive_int, default=1, metavar="K", help="as for bench")
    st.add_argument("--set", action="append", metavar="KEY=VALUE")
    st.add_argument("--summary", action="store_true", help="only the counts")
    st.set_defaults(func=cmd_status)

    t = sub.add_parser("table", help="print the result tables of a track from its run records")
    t.add_argument("--track", default="quick")
    t.add_argument("--tasks")
    t.add_argument("--results", default="results")
    t.add_argument("--format", default="simple", type=_table_format())
    t.set_defaults(func=cmd_table)

    lb = sub.add_parser("leaderboard", help="render every run record into a static site (tables, tests, plots, downloads)")
    lb.add_argument("--results", default="results", help="folder of run records (default results/)")
    lb.add_argument("--out", default="site", help="folder the site is written to (default site/)")
    lb.add_argument("--tracks", help="comma-separated tracks (default: all but smoke)")
    lb.add_argument("--test", default="paired", choices=("paired", "welch"),
                    help="one-sided test of the best against the others: paired over shared seeds, or Welch")
    lb.add_argument("--correction", default="none", choices=("none", "holm", "bh"),
                    help="multiple-comparison correction over each table's tests (Holm or Benjamini-Hochberg)")
    lb.add_argument("--alpha", type=float, default=0.05, help="level of the tie group (default 0.05)")
    lb.add_argument("--timing-encoders", action="store_true",
                    help="also put runs of timing-only note encoders (random weights) in the result tables; "
                         "they are always in the compute tables")
    lb.add_argument("--publish", action="store_true", help="stamp the build date on the page and add .nojekyll")
    lb.add_argument("--release", metavar="vX.Y", help="also freeze the site as release vX.Y under OUT/releases/: "
                    "page, downloads, an archive of the records read and their sha256 checksums; never rewritten "
                    "(a version already there is refused)")
    lb.add_argument("--format", default="simple", type=_table_format("none"), help="terminal tables: tabulate format (simple, github, ...) or none")
    pub = lb.add_mutually_exclusive_group()
    pub.add_argument("--published", metavar="DIR", help="folder of published sets read beside --results for the "
                     "tracks shown (default $EHRBENCH_PUBLISHED, else leaderboard/published/ of this checkout)")
    pub.add_argument("--no-published", action="store_true", help="leave the published set out: your records only")
    lb.set_defaults(func=cmd_leaderboard)

    pb = sub.add_parser("publish-baselines", help="run every shipped method over every noise setting and seed of a "
                        "track into the published set (leaderboard/published/TRACK; resumable)")
    pb.add_argument("--track", default="quick",
                    help="the track whose grid is published (default quick: CPU; full: GPU)")
    pb.add_argument("--out", help="folder of published sets (default $EHRBENCH_PUBLISHED, else "
                    "leaderboard/published/); records go to OUT/TRACK/<task>/<method>/<run id>.json")
    pb.add_argument("--methods", help="comma-separated methods (default: every shipped one, `ehrbench methods`)")
    pb.add_argument("--tasks", help="comma-separated tasks of the track (default: all)")
    pb.add_argument("--noise", help="comma-separated noise settings (default: the paper's ten)")
    pb.add_argument("--seeds", help=f"comma-separated seeds (default {','.join(map(str, SEEDS))})")
    pb.add_argument("--format", default="simple", type=_table_format(), help="table format (tabulate's)")
    options.add_arguments(pb, exclude=("executor", "compile"))  # published runs are eager, on this machine
    pb.set_defaults(func=cmd_publish_baselines)

    nz = sub.add_parser("noise", help="what a noise setting does to a task's training labels").add_subparsers(
        dest="noise_command", required=True)
    ns = nz.add_parser("show", help="realised flip rates per label and direction, the noisy-label checksum and, for "
                       "under-coding, its twin and the evidence-vs-flip curve: a table and a PNG")
    ns.add_argument("setting", help="a noise setting (as `bench --noise`): e.g. under-40, asym-40-0, sym-20")
    ns.add_argument("--task", required=True, help="a task of the track (`ehrbench tracks`)")
    ns.add_argument("--track", default="quick")
    ns.add_argument("--seed", type=int, help=f"run seed (default {SEEDS[0]}); with --noise-seed reference the noise "
                    f"seed is 123 whatever it is")
    ns.add_argument("--noise-seed", default="reference", choices=NOISE_SEED_POLICIES,
                    help="'reference': noise seed 123 (the paper); 'per-seed': the run seed")
    ns.add_argument("--root", help="folder of a real task's files (default $EHRBENCH_DATA/<data_dir>)")
    ns.add_argument("--encoder", help="note encoder (as `bench --encoder`)")
    ns.add_argument("--png", help="where the figure goes (default noise-TRACK-TASK-SETTING-seedN.png); 'none' for no figure")
    ns.add_argument("--format", default="simple", type=_table_format(), help="table format (tabulate's)")
    ns.set_defaults(func=cmd_noise_show)

    d = sub.add_parser("data", help="build, prepare or describe a task's data").add_subparsers(dest="data_command", required=True)
    for name, func, helptext in (("prepare", cmd_data_prepare, "materialise a task into the tensor cache"),
                                 ("describe", cmd_data_describe, "print a task's dataset statistics")):
        c = d.add_parser(name, help=helptext)
        c.add_argument("task", help="a task of the track (`ehrbench tracks`)")
        c.add_argument("--track", default="quick")
        c.add_argument("--root", help="folder of a real task's files (default $EHRBENCH_DATA/<data_dir>)")
        if name == "prepare":
            c.add_argument("--rebuild", action="store_true", help="rebuild the cache entry even if it is valid")
            c.add_argument("--encoder", help="note encoder (as `bench --encoder`): 'minilm', 'random-bert-base', a local folder or a hub name")
        c.set_defaults(func=func)
    db = d.add_parser("build", help="build a task's files from the raw database CSVs (resumable; docs/data.md)")
    db.add_argument("database", choices=("mimic3", "mimic4"),
                    help="mimic3: MIMIC-III 1.4 -> the mimic3-phe task files; mimic4: MIMIC-IV 2.0-3.1 (+ Note, CXR) -> "
                         "the mimic4-phe and mimic4-dia task files")
    db.add_argument("--raw", required=True, help="folder of the database's CSVs (TABLE.csv or TABLE.csv.gz; "
                                                 "MIMIC-IV: the folder holding hosp/ and icu/)")
    db.add_argument("--out", help="folder to build into (default $EHRBENCH_DATA/<database>, else data/<database>); "
                                  "finished steps found there are kept")
    db.add_argument("--note", help="mimic4: the MIMIC-IV-Note folder (note/discharge.csv.gz); without it, no notes")
    db.add_argument("--cxr", help="mimic4: the MIMIC-CXR-JPG folder (mimic-cxr-2.0.0-metadata.csv.gz and "
                                  "-chexpert.csv.gz); without it, no diagnosis task")
    db.add_argument("--split-file", help="mimic4: a tvtset.csv (subject_id,split with 0 train, 1 val, 2 test) to use "
                                         "instead of the seeded patient split")
    db.add_argument("--notes-first-admission-only", action="store_true",
                    help="reproduce the reference's note extraction bug: only a subject's first ICU stay gets notes")
    db.add_argument("--no-ranges", action="store_true",
                    help="keep outliers: skip the cleaning by variable_ranges.csv (unit cleaning still applies)")
    db.add_argument("--all-diagnosis-codes", action="store_true",
                    help="label from every diagnosis code, also those D_ICD_DIAGNOSES does not list (the reference drops them)")
    db.add_argument("--buckets", type=positive_int, help="stay buckets of the event files (default: one per ~2 GB "
                                                        "of CHARTEVENTS); fewer = faster, more = less memory")
    db.add_argument("--testset", help="test subjects file, lines 'SUBJECT_ID,0|1' (default: Harutyunyan's testset.csv); "
                                      "for a database of other subjects, e.g. `ehrbench data raw`'s")
    db.set_defaults(func=cmd_data_build)
    dr = d.add_parser("raw", help="write a synthetic task as the raw database tables it would be built from (docs/data.md)")
    dr.add_argument("database", choices=("mimic3", "mimic4"),
                    help="mimic3: MIMIC-III 1.4 tables of a mimic3-phe-shaped task; mimic4: MIMIC-IV 2.2, MIMIC-IV-Note "
                         "2.2 and (diagnosis) MIMIC-CXR-JPG 2.0.0 tables of a mimic4-phe- or mimic4-dia-shaped task")
    dr.add_argument("--out", required=True, help="folder for the tables (mimic3: TABLE.csv and testset.csv; mimic4: "
                                                 "mimic-iv/, mimic-iv-note/, mimic-cxr-jpg/ and tvtset.csv) and report.json")
    dr.add_argument("--task", help="mimic3: a synthetic phenotyping task in layout mimic3-miracl (default mimic3-phe); "
                                   "mimic4: a synthetic task in layout mimic4 (default mimic4-phe; mimic4-dia for diagnosis)")
    dr.add_argument("--track", default="full", help="the track whose task is written (default full)")
    dr.add_argument("--n-total", type=positive_int, help="samples of the task: stays (diagnosis: studies); default: "
                                                       "the track's, or --scale's")
    dr.add_argument("--scale", type=float, help="mimic3: pad every event table to this share of MIMIC-III 1.4's rows "
                                                "(e.g. 0.05), for measuring the build")
    dr.add_argument("--task-files", help="also write the generator's own task files here, to compare with the build")
    dr.set_defaults(func=cmd_data_raw)

    m = sub.add_parser("methods", help="list the methods (`methods describe`: manifests and model sizes)")
    m.set_defaults(func=cmd_methods)
    msub = m.add_subparsers(dest="methods_command")
    msub.add_parser("list", help="list the methods (as `ehrbench methods`)").set_defaults(func=cmd_methods)
    mv = msub.add_parser("validate", help="check a submission: manifest, interface, harness boundaries, "
                         "import hygiene, a one-epoch smoke run, parameter count")
    mv.add_argument("name", help="a folder under methods/")
    mv.add_argument("--no-smoke", action="store_true", help="skip the one-epoch smoke run (and the parameter count)")
    mv.set_defaults(func=cmd_methods_validate)
    mn = msub.add_parser("new", help="scaffold methods/NAME/ (and tests/test_method_NAME.py) from the template")
    mn.add_argument("name", help="the new method's name: lower case letters, digits, '_'")
    mn.set_defaults(func=cmd_methods_new)
    md = msub.add_parser(
        "describe", help="per method: display name, version, licence, citation, hparams, trainable parameters")
    md.add_argument("names", nargs="*", help="methods to describe (default: all available)")
    md.add_argument("--track", default="full", help="track whose task shapes and backbone width size the model (default full)")
    md.add_argument("--task", help="task of the track (default: its first, e.g. mimic4-phe on full)")
    md.add_argument("--note-dim", type=positive_int, default=768,
                    help="note encoder width (default 768, the paper's BioBERT; 384 for MiniLM)")
    md.set_defaults(func=cmd_methods_describe)
    sub.add_parser("tracks", help="list the tracks and their tasks").set_defaults(func=cmd_tracks)

    r = sub.add_parser("results", help="results-only submissions").add_subparsers(dest="results_command", required=True)
    ri = r.add_parser("import", help="validate foreign run records and file them under results/ (refused ones say why)")
    ri.add_argument("dir", help="folder of run records (*.json, searched recursively)")
    ri.add_argument("--results", default="results", help="folder of run records to file into (default results/)")
    ri.add_argument("--check", action="store_true", help="validate only: file nothing")
    ri.add_argument("--verify-data", action="store_true",
                    help="materialise synthetic tasks that are not in the tensor cache yet, to check their "
                         "data fingerprint and recompute the noisy-label checksums (default: only cached ones)")
    ri.set_defaults(func=cmd_results_import)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BenchError as e:
        # One line whatever the user typed: control characters in an echoed name are shown escaped.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(e))
        print(f"ehrbench: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _reader_left()


def _reader_left() -> int:
    """The reader of stdout went away (``ehrbench tracks | head -1``): stop quietly, as ``cat`` does.
    stdout points at /dev/null so that the interpreter's final flush fails no more."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (a test's capture)
        pass
    finally:
        os.close(devnull)
    return 128 + 13  # the shell's status for a process ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
