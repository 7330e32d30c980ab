"""The MIRACL MIMIC-III listfiles: ``phenotyping/{train,test}_multimodal_listfile.csv``.

Columns ``patient_id, stay_id, stay, period_length, notes, <25 labels>`` (layout ``mimic3-miracl`` of
``loaders``): one row per stay with an episode file, ``period_length`` its ICU length of stay in hours.
The split is Harutyunyan's, by patient: a subject listed with 1 in ``testset.csv`` is in the test
split, every other subject (0, or not listed) in the training split. MIRACL trains on the whole
training split: there is no validation split. Another file of the same form (``--testset``) can take
its place: a database whose subjects are not MIMIC-III's, such as the generator's raw tables, has its
own test subjects.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from ...errors import UsageError
from .steps import Attrition, write_csv

SPLITS = ("train", "test")


def test_subjects(path: str | Path | None = None) -> pd.Index:
    """The subjects marked 1 in the packaged ``testset.csv``, or in ``path`` (lines ``SUBJECT_ID,0|1``,
    no header); a malformed file is one line naming it."""
    if path is None:
        with resources.files("benchmark.data").joinpath("resources/testset.csv").open() as fh:
            table = pd.read_csv(fh, header=None, names=["SUBJECT_ID", "TEST"], dtype="int64")
    else:
        try:
            table = pd.read_csv(path, header=None, names=["SUBJECT_ID", "TEST"], dtype="int64")
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise UsageError(f"{path}: not a test set file ({str(e).strip().splitlines()[0]}); expected lines "
                             f"'SUBJECT_ID,1' (test) or 'SUBJECT_ID,0', no header, as testset.csv") from None
    return pd.Index(table.loc[table["TEST"] == 1, "SUBJECT_ID"])


def assemble(episodes: pd.DataFrame, labels: pd.DataFrame, notes: pd.DataFrame,
             label_names: list[str], test_set: pd.Index | None = None) -> dict[str, pd.DataFrame]:
    """The two listfiles as frames, rows ordered by patient and episode; ``test_set``: the test
    subjects (default: the packaged testset.csv's)."""
    table = episodes.merge(notes, on="ICUSTAY_ID", how="left").merge(labels, on="ICUSTAY_ID", how="left")
    table = table.sort_values(["SUBJECT_ID", "EPISODE"], kind="stable")
    listfile = pd.DataFrame({"patient_id": table["SUBJECT_ID"].to_numpy(), "stay_id": table["ICUSTAY_ID"].to_numpy(),
                             "stay": table["stay"].to_numpy(), "period_length": table["period_length"].to_numpy(),
                             "notes": table["notes"].fillna("").to_numpy()})
    for name in label_names:
        listfile[name] = table[name].fillna(0).astype("int64").to_numpy()
    test = listfile["patient_id"].isin(test_subjects() if test_set is None else test_set)
    return {"train": listfile[~test.to_numpy()], "test": listfile[test.to_numpy()]}


def write(parts: dict[str, pd.DataFrame], folder: Path) -> Attrition:
    folder.mkdir(parents=True, exist_ok=True)
    att = Attrition()
    for split in SPLITS:
        write_csv(parts[split], folder / f"{split}_multimodal_listfile.csv")
        att.add(f"split:{split}", len(parts[split]), 0,
                f"{split} split ({'subjects with 1 in testset.csv' if split == 'test' else 'all other subjects'})",
                f"stays ({split})")
    return att
