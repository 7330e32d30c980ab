"""Note lengths of the real pipelines in the synthetic tasks (benchmark/data/note_lengths.py): the laws give
the stated shapes at the full track's scale, the label content is generator 3's, and the quick and smoke
tracks' files did not change."""
import dataclasses
import hashlib
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.data import generator, note_lengths, notes
from benchmark.protocol import FULL, QUICK, SMOKE

# Written by generator version 3 (harness 0.4.0) for these specs; the sha256 of the csv files (name and
# bytes, sorted by path) and, for a 400-sample twin of each full task, of its label matrix and its notes.
VERSION_3_FILES = {
    ("quick", "syn-phe"): "c16fb88b35e2413b06f4d9b43060f99812718307930c91bf2e4ed7fa3133845b",
    ("smoke", "syn-phe"): "08b66bdbbfb43c6458564ee3819fff34cd8872e7e4ca889e499069a451fa8821",
    ("smoke", "syn-dia"): "42d6edbb9773db40b5f16b1d5e2ad5a6bb6e72ee8daddfc17fd1060c27491706",
}
VERSION_3_SAMPLES = {  # task: (labels, notes)
    "mimic3-phe": ("d6b89d55f984d39e5f4913e383169950f826b2b767184385f29a1afff3347adf",
                   "fccfce6f3ac7f3365bab56cbb1a27a7f8fad8c7770682220cde389cec74b672c"),
    "mimic4-phe": ("67f85c503f0e074c8635e8cb6477248e993b79063a436c5484369e386b81ae53",
                   "b3d2d2c3f75f0166c5f15c0a709db491ccb67c170f0893c886ced5e42488aa88"),
    "mimic4-dia": ("6838e85dfabb78e18c313d63755276ec68401931151b906441e5e24433553cfb",
                   "d65a150f5f44771ab40c4fcaf583979e469bdcbe47939e4c5d82e06f1c9deb74"),
}
TERMS = sorted({term for row in generator.PHENOTYPES + generator.DIAGNOSES for term in row[4]})
POOLS = {"nursing": note_lengths.NURSING.headers + note_lengths.NURSING.sentences,
         "radiology": note_lengths.RADIOLOGY.headers + note_lengths.RADIOLOGY.sentences,
         "physician": note_lengths.PHYSICIAN.headers + note_lengths.PHYSICIAN.sentences,
         "pmh": note_lengths.PMH_ITEMS}


def _mentions(text: str) -> dict[str, int]:
    """How often each label term of either table stands in ``text`` as whole words."""
    return {t: len(re.findall(rf"(?<!\S){re.escape(t)}(?!\S)", text)) for t in TERMS}


def _sample(task: str, n: int = 400, scale: float | None = None):
    spec = dataclasses.replace(FULL.task(task), n_total=n)
    if scale is not None:
        spec = dataclasses.replace(spec, note_scale=scale)
    gen = generator.generate(spec)
    return spec, gen, [x for s in ("train", "val", "test") if s in gen.splits for x in gen.splits[s]["note"]]


def _tokens(texts: list[str], cap: int = 512) -> np.ndarray:
    tokenizer = notes.load_tokenizer("minilm")
    return np.array([len(x) for x in tokenizer(texts, add_special_tokens=False, truncation=True, max_length=cap)["input_ids"]])


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_the_filler_text_names_no_label(pool):
    """No sentence, header or history item of the filler holds a term of any label."""
    for text in POOLS[pool]:
        assert not any(_mentions(text).values()), (pool, text, {t: c for t, c in _mentions(text).items() if c})


def test_no_label_term_forms_where_filler_meets_filler_or_the_history():
    """A multi-word term split over a boundary: a sentence cut anywhere (or the history's social end)
    followed by a sentence, a header or the history's start."""
    texts = [t for pool in POOLS.values() for t in pool]
    ends = {" ".join(w[i:i + k]) for t in texts + list(generator.SOCIAL) for w in [t.split()] for k in (1, 2)
            for i in range(len(w) - k + 1)}
    starts = {" ".join(t.split()[:k]) for t in texts + ["past medical history"] for k in (1, 2)}
    for term in (t for t in TERMS if " " in t):
        words = term.split()
        for cut in range(1, len(words)):
            assert not (" ".join(words[:cut]) in ends and " ".join(words[cut:]) in starts), term


def test_mimic3_notes_at_the_full_tracks_law_mostly_reach_the_512_token_cap():
    spec, gen, texts = _sample("mimic3-phe", 600)
    assert spec.note_scale == 1.0  # the full track's law
    written = [t for t in texts if t]
    tokens = _tokens(written)
    assert np.median(tokens) == 512 and np.mean(tokens == 512) >= 0.8, np.mean(tokens == 512)
    assert np.percentile(tokens, 10) >= 300  # few stays have only one or two short notes
    assert max(len(t.split()) for t in written) <= note_lengths.WORD_LIMIT
    # Several notes of the three styles: their headers are there, nursing the most frequent.
    heads = {s.name: sum(any(f" {h} " in f" {t} " for h in s.headers) for t in written) for s in note_lengths.STYLES.values()}
    assert heads["nursing"] > heads["radiology"] > 0 and heads["physician"] > 0, heads


def test_mimic4_pmh_sections_follow_the_stated_law():
    """Median 50 words (lognormal, sigma 0.8) or the history itself when longer: in words p10 / p50 / p90
    about 22 / 50 / 140, a few sections at the cap."""
    _, _, texts = _sample("mimic4-phe", 2000)
    written = [t for t in texts if t]
    words = np.array([len(t.split()) for t in written])
    p10, p50, p90 = np.percentile(words, [10, 50, 90])
    assert 15 <= p10 <= 30 and 40 <= p50 <= 60 and 110 <= p90 <= 170, (p10, p50, p90)
    assert words.max() <= note_lengths.WORD_LIMIT
    tokens = _tokens(written)
    assert 55 <= np.median(tokens) <= 95 and 0 < np.mean(tokens == 512) < 0.03, (np.median(tokens), np.mean(tokens == 512))
    assert all(t.startswith("past medical history ") and " social history " in t for t in written)


@pytest.mark.parametrize("task", sorted(VERSION_3_SAMPLES))
def test_labels_mentions_and_series_are_generator_3s_at_every_note_length(task):
    labels_v3, notes_v3 = VERSION_3_SAMPLES[task]
    spec, short, cores = _sample(task, scale=0.0)
    _, long, texts = _sample(task, scale=1.0)
    assert hashlib.sha256("\n".join(cores).encode()).hexdigest() == notes_v3  # note_scale 0: version 3's notes
    assert hashlib.sha256(np.ascontiguousarray(generator.cohort(spec).labels).tobytes()).hexdigest() == labels_v3
    for split in short.splits:  # everything but the note is the same at both lengths
        pd.testing.assert_frame_equal(short.splits[split].drop(columns="note"), long.splits[split].drop(columns="note"))
    pd.testing.assert_frame_equal(short.events, long.events)
    first_tokens = notes.load_tokenizer("minilm")
    longer = 0
    for core, text in zip(cores, texts):
        assert bool(core) == bool(text)
        if not core:
            continue
        assert _mentions(text) == _mentions(core)  # the same mentions of the same labels, nothing more
        if spec.layout == "mimic4":  # the section's history, then more history, then its social history end
            head, tail = core.split(" social history ")
            assert text.startswith(head) and text.endswith(" social history " + tail)
        else:  # the history lies whole within the first 512 tokens of the concatenated notes
            end = text.index(core) + len(core)
            assert len(first_tokens(text[:end], add_special_tokens=False)["input_ids"]) <= 512
        longer += len(text) > len(core)
    assert longer > 0.5 * sum(map(bool, cores))


@pytest.mark.parametrize("track, task", sorted(VERSION_3_FILES))
def test_quick_and_smoke_task_files_are_generator_3s_byte_for_byte(track, task):
    spec = {"quick": QUICK, "smoke": SMOKE}[track].task(task)
    assert spec.note_scale == 0 and generator.version(spec) == "3"
    with tempfile.TemporaryDirectory() as tmp:
        generator.write(generator.generate(spec), spec, Path(tmp))
        h = hashlib.sha256()
        for f in sorted(Path(tmp).rglob("*.csv")):
            h.update(str(f.relative_to(tmp)).encode() + f.read_bytes())
    assert h.hexdigest() == VERSION_3_FILES[(track, task)]


def test_note_scale_zero_draws_nothing_and_a_layout_without_notes_keeps_its_history():
    parts = [("htn copd", "lives alone retired"), None]
    short = ["past medical history htn copd social history lives alone retired", ""]
    rng = np.random.default_rng(0)
    assert note_lengths.write_notes(parts, "mimic3-miracl", 0.0, rng) == short
    assert note_lengths.write_notes(parts, "mimic3-benchmark", 1.0, rng) == short
    assert rng.random() == np.random.default_rng(0).random()  # the stream was not touched
    long = note_lengths.write_notes(parts, "mimic3-miracl", 1.0, rng)
    assert short[0] in long[0] and long[1] == ""


def test_data_describe_shows_the_note_tokens_the_share_at_the_cap_and_the_law(tmp_path):
    from benchmark.data.describe import describe, render

    long = dataclasses.replace(FULL.task("mimic3-phe"), n_total=300)
    short = SMOKE.task("syn-phe")
    for spec in (long, short):
        generator.write(generator.generate(spec), spec, tmp_path / spec.name)
    stats = describe(long, tmp_path / long.name)
    assert stats["notes_at_512"] >= 0.8 and stats["note_tokens_written"]["p50"] == 512
    assert stats["note_tokens"] == stats["note_tokens_written"]  # the full track keeps all 512
    text = render(stats)
    assert "notes at the 512-token cap" in text and "the first 5 notes of the first 48 h" in text
    stats = describe(short, tmp_path / short.name)
    assert stats["notes_at_512"] == 0 and 20 <= stats["note_tokens_written"]["p50"] <= 40  # generator 3's notes
    assert stats["note_tokens"]["max"] == short.note_tokens == 8  # cut to what the track keeps
    assert "the history section alone" in render(stats)
