"""How long the synthetic notes are: the real pipelines' note shapes as length laws with one size parameter.

The generator (``generator._note``) writes each note's label-bearing part, the *history*: a past medical
history section with the label mentions (true, false, negated, family history), a few other conditions
and a social history. This module puts it where the real pipeline's note has it and fills the rest of the
note with clinical text drawn independently of the labels, from pools that contain no term of any label
(``tests/test_note_lengths.py`` checks every pool against both label tables). The history is never
changed, cut or moved past the encoder's window: the notes carry the same label information at every
length, and only their length, hence the encoder's and the model's work, follows the law.

The law of a layout (the real pipeline that writes it), scaled by the task's ``note_scale``:

- ``mimic3-miracl``, Khadanga et al.'s notes as MIRACL builds them (spec 11.7): the first five notes
  charted within 48 h of ICU admission, concatenated. K = min(5, 1 + Poisson(3)) notes (P(K = 5) = 0.35,
  P(K <= 2) = 0.20).
  The first is the admission note holding the history (a physician's with probability 0.12, else a
  nurse's), after an opening of at most 40 words, so that every mention lies in the first 512 tokens;
  the others are nursing, radiology or physician notes with probabilities 0.61 / 0.31 / 0.08, the shares
  of those categories among MIMIC-III 1.4's NOTEEVENTS rows (Nursing and Nursing/other 1,046,053,
  Radiology 522,279, Physician 141,624; ECG, Echo and discharge summaries have no chart time, so the
  48-hour window never holds them). Words per note (lognormal, median / sigma of the log): nursing
  200 / 0.6, radiology 130 / 0.5, physician 900 / 0.5. The count and the lengths are our assumptions
  (no source we found gives per-category lengths or notes per stay in the window), chosen to give what
  the real notes show, that the concatenation mostly reaches the 512-token cap: with a fifth of the
  stays holding at most two notes (short stays, notes charted late), 88 % of the stays with a
  note reach it at note_scale 1 (MiniLM tokens).
- ``mimic4``, the past medical history section of the admission's discharge summary (spec 11.1 step 4):
  the section holds the history and, when the law's length exceeds it, further past medical and surgical
  history items before its "social history" end. Words per section: lognormal, median 50, sigma 0.8
  (p10 18, p90 140 words): our assumption, as no source we found reports the section's length; a
  section is a list of a patient's conditions (a few words each) with a long tail of oncologic and
  surgical narratives.

``note_scale`` multiplies every length the law draws (never the history): 1 is the real pipeline's
shape (the ``full`` track), 0 leaves the history alone, the notes of generator version 3 byte for byte
(the ``quick`` and ``smoke`` tracks, whose CPU speed depends on short notes). A note is written up to
``WORD_LIMIT`` words: every word is at least one token, so no encoder of the harness (512 tokens at most)
reads past that cut, and whether a note reaches the cap is the same as for the uncut text.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

WORD_LIMIT = 512
MAX_NOTES = 5  # the reference concatenates the first five notes of the first 48 hours
NOTES_POISSON = 3.0  # notes in the window beyond the first: Poisson (assumption)
OPENING_WORDS = 40  # at most this many words of the admission note before the history
HISTORY_NOTE_PHYSICIAN = 0.12  # physician / (physician + nursing) rows of NOTEEVENTS
STYLE_SHARES = {"nursing": 0.61, "radiology": 0.31, "physician": 0.08}  # of the NOTEEVENTS rows of the three
PMH_MEDIAN_WORDS, PMH_SIGMA = 50.0, 0.8


@dataclass(frozen=True)
class Style:
    """One kind of note: its length law (words, lognormal) and its text (a header, then sentences)."""

    name: str
    median_words: float
    sigma: float
    headers: tuple[str, ...]
    sentences: tuple[str, ...]


NURSING = Style("nursing", 200.0, 0.6, (
    "nursing progress note", "nursing admission note", "npn 7a 7p", "npn 7p 7a", "nursing note", "micu nursing progress note",
    "csru nursing progress note", "nursing shift note",
), (
    "neuro alert and oriented times three follows commands moves all extremities",
    "pupils equal round and reactive to light", "opens eyes to voice and answers simple questions appropriately",
    "sedation held this morning for neuro assessment", "cv sinus rhythm no ectopy noted", "bp stable overnight",
    "peripheral pulses palpable", "extremities warm and well perfused", "resp lungs clear to auscultation bilaterally",
    "on two liters nasal cannula sats in the high nineties", "weaned to room air this afternoon",
    "nonproductive cough encouraged to use incentive spirometer", "gi abdomen soft nontender bowel sounds present",
    "tolerating clear liquids advanced to regular diet as tolerated", "no bowel movement this shift",
    "gu foley draining clear yellow urine", "urine output adequate", "voiding without difficulty",
    "id afebrile this shift", "skin intact no breakdown noted", "turned and repositioned every two hours",
    "oral care given", "pain controlled with prn medication", "denies pain at this time",
    "iv access two peripheral lines patent", "labs sent this morning results pending", "ambulated to chair with assist of one",
    "slept in naps overnight", "call light within reach bed in low position", "family in to visit updated on plan of care",
    "wife called and was updated by rn", "patient calm and cooperative with care", "plan continue to monitor closely",
    "will continue current plan of care", "report given to oncoming rn", "events none overnight",
    "medicated for comfort with good effect", "tolerated bath and linen change", "blood glucose checks per protocol",
    "fluid balance even for the shift", "heme hct stable no transfusion needed", "awaiting case management consult",
    "physical therapy evaluated today", "dressing changed clean dry and intact", "safety precautions maintained",
))  # fmt: skip

RADIOLOGY = Style("radiology", 130.0, 0.5, (
    "chest portable ap", "portable ap chest radiograph", "chest pa and lateral", "ct head without contrast",
    "abdomen supine and upright", "bilateral lower extremity ultrasound",
), (
    "reason for this examination evaluate for interval change", "clinical indication follow up",
    "comparison is made to the prior study of the previous day", "no prior studies are available for comparison",
    "single frontal view of the chest was obtained", "the patient is rotated which limits evaluation",
    "the study is limited by patient motion", "the mediastinal and hilar contours are unchanged",
    "the visualized osseous structures are unremarkable", "the visualized upper abdomen is unremarkable",
    "lung volumes are unchanged from the prior study", "the trachea is midline",
    "no significant interval change is seen", "findings were discussed with the covering physician at the time of the study",
    "recommend clinical correlation", "the ventricles and sulci are normal in size and configuration",
    "there is no evidence of hemorrhage or mass effect", "the gray white matter differentiation is preserved",
    "the bowel gas pattern is nonobstructive", "normal flow and compressibility of the deep veins",
    "impression stable appearance of the chest", "impression no acute intracranial process",
    "final report", "wet read by the on call resident", "dictated by the attending radiologist",
))  # fmt: skip

PHYSICIAN = Style("physician", 900.0, 0.5, (
    "micu resident admission note", "icu attending progress note", "physician resident progress note",
    "intensivist note", "critical care attending admission note",
), (
    "chief complaint transferred from the emergency department for closer monitoring", "twenty four hour events",
    "allergies no known drug allergies", "infusions none", "other icu medications as per the medication list",
    "changes to medical and family history none", "review of systems is unchanged from admission except as noted below",
    "flowsheet data as of this morning", "vital signs hemodynamic monitoring fluid balance", "tmax 37 4 tcurrent 36 9",
    "hr 88 bpm range 72 to 101", "bp 121 over 64 mmhg", "rr 18 inspirations per minute", "spo2 97 percent",
    "heart rhythm sinus rhythm", "total in 1 850 ml total out 1 420 ml", "physical examination",
    "general appearance well nourished no acute distress", "heent normocephalic atraumatic",
    "cardiovascular s1 normal s2 normal no murmur", "peripheral vascular radial pulses present dorsalis pedis pulses present",
    "abdominal soft non tender bowel sounds present", "extremities no cyanosis no clubbing",
    "skin warm and dry", "neurologic attentive follows simple commands responds to verbal stimuli",
    "labs and radiology reviewed", "wbc 9 4 hct 31 2 plt 212", "cr 1 0 glucose 112",
    "assessment and plan", "continue current management and reassess in the afternoon",
    "prophylaxis sq heparin and ppi", "lines two peripheral ivs", "code status full code",
    "disposition remain in the icu for now", "communication with patient and family at the bedside",
    "total time spent on patient care 35 minutes", "patient seen and examined with the resident",
    "i agree with the findings and plan as documented", "discussed on multidisciplinary rounds",
    "follow up results of this mornings studies", "nutrition regular diet", "consults physical therapy",
    "medications reviewed and reconciled", "plan discussed with the nursing staff", "will readdress goals of care tomorrow",
))  # fmt: skip
STYLES = {s.name: s for s in (NURSING, RADIOLOGY, PHYSICIAN)}

# Further past medical and surgical history of a discharge summary's section: no condition of either
# label table, nor anything that names one.
PMH_ITEMS = (
    "s p total knee replacement", "s p right hip replacement", "remote tonsillectomy", "s p hernia repair", "cataracts",
    "s p cataract surgery", "seasonal allergies", "hearing loss", "macular degeneration", "carpal tunnel syndrome",
    "s p hysterectomy", "colon polyps", "diverticulosis", "hemorrhoids", "restless legs syndrome", "insomnia",
    "iron deficiency anemia", "vitamin d deficiency", "b12 deficiency", "eczema", "psoriasis", "rosacea",
    "s p tonsillectomy as a child", "s p carpal tunnel release", "s p rotator cuff repair", "lumbar spinal stenosis",
    "s p laminectomy", "kidney stones", "urinary incontinence", "s p tubal ligation", "s p cesarean section",
    "basal cell carcinoma s p excision", "breast cancer s p lumpectomy and radiation in remission",
    "prostate cancer s p prostatectomy", "thyroid nodule followed by endocrinology", "s p colonoscopy with polypectomy",
    "chronic low back pain", "fibromyalgia", "peptic ulcer disease remote", "irritable bowel syndrome",
    "benign positional vertigo", "plantar fasciitis", "s p bunionectomy", "dupuytrens contracture",
    "past surgical history", "other past medical history", "past oncologic history",
    "diagnosed at age 55 and treated with surgery followed by radiation", "followed by an outpatient oncologist",
    "completed chemotherapy several years ago and has been in remission since", "no recurrence on surveillance imaging",
    "seen by the primary care physician every six months",
)  # fmt: skip


def describe(layout: str, scale: float) -> str:
    """One line: the law a task's notes follow at ``scale``."""
    if scale == 0:
        return "the history section alone (note_scale 0: the notes of generator version 3)"
    if layout == "mimic3-miracl":
        return (f"the first {MAX_NOTES} notes of the first 48 h, concatenated (Khadanga et al.; nursing, radiology and "
                f"physician styles), lengths x {scale:g}")
    if layout == "mimic4":
        return f"the past medical history section of a discharge summary, lengths x {scale:g}"
    return "no notes in this layout"


def pmh_section(history: str, social: str, extra: str = "") -> str:
    """The past medical history section as the generator writes it, with ``extra`` history before its end."""
    return f"past medical history {history}{' ' + extra if extra else ''} social history {social}".strip()


def write_notes(parts: list[tuple[str, str] | None], layout: str, scale: float, rng: np.random.Generator) -> list[str]:
    """Each stay's note ('' for none) from its (history, social) parts, at the length law of ``layout`` x ``scale``.

    ``rng`` is the notes' own stream: the lengths and the filler never draw from the streams of the labels,
    the mentions or the series, so those are the same at every scale. At scale 0 nothing is drawn."""
    cores = [pmh_section(*p) if p is not None else "" for p in parts]
    if scale == 0 or layout not in ("mimic3-miracl", "mimic4"):
        return cores
    n = len(parts)
    if layout == "mimic4":
        words = np.minimum(np.round(scale * rng.lognormal(np.log(PMH_MEDIAN_WORDS), PMH_SIGMA, n)), WORD_LIMIT)
        out = []
        for i, p in enumerate(parts):
            if p is None:
                out.append("")
                continue
            core_words = len(cores[i].split())
            extra = _text(rng, PMH_ITEMS, int(words[i]) - core_words, at_most=WORD_LIMIT - core_words)
            out.append(pmh_section(*p, extra) if extra else cores[i])
        return out
    count = np.minimum(MAX_NOTES, 1 + rng.poisson(NOTES_POISSON, n))
    physician_first = rng.random(n) < HISTORY_NOTE_PHYSICIAN
    names = list(STYLE_SHARES)
    later = rng.choice(len(names), size=(n, MAX_NOTES - 1), p=list(STYLE_SHARES.values()))
    z = rng.standard_normal((n, MAX_NOTES))
    out = []
    for i, core in enumerate(cores):
        if not core:
            out.append("")
            continue
        styles = [PHYSICIAN if physician_first[i] else NURSING] + [STYLES[names[k]] for k in later[i, : count[i] - 1]]
        lengths = [int(round(scale * s.median_words * np.exp(s.sigma * z[i, j]))) for j, s in enumerate(styles)]
        budget = WORD_LIMIT - len(core.split())  # filler words the note may hold beside the history
        opening = min(OPENING_WORDS, lengths[0] // 4, budget)
        before = _note_text(rng, styles[0], opening)
        after = []
        left = budget - opening
        for j, style in enumerate(styles):
            if left <= 0:
                break
            text = _note_text(rng, style, min(lengths[j] - opening if j == 0 else lengths[j], left), header=j > 0)
            after.append(text)
            left -= len(text.split())
        out.append(" ".join(t for t in (before, core, *after) if t))
    return out


def _note_text(rng, style: Style, words: int, header: bool = True) -> str:
    """``words`` words of a note of ``style``: its header (a note of its own starts with one), then sentences."""
    if words <= 0:
        return ""
    head = style.headers[rng.integers(len(style.headers))].split() if header else []
    return " ".join((head + _text(rng, style.sentences, words - len(head)).split())[:words])


def _text(rng, pool: tuple[str, ...], words: int, at_most: int | None = None) -> str:
    """Sentences of ``pool`` drawn with replacement until ``words`` words, the last one cut there; or, with
    ``at_most``, whole sentences (a history item is not cut in its middle) until ``words``, short of one
    that would pass ``at_most``."""
    if words <= 0:
        return ""
    split, mean = _split(pool)
    out: list[str] = []
    while len(out) < words:
        for k in rng.integers(len(pool), size=(words - len(out)) // mean + 1):
            if at_most is not None:
                if len(out) + len(split[k]) > at_most:
                    return " ".join(out)
                out += split[k]
                if len(out) >= words:
                    return " ".join(out)
            else:
                out += split[k]
    return " ".join(out[:words])


@functools.lru_cache(maxsize=None)
def _split(pool: tuple[str, ...]) -> tuple[list[list[str]], int]:
    split = [sentence.split() for sentence in pool]
    return split, max(1, sum(map(len, split)) // len(split))
