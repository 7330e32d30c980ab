"""MIMIC-IV-Note's discharge summaries: each admission's note as the past medical history of its summary,
and summaries the build must not use.

The generator's note of a MIMIC-IV-shaped task reads 'past medical history <history> social history
<social>' (lower case, no punctuation). Its admission's discharge summary is written as a clinician's
(``summary``): headed sections ('Chief Complaint:', 'Past Medical History:', 'Social History:', 'Family
History:'), the history as bullet lines with capitals and commas, which the build's section extraction
and cleaning undo. The build takes the section between "past medical history:" and "social history",
so what comes back is the history alone (``pmh``): the headings' words and the social history are not
part of the build's note, by the specification's design (section 11.1, step 4).

Distractors, each counted by the attrition row that drops it (``Dropped``): a later addendum of the same
admission with a history of its own (``notes:one_per_admission``: the first summary by chart time is
kept), a summary without an admission id (``notes:admission_id``), summaries without the heading and
summaries whose section is empty (``notes:past_medical_history``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema
from .charting import Dropped
from .stays import DAY

START, END = "past medical history", "social history"
ADDENDUM_SHARE, NO_HEADING_SHARE = 0.1, 0.3


def parts(note: pd.Series) -> pd.DataFrame:
    """HISTORY and SOCIAL of each generator note ('' where none)."""
    found = note.fillna("").str.extract(f"^{START}(.*?){END}(.*)$")
    return pd.DataFrame({"HISTORY": found[0].fillna("").str.strip(), "SOCIAL": found[1].fillna("").str.strip()},
                        index=note.index)


def pmh(note: pd.Series) -> pd.Series:
    """The note the build extracts from the summary of each generator note: its history, whitespace runs
    made single spaces ('' for a note without one)."""
    return parts(note)["HISTORY"].str.split().str.join(" ").fillna("")


def _typed(history: str, rng) -> str:
    """The history as bullet lines: words kept whole (the cleaning removes punctuation, it does not split),
    some capitalised, a comma or a line break between some."""
    words = history.split()
    out = []
    for i, word in enumerate(words):
        u = rng.random()
        word = word.upper() if u < 0.15 else word.capitalize() if u < 0.4 else word
        sep = "" if i == 0 else ("\n- " if rng.random() < 0.25 else ", " if rng.random() < 0.2 else " ")
        out.append(sep + word)
    return "- " + "".join(out) + "."


def summary(history: str, social: str, rng) -> str:
    return (f"Name:  ___                     Unit No:   ___\n \nAdmission Date:  ___              Discharge Date:   ___\n"
            f" \nChief Complaint:\nShortness of breath\n \nPast Medical History:\n{_typed(history, rng)}\n \n"
            f"Social History:\n{social.capitalize()}.\n \nFamily History:\nNon-contributory.\n \n"
            f"Brief Hospital Course:\nAdmitted, treated, discharged in stable condition.\n")


def rows(admissions: pd.DataFrame, rng, dropped: Dropped) -> pd.DataFrame:
    """discharge rows of ``admissions`` (SUBJECT_ID, HADM_ID, DISCH in seconds, NOTE: the generator's note,
    '' for none, None for an admission outside the task, which gets a summary without the heading)."""
    out = []
    known = admissions["NOTE"].notna().to_numpy()
    found = parts(admissions["NOTE"].fillna(""))
    history, social = found["HISTORY"].to_numpy(object), found["SOCIAL"].to_numpy(object)
    note = admissions["NOTE"].fillna("").to_numpy(object) != ""
    day = admissions["DISCH"].to_numpy() // DAY * DAY
    subject, hadm = admissions["SUBJECT_ID"].to_numpy(), admissions["HADM_ID"].to_numpy()
    for i in range(len(admissions)):  # per admission: a history is typed word by word
        if not note[i]:
            if not known[i] or rng.random() < NO_HEADING_SHARE:  # a summary, but without the heading
                out.append((subject[i], hadm[i], day[i], "Brief Hospital Course:\nno history recorded.\n"))
                dropped.add("notes:past_medical_history", 1)
            continue
        out.append((subject[i], hadm[i], day[i], summary(history[i], social[i], rng)))
        if not history[i].split():
            dropped.add("notes:past_medical_history", 1)  # the heading, an empty section
        if rng.random() < ADDENDUM_SHARE:
            out.append((subject[i], hadm[i], day[i] + DAY, "Addendum.\nPast Medical History:\nAmended later.\n"))
            dropped.add("notes:one_per_admission", 1)
    for i in range(min(len(admissions), max(1, len(admissions) // 50))):  # summaries filed without their admission
        out.append((subject[i], None, day[i], "Past Medical History:\nunfiled.\nSocial History:\nnone"))
        dropped.add("notes:admission_id", 1)
    subject, hadm, day, text = (list(c) for c in zip(*out)) if out else ([], [], [], [])
    frame = pd.DataFrame({"subject_id": subject, "hadm_id": pd.array(hadm, dtype="Int64"),
                          "charttime": schema.timestamps(np.array(day, dtype=np.float64)), "text": text})
    frame["note_seq"] = frame.groupby("subject_id").cumcount() + 1
    frame["note_id"] = frame["subject_id"].astype(str) + "-DS-" + frame["note_seq"].astype(str)
    frame["note_type"] = "DS"
    frame["storetime"] = schema.timestamps(np.array(day, dtype=np.float64) + 3600 * 14)
    return frame


def write(folder, frame: pd.DataFrame) -> dict[str, int]:
    return {"discharge": schema.write(folder, "discharge", frame, "mimic4")}
