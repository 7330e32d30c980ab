"""Resumable build steps: each writes into a temporary folder, renamed into place when it succeeds.

A step owns its folder ``<out>/.steps/<name>/`` (its outputs, its attrition rows and ``done.json``)
and, for the last steps, paths of the final layout (``ehr/``, ``phenotyping/``). It is skipped when
``done.json`` holds the digest it would have now: the step's name and version, the options it reads,
the size and modification time of the raw tables it reads, and the digests of the steps it depends
on. So a finished step survives a later failure, and a step re-runs only when its output is missing
or its inputs changed, or a step it reads re-ran. A failed step leaves nothing behind: its temporary folder is removed, and the
old outputs it was replacing are kept until the new ones are complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import peak

ATTRITION_COLUMNS = ["step", "included", "excluded", "reason", "unit"]
STEPS_DIR = ".steps"


@dataclass
class Attrition:
    """Rows of the attrition table: per rule, what was kept and what was dropped, in one unit
    (``stays`` or ``events``); within a unit, each row's included + excluded is the previous included."""

    rows: list[dict] = field(default_factory=list)

    def add(self, step: str, included: int, excluded: int, reason: str, unit: str) -> None:
        self.rows.append({"step": step, "included": int(included), "excluded": int(excluded), "reason": reason,
                          "unit": unit})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=ATTRITION_COLUMNS)


@dataclass
class Step:
    name: str
    run: Callable[["Context", Path], Attrition]  # writes into the folder it is given; returns its attrition
    tables: tuple[str, ...] = ()  # raw tables read (their size and mtime enter the digest)
    options: tuple[str, ...] = ()  # Context.options read
    after: tuple[str, ...] = ()  # steps whose outputs it reads
    publish: tuple[str, ...] = ()  # entries of its folder moved to the out folder's top level (final layout)
    version: str = "1"


@dataclass
class Context:
    raw: Path
    out: Path
    options: dict
    tables: dict  # table name -> tables.Table, opened (header checked) before the first step
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    # Peak resident memory (MB) of each step that ran, and whether it is the step's own (peak.py).
    peak_mb: dict[str, float] = field(default_factory=dict)
    peak_own: bool = True

    def step_dir(self, name: str) -> Path:
        return self.out / STEPS_DIR / name


def _digest(step: Step, ctx: Context, digests: dict[str, str]) -> str:
    inputs = {
        "step": step.name, "version": step.version,
        "options": {k: ctx.options[k] for k in step.options},
        "tables": {t: [ctx.tables[t].path.name, ctx.tables[t].size, ctx.tables[t].path.stat().st_mtime_ns]
                   for t in step.tables},
        "after": {a: digests[a] for a in step.after},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _done(ctx: Context, step: Step, digest: str) -> bool:
    marker = ctx.step_dir(step.name) / "done.json"
    try:
        same = json.loads(marker.read_text())["digest"] == digest
    except (OSError, ValueError, KeyError):
        return False
    return same and all((ctx.out / p).exists() for p in step.publish)


def run_steps(steps: list[Step], ctx: Context) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every step in order (skipping finished ones); the attrition table of all steps and the seconds each took
    (0 for a skipped step)."""
    digests, frames, seconds, ran = {}, [], {}, set()
    for i, step in enumerate(steps, 1):
        digests[step.name] = _digest(step, ctx, digests)
        folder = ctx.step_dir(step.name)
        # A step after one that ran again runs again too: its input files are new, even if alike.
        if _done(ctx, step, digests[step.name]) and not ran.intersection(step.after):
            ctx.log(f"[{i}/{len(steps)}] {step.name}: done before, kept ({folder})")
            seconds[step.name] = 0.0
        else:
            ctx.log(f"[{i}/{len(steps)}] {step.name} ...")
            start = time.perf_counter()
            with peak.Sampler() as memory:
                _run_one(step, ctx, digests[step.name])
            ran.add(step.name)
            seconds[step.name] = round(time.perf_counter() - start, 2)
            ctx.peak_mb[step.name], ctx.peak_own = memory.peak_mb, memory.own and ctx.peak_own
            ctx.log(f"[{i}/{len(steps)}] {step.name}: finished in {seconds[step.name]:.1f} s, "
                    f"peak memory {ctx.peak_mb[step.name]:,.0f} MB")
        frames.append(pd.read_csv(folder / "attrition.csv", keep_default_na=False))
    return pd.concat(frames, ignore_index=True), seconds


def _run_one(step: Step, ctx: Context, digest: str) -> None:
    folder = ctx.step_dir(step.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{step.name}."))
    try:
        attrition = step.run(ctx, tmp)
        attrition.frame().to_csv(tmp / "attrition.csv", index=False)
        (tmp / "done.json").write_text(json.dumps({"digest": digest, "step": step.name}) + "\n")
        # Final-layout entries first, then the step's folder: done.json in place means everything is.
        shutil.rmtree(folder, ignore_errors=True)
        for name in step.publish:
            replace(tmp / name, ctx.out / name)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` (a file or a folder), removing what was there."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_csv(frame: pd.DataFrame, path: Path, **kw) -> None:
    """A CSV written next to its final name and renamed, so that a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False, **kw)
    os.replace(tmp, path)
