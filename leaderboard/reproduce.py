"""The ``ehrbench bench`` command behind a run or a cell: every flag that entered its run spec.

``runner.plan`` builds a spec from the CLI: the method (its manifest's hyper-parameters, ``--set``
overrides), the track, the task, the noise setting, the seed, ``--noise-seed``, ``--noise-draws`` (a run
of draw d is planned by ``--noise-draws d+1``, with draws 0..d-1 beside it), and the task fields
``--encoder``, ``--normaliser`` and ``--note-scale`` set (a task field added since a record was written,
``protocol.TASK_FIELDS_SINCE``, has its earlier value where the record's spec lacks it). ``command`` turns a spec back into those flags, measured
against this checkout's manifests and tracks (``report.method_defaults``, ``report.track_defaults``).
What no flag sets (the budget, the backbone, another task field, a method version or hyper-parameter
keys other than this checkout's) is listed by ``gaps``: for such a spec the command plans another
run here, and the record's commit is the one to check out and run it at.

Execution switches are not in the spec, but ``--compile on`` draws other random numbers (a row of
its own on the board), so a compiled run's command carries it.
"""
from __future__ import annotations

import shlex

from benchmark.protocol import ENCODER_FOLDER, TASK_FIELDS_SINCE

from .defaults import method_defaults, track_defaults

PROGRAM = ("ehrbench", "bench")
SEEDS_FLAG = "--seeds"
# Task fields a bench flag sets; every other task field comes with the track.
TASK_FLAGS = {"encoder": "--encoder", "normaliser": "--normaliser", "note_scale": "--note-scale"}


def yaml_value(value) -> str:
    """A hyper-parameter as ``--set`` reads it back (``yaml.safe_load``): YAML's own spelling, which
    quotes a string that would read as a number ('1.0') and writes 1e-05 as 1.0e-05 (PyYAML reads a
    float only with a dot)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _overrides(spec: dict) -> list[str]:
    """``--set KEY=VALUE`` for each hyper-parameter that differs from the method's manifest here (all
    of them when the method is not in this checkout)."""
    hparams = spec["method"].get("hparams") or {}
    defaults = method_defaults(spec["method"]["name"])
    manifest = defaults[1] if defaults else {}
    out = []
    for key, value in sorted(hparams.items()):
        if key not in manifest or manifest[key] != value:
            out += ["--set", f"{key}={yaml_value(value)}"]
    return out


def _task_flags(spec: dict, encoder_path: str | None) -> list[str]:
    task, defaults = spec.get("task_spec") or {}, track_defaults(spec["track"], spec["task"])
    default_task = defaults["task_spec"] if defaults else {}
    out = []
    if not task:  # a spec without the section (the leaderboard's small test records): nothing to set
        return out
    for key, flag in TASK_FLAGS.items():
        value = task.get(key, TASK_FIELDS_SINCE.get(key))
        if value is not None and value != default_task.get(key, TASK_FIELDS_SINCE.get(key)):
            if key == "encoder" and value.startswith(ENCODER_FOLDER) and encoder_path:
                value = encoder_path  # the folder the run read; it enters the spec by its content again
            out += [flag, str(value)]
    return out


def arguments(spec: dict, compiled: bool = False, encoder_path: str | None = None,
              seeds: list[int] | None = None) -> list[str]:
    """The command's words; ``seeds`` (default: the spec's own) last, so a cell's command is its
    first run's with the cell's seeds."""
    words = [*PROGRAM, "--method", spec["method"]["name"], "--track", spec["track"], "--tasks", spec["task"],
             "--noise", spec["noise"]["name"]]
    if spec.get("noise_seed_policy", "reference") != "reference":
        words += ["--noise-seed", spec["noise_seed_policy"]]
    if spec.get("noise_draw"):  # plans draws 0..d, this run's among them
        words += ["--noise-draws", str(spec["noise_draw"]["index"] + 1)]
    words += _overrides(spec) + _task_flags(spec, encoder_path)
    if compiled:
        words += ["--compile", "on"]
    return words + [SEEDS_FLAG, ",".join(str(s) for s in (seeds if seeds is not None else [spec["seed"]]))]


def command(spec: dict, compiled: bool = False, encoder_path: str | None = None) -> str:
    """The shell line that plans the run of ``spec`` (``gaps`` says when this checkout cannot)."""
    return shlex.join(arguments(spec, compiled, encoder_path))


def with_seeds(line: str, seeds: list[int]) -> str:
    """A run's command (``command``) for a cell's seeds: the same flags, the seeds replaced."""
    words = shlex.split(line)
    if words[-2] != SEEDS_FLAG:
        raise ValueError(f"not a command of this module (no trailing {SEEDS_FLAG}): {line!r}")
    return shlex.join(words[:-1] + [",".join(str(s) for s in sorted(seeds))])


def gaps(spec: dict) -> list[str]:
    """What of ``spec`` the command cannot set in this checkout, as short clauses ([] when it plans
    the very spec here). Only sections the record has are compared."""
    out = []
    name = spec["method"]["name"]
    defaults = method_defaults(name)
    if defaults is None:
        return [f"method '{name}' is not in this checkout"]
    version, manifest = defaults
    if spec["method"].get("version", version) != version:
        out.append(f"method version {spec['method']['version']} (this checkout: {version})")
    hparams = spec["method"].get("hparams")
    if hparams is not None:
        unknown, missing = sorted(set(hparams) - set(manifest)), sorted(set(manifest) - set(hparams))
        if unknown:
            out.append(f"hyper-parameter(s) {', '.join(unknown)} unknown to this checkout's manifest")
        if missing:
            out.append(f"hyper-parameter(s) {', '.join(missing)} added since (the record predates them)")
    sections = track_defaults(spec["track"], spec["task"])
    if sections is None:
        return out + [f"track '{spec['track']}' or its task '{spec['task']}' is not in this checkout"]
    for section, default in sections.items():
        given = spec.get(section)
        if given is None:
            continue
        fixed = {k: v for k, v in given.items() if not (section == "task_spec" and k in TASK_FLAGS)}
        differ = sorted(k for k, v in fixed.items() if default.get(k, v) != v or k not in default)
        differ += sorted(k for k in default if k not in given and not (section == "task_spec" and k in TASK_FLAGS))
        if differ:
            out.append(f"{section} field(s) {', '.join(differ)} differ from track '{spec['track']}' here")
    return out
