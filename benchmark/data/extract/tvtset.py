"""The MIMIC-IV patient split (FlexCare's ``tvtset.csv``): every admission's subject in train, val or test.

The reference shuffles the distinct subject ids of ADMISSIONS (in the order they first appear) with
Python's ``random`` seeded 42 and cuts the shuffled list into 20 % test (2), 10 % validation (1) and
70 % training (0). The order of the three slices is not given by the specification: here test comes
first, then validation, then training. MIRACL's own ``tvtset.csv`` (190,279 subjects of MIMIC-IV 2.0)
can be given instead (``--split-file``): two columns, subject id and 0/1/2, a header line allowed.
Training uses train + val, as MIRACL does; the loaders read both.
"""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from ...errors import UsageError

SEED = 42
TEST, VAL = 0.2, 0.1
NAMES = {0: "train", 1: "val", 2: "test"}


def make(subjects: pd.Series, seed: int = SEED) -> pd.DataFrame:
    """SUBJECT_ID, SPLIT (0 train, 1 val, 2 test) of the distinct ``subjects``."""
    order = [int(s) for s in pd.unique(subjects)]
    random.Random(seed).shuffle(order)  # the stdlib's shuffle: the reference's permutation for the same list
    n_test, n_val = int(len(order) * TEST), int(len(order) * VAL)
    split = [2] * n_test + [1] * n_val + [0] * (len(order) - n_test - n_val)
    return pd.DataFrame({"SUBJECT_ID": order, "SPLIT": split})


def read(path: str | Path) -> pd.DataFrame:
    """A tvtset file: subject id and 0/1/2 per line, a header line allowed; bad lines are named."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UsageError(f"{path}: split file cannot be read ({str(e).strip().splitlines()[0]}); expected lines "
                         f"'subject_id,split' with split 0 (train), 1 (val) or 2 (test)") from None
    if raw.shape[1] < 2:
        raise UsageError(f"{path}: split file has {raw.shape[1]} column, expected 'subject_id,split'")
    if not raw.iloc[0, 0].strip().isdigit():  # a header line
        raw = raw.iloc[1:]
    subject = pd.to_numeric(raw.iloc[:, 0], errors="coerce")
    split = pd.to_numeric(raw.iloc[:, 1], errors="coerce")
    bad = subject.isna() | ~split.isin([0, 1, 2])
    if bad.any():
        line = int(raw.index[bad.to_numpy()][0]) + 1
        raise UsageError(f"{path} line {line}: {','.join(raw[bad].iloc[0, :2])!r}, expected a subject id and 0, 1 or 2")
    return pd.DataFrame({"SUBJECT_ID": subject.astype("int64").to_numpy(), "SPLIT": split.astype("int64").to_numpy()})
