"""``ehrbench data raw mimic3``: a synthetic MIMIC-III-shaped phenotyping task as MIMIC-III 1.4 tables.

The generator's task (``generator.generate``) is inverted: each stay with a series becomes an ICU
stay (``stays``), each value a chart or lab event (``charting``), each positive phenotype a diagnosis
code (``diagnoses``), each note the first notes of the stay (``noteevents``), and the test split a
test set file (``testset.csv``: ``SUBJECT_ID,1`` for the test split's patients, ``,0`` for the
others), which ``ehrbench data build mimic3 --testset`` reads. Rows that the build must drop are
written beside them, in the numbers ``Volume`` gives, and ``report.json`` says how many rows each
attrition row must drop, so the build's attrition table is known truth too.

A generator sample without a series is not written: the build keeps no stay without events (its
listfile row has no counterpart). The generator's own task files, for the comparison, are
``generator.write``'s (``--task-files``).
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import UsageError
from .. import generator
from . import bulk, charting, diagnoses, noteevents, schema, stays as stays_mod
from .stays import NON_COHORT
from .volume import Volume



def _rng(spec) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"raw:{generator.STREAMS_VERSION}:{spec.name}:{spec.n_total}".encode()))


def check(spec) -> None:
    if spec.kind != "phenotyping" or spec.layout != "mimic3-miracl":
        raise UsageError(f"task '{spec.name}' is {spec.kind} in layout {spec.layout}: MIMIC-III raw tables are "
                         f"written for a phenotyping task in layout mimic3-miracl (e.g. mimic3-phe of track full)")


def cohort(gen: generator.Generated) -> pd.DataFrame:
    """The generator's stays with a series, in its order: ids, period, charting system, note, labels, split."""
    parts = [df.assign(SPLIT="test" if name == "test" else "train") for name, df in gen.splits.items()]
    table = pd.concat(parts, ignore_index=True)
    table = table[table["series"] != ""].sort_values("key", key=lambda k: k.astype(np.int64), kind="stable")
    eye = gen.events.loc[gen.events["Glascow coma scale eye opening"] != ""].drop_duplicates("series")
    carevue = eye.set_index("series")["Glascow coma scale eye opening"].str[:1].str.isdigit()
    system = carevue.reindex(table["series"].to_numpy())
    # A stay without a Glasgow coma scale has no spelling to follow: either system.
    fallback = np.where(np.arange(len(table)) % 2 == 0, "carevue", "metavision")
    return pd.DataFrame({
        "SUBJECT_ID": table["patient"].to_numpy(np.int64), "ICUSTAY_ID": table["key"].astype(np.int64).to_numpy(),
        "END": table["end"].to_numpy(), "END_GEN": table["end"].to_numpy(), "SERIES": table["series"].to_numpy(),
        "SYSTEM": np.where(system.isna(), fallback, np.where(system.fillna(False).astype(bool), "carevue", "metavision")),
        "NOTE": table["note"].to_numpy(), "SPLIT": table["SPLIT"].to_numpy(),
        **{name: table[name].to_numpy() for name in gen.label_names}})


def write(spec, out: str | Path, volume: Volume = Volume(), task_files: str | Path | None = None,
          log=lambda line: None) -> dict:
    """The raw tables of ``spec``'s task under ``out`` (and its own task files under ``task_files``); the report."""
    check(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = generator.generate(spec)
    if task_files is not None:
        generator.write(gen, spec, Path(task_files))
    rng = _rng(spec)
    table = cohort(gen)
    stays = stays_mod.build(table, volume.distractors, rng)
    rows = stays_mod.write(stays, out, rng)
    log(f"      {len(table):,} cohort stays, {len(stays.table) - len(table):,} distractor stays")
    dropped = charting.Dropped()
    for step, n in stays.excluded().items():
        dropped.add(step, n)
    mapped, timing = charting.mapped_events(gen.events, stays, volume, rng, dropped)
    rows.update(charting.write_tables(mapped, stays, volume, rng, dropped, out, log)[0])
    rows.update(_diagnoses(table, stays, gen.label_names, volume, rng, dropped, out))
    rows.update(_notes(stays, volume, rng, dropped, out))
    rows["OUTPUTEVENTS"] = charting.output_events(stays, volume, rng, out)
    test = table.drop_duplicates("SUBJECT_ID")
    pd.DataFrame({"s": test["SUBJECT_ID"], "t": (test["SPLIT"] == "test").astype(int)}).to_csv(
        out / "testset.csv", header=False, index=False)
    without = int(sum((df["series"] == "").sum() for df in gen.splits.values()))
    report = {"task": dataclasses.asdict(spec), "tables": rows, "dropped": dropped.n, "timing": dataclasses.asdict(timing),
              "stays": {"cohort": len(table), "without_series": without, "distractors": volume.distractors},
              "mapped_rows": {t: int((mapped["TABLE"] == k).sum()) for t, k in (("CHARTEVENTS", "chart"), ("LABEVENTS", "lab"))}}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _diagnoses(table, stays, label_names, volume: Volume, rng, dropped, out) -> dict[str, int]:
    theirs = stays.role(*NON_COHORT).drop_duplicates("HADM_ID")
    frame = diagnoses.rows(table[label_names].to_numpy(), label_names,
                           (table["ICUSTAY_ID"] + stays_mod.COHORT_HADM_OFFSET).to_numpy(), table["SUBJECT_ID"].to_numpy(),
                           theirs["HADM_ID"].to_numpy(), theirs["SUBJECT_ID"].to_numpy(),
                           volume.diagnoses_per_admission, rng, dropped)
    return diagnoses.write(out, frame)


def _notes(stays, volume: Volume, rng, dropped, out) -> dict[str, int]:
    """The cohort's notes and the distractors', then filler notes up to the NOTEEVENTS target."""
    own = stays.role("cohort")
    writer = schema.TableWriter(out, "NOTEEVENTS")
    try:
        writer.append(noteevents.cohort_rows(own, list(own["NOTE"]), rng, dropped))
        writer.append(noteevents.other_rows(stays.role(*NON_COHORT), rng, dropped))
        for n in bulk.chunks(volume.targets.get("NOTEEVENTS", 0) - writer.rows, 200_000):
            writer.append(_filler_notes(stays, n, volume.note_chars, rng, dropped))
    finally:
        writer.close()
    return {"NOTEEVENTS": writer.rows}


def _filler_notes(stays, n: int, chars: int, rng, dropped) -> pd.DataFrame:
    """Notes of cohort and distractor admissions after their stay's first 48 h, a tenth of them discharge
    summaries without a chart time: none enters a note."""
    t = stays.table[stays.table["ROLE"].isin(("cohort",) + NON_COHORT)]
    i = rng.integers(0, len(t), n)
    cohort_stay = (t["ROLE"].to_numpy() == "cohort")[i]
    untimed = rng.random(n) < 0.1
    time = (t["INTIME"].to_numpy()[i] + noteevents.WINDOW + rng.integers(60, 30 * 86_400, n)).astype(np.float64)
    time[untimed] = np.nan
    dropped.add("notes:chart_time", int(untimed.sum()))
    dropped.add("notes:admission", int((~untimed & ~cohort_stay).sum()))
    dropped.add("notes:first_48h", int((~untimed & cohort_stay).sum()))
    day = np.where(untimed, t["DISCH"].to_numpy()[i], time)
    return noteevents.frame(t["SUBJECT_ID"].to_numpy()[i], t["HADM_ID"].to_numpy()[i], time, day,
                            bulk.note_texts(n, chars, rng), rng)
