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
from .volume import Volume

NON_COHORT = ("transfer", "ward", "no_admission", "two_icu_stays", "child")  # dropped at the stays step
EVENT_COLUMNS = ["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "TIME", "ITEMID", "VALUE", "VALUEUOM", "TABLE"]


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
    mapped, timing = _mapped_events(gen, stays, volume, rng, dropped)
    rows.update(_write_events(mapped, stays, volume, rng, dropped, out, log))
    rows.update(_diagnoses(table, stays, gen.label_names, volume, rng, dropped, out))
    rows.update(_notes(stays, volume, rng, dropped, out))
    rows["OUTPUTEVENTS"] = _outputs(stays, volume, rng, out)
    test = table.drop_duplicates("SUBJECT_ID")
    pd.DataFrame({"s": test["SUBJECT_ID"], "t": (test["SPLIT"] == "test").astype(int)}).to_csv(
        out / "testset.csv", header=False, index=False)
    without = int(sum((df["series"] == "").sum() for df in gen.splits.values()))
    report = {"task": dataclasses.asdict(spec), "tables": rows, "dropped": dropped.n, "timing": dataclasses.asdict(timing),
              "stays": {"cohort": len(table), "without_series": without, "distractors": volume.distractors},
              "mapped_rows": {t: int((mapped["TABLE"] == k).sum()) for t, k in (("CHARTEVENTS", "chart"), ("LABEVENTS", "lab"))}}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _mapped_events(gen, stays, volume: Volume, rng, dropped) -> tuple[pd.DataFrame, charting.Timing]:
    """Every event of the 17 variables' items: the task's values, their broken copies, the distractor
    stays' heart rates, and (to reach ``volume.mapped``) labs before the ICU admission."""
    cells, timing, late = charting.true_events(gen.events, stays, rng)
    dropped.add("episodes:icu_period", late)
    copies = charting.distractors(cells, volume.copy_share, volume.duplicate_share, rng, dropped)
    so_far = {t: int((cells["TABLE"] == t).sum() + (copies["TABLE"] == t).sum()) for t in ("chart", "lab")}
    theirs = stays.role(*NON_COHORT)
    hours = float(np.nan_to_num(theirs["END"].to_numpy(), nan=24.0).sum()) or 1.0
    per_hour = max(volume.distractor_events_per_hour, (volume.mapped.get("CHARTEVENTS", 0) - so_far["chart"]) / hours)
    their_events = charting.stay_events(theirs, per_hour, rng)
    dropped.add("chartevents:cohort_subjects", len(their_events))
    no_los = charting.stay_events(stays.role("no_los"), volume.distractor_events_per_hour, rng)
    dropped.add("episodes:length_of_stay", len(no_los))
    early = charting.stay_events(stays.role("outside"), volume.distractor_events_per_hour, rng, before_admission=True)
    labs = cells[cells["TABLE"] == "lab"]
    hospital = charting.before_admission(labs, volume.mapped.get("LABEVENTS", 0) - so_far["lab"], rng)
    dropped.add("episodes:icu_period", len(early) + len(hospital))
    parts = [cells, copies, their_events, no_los, early, hospital]
    return pd.concat([p[EVENT_COLUMNS] for p in parts], ignore_index=True), timing


def _write_events(mapped: pd.DataFrame, stays, volume: Volume, rng, dropped, out: Path, log) -> dict[str, int]:
    """CHARTEVENTS and LABEVENTS: the mapped events, then rows of other items up to the table's target."""
    charting.check_other_items()
    everyone = stays.table[stays.table["ROLE"] != "no_events"]
    rows = {}
    for name, t, least in (("CHARTEVENTS", "chart", volume.other_chart), ("LABEVENTS", "lab", volume.other_lab)):
        writer = schema.TableWriter(out, name)
        try:
            writer.append(charting.frame(mapped[mapped["TABLE"] == t], name, rng))
            other = max(least, volume.targets.get(name, 0) - writer.rows)
            for n in bulk.chunks(other):
                writer.append(charting.frame(charting.other_items(everyone, n, t, rng), name, rng))
                log(f"      {name}: {writer.rows:,} rows written")
        finally:
            writer.close()
        dropped.add(f"{name.lower()}:itemids", other)
        rows[name] = writer.rows
    return rows


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


def _outputs(stays, volume: Volume, rng, out) -> int:
    """Urine output through each stay: OUTPUTEVENTS has none of the 17 variables; written for the shape."""
    t = stays.table
    length = np.nan_to_num(t["END"].to_numpy(), nan=24.0)
    per_hour = max(volume.output_per_hour, volume.targets.get("OUTPUTEVENTS", 0) / length.sum())
    m = rng.poisson(length * per_hour)
    i = np.repeat(np.arange(len(t)), m)
    time = t["INTIME"].to_numpy()[i] + (rng.random(len(i)) * length[i] * 3600).astype(np.int64)
    frame = pd.DataFrame({"SUBJECT_ID": t["SUBJECT_ID"].to_numpy()[i], "HADM_ID": t["HADM_ID"].to_numpy()[i],
                          "ICUSTAY_ID": t["ICUSTAY_ID"].to_numpy()[i], "CHARTTIME": schema.timestamps(time),
                          "ITEMID": 40055, "VALUE": rng.integers(0, 400, len(i)), "VALUEUOM": "ml",
                          "STORETIME": schema.timestamps(time + 900), "CGID": rng.integers(14_000, 21_000, len(i))})
    return schema.write(out, "OUTPUTEVENTS", frame)
