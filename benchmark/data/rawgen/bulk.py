"""A raw database of a given share of MIMIC-III's size, for measuring the build where it is costly.

At ``scale`` f, every event table gets f times MIMIC-III 1.4's rows (``MIMIC3``), CHARTEVENTS and
LABEVENTS with MIMIC-III's share of rows of the 17 variables (``MAPPED``, the itemid map's
``COUNT`` column: 59.1 M of 330.7 M chart rows, 1.9 M of 27.9 M lab rows), NOTEEVENTS with notes of
MIMIC-III's mean length, and the build's rules meet the same mix of events as on MIMIC-III:

- the stays: the generator charts ~440 values of the 17 variables per stay, MIMIC-III ~1,000 per
  cohort stay (79 % of its mapped rows are a cohort stay's, on the demo, and ~10 % of those leave as
  duplicates or outside the ICU stay), so f of MIMIC-III's values takes ``DENSITY`` x f of its
  41,904 cohort stays; the distractor stays keep MIMIC-III's 32 % of non-cohort stays (19,628 of
  61,532: neonates, transfers, admissions with several ICU stays);
- the distractor stays' heart rates make up the rest of the mapped chart rows (the 21 % that
  validation drops on the demo), smaller duplicates the demo's 8.6 % (``episodes:one_per_time``),
  cohort labs before the ICU admission the rest of the mapped lab rows;
- items of none of the 17 variables fill each event table up to its share;
- filler notes, charted after the first 48 h or as discharge summaries without a chart time, fill
  NOTEEVENTS; OUTPUTEVENTS (not read by the build) gets its share of urine outputs.

Filler rows are made and written in chunks (``CHUNK``), so writing stays within a few hundred MB.
"""
from __future__ import annotations

import math

import numpy as np

from .volume import Volume

MIMIC3 = {"PATIENTS": 46_520, "ADMISSIONS": 58_976, "ICUSTAYS": 61_532, "CHARTEVENTS": 330_712_483,
          "LABEVENTS": 27_854_055, "OUTPUTEVENTS": 4_349_218, "DIAGNOSES_ICD": 651_047, "NOTEEVENTS": 2_083_180}
MAPPED = {"CHARTEVENTS": 59_072_525, "LABEVENTS": 1_869_896}
COHORT_STAYS, NON_COHORT_SHARE = 41_904, 19_628 / 61_532
DENSITY = 2.3  # MIMIC-III's values per cohort stay (~1,000) / the generator's (~440)
NOTE_CHARS = 1_900  # NOTEEVENTS' mean row, ~3.9 GB over 2.08 M rows
CHUNK = 2_000_000
# Non-cohort stays by kind, as in MIMIC-III (neonates, transfers, admissions with several ICU stays);
# a few of each other kind so that every rule is met.
KINDS = {"child": 0.40, "transfer": 0.25, "ward": 0.05, "two_icu_stays": 0.30}


def cohort_size(scale: float) -> int:
    return max(10, round(scale * COHORT_STAYS * DENSITY))


def volume(scale: float, n_total: int) -> Volume:
    others = n_total / (1 - NON_COHORT_SHARE) * NON_COHORT_SHARE
    kinds = {k: int(round(others * share)) for k, share in KINDS.items()}
    kinds["two_icu_stays"] += kinds["two_icu_stays"] % 2
    kinds.update(no_admission=1, no_los=max(1, round(n_total * 0.001)), no_events=max(1, round(n_total * 0.002)),
                 outside=max(1, round(n_total * 0.003)))
    return Volume(distractors=kinds, copy_share=0.001, duplicate_share=0.10, other_chart=0, other_lab=0,
                  targets={t: math.ceil(scale * n) for t, n in MIMIC3.items() if t in (
                      "CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS", "NOTEEVENTS")},
                  mapped={t: math.ceil(scale * n) for t, n in MAPPED.items()}, note_chars=NOTE_CHARS)


def chunks(n: int, size: int = CHUNK):
    """Sizes of the chunks that make ``n`` rows."""
    while n > 0:
        yield min(size, n)
        n -= size


WORDS = ("patient pt stable vital signs afebrile hr bp resp sat on ra nc ventilator sedated propofol fentanyl "
         "lasix diuresis creatinine potassium repleted lactate trending down abx vanc zosyn cultures pending "
         "cxr bilateral infiltrates echo ef family meeting code full plan continue monitor neuro alert oriented "
         "follows commands skin intact foley urine output adequate tolerating tube feeds pain controlled").split()


def note_texts(n: int, mean_chars: int, rng, pool: int = 500) -> np.ndarray:
    """``n`` note texts of ``mean_chars`` on average, drawn from a pool of made-up nursing notes (with
    line breaks and commas, so they are quoted fields as MIMIC's are)."""
    lengths = np.clip(rng.lognormal(np.log(mean_chars) - 0.3, 0.77, pool), 40, 40_000).astype(int)
    texts = []
    for length in lengths:
        words = np.array(WORDS, dtype=object)[rng.integers(0, len(WORDS), length // 6 + 1)]
        lines = [" ".join(words[i:i + 12]) + "," for i in range(0, len(words), 12)]
        texts.append("\n".join(lines)[:length])
    return np.array(texts, dtype=object)[rng.integers(0, pool, n)]
