"""The leaderboard: every run record under ``results/`` -> a static site, and the same tables as text.

``load`` reads and validates the records (a bad file is reported by name and skipped), ``read_published``
the published set of the tracks shown (``sources``: ``leaderboard/published/``, rows marked as such),
``aggregate`` computes the board, ``site`` writes it. ``build`` does all three, and ``release``
freezes a version of what it wrote. The board's parts beside the result tables have a module each:
``reproduce`` (the command behind a cell), ``stats`` (tests, MDE), ``secondary`` (the second tab),
``robustness`` (areas and ratios to the baseline), ``defaults`` (what this checkout plans), ``sources``
(the user's records and the published set, and a run id both hold).
It reads run records and method manifests only: importing it or building a board never loads torch.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .aggregate import Options, build_board
from .release import check_new
from .sources import ARCHIVE_PREFIX, PUBLISHED, RECORD_SET, YOURS, catalogue, shown

# The smoke track exists for tests only; it never reaches a leaderboard.
EXCLUDED_TRACKS = ("smoke",)


@dataclass
class Build:
    board: dict
    rows: list
    skipped: list  # (file, error)
    page: Path | None = None
    left_out: dict = field(default_factory=dict)  # track -> valid records of it not on the board (not asked for)
    results: Path | None = None  # the folder the records were read from
    release: Path | None = None  # the release frozen by ``publish``, if one was asked for
    # Per track shown, the published set looked for (folder, present, records); empty when none was read.
    published: dict = field(default_factory=dict)
    published_root: Path | None = None  # the folder of published sets read from, if any


def load(results: str | Path, tracks: list[str] | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """(run rows, skipped files with the reason) of every record under ``results``."""
    rows, skipped, _ = read(results, tracks)
    return rows, skipped


def read(results: str | Path, tracks: list[str] | None = None) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """As ``load``, and the count of valid records per track left out: not in ``tracks``, or (by
    default) of the smoke track."""
    from benchmark.records import RecordStore

    from .report import run_row

    rows, skipped, left_out = [], [], {}
    for path, record, error in RecordStore(results).scan():
        if error:
            # The reason already starts with the path; keep the name short on the page.
            skipped.append((str(Path(path).relative_to(results)), error.removeprefix(f"{path}: ")))
        elif (record["spec"]["track"] in tracks) if tracks else record["spec"]["track"] not in EXCLUDED_TRACKS:
            # The folder above <track>/<task>/<method>/: which record set of the results folder it came from.
            where = Path(path).relative_to(results)
            rows.append({**run_row(record), "source": YOURS, "record_set": "/".join(where.parts[:-4]) or ".",
                         "record_file": str(where)})  # the record in the results folder and a release's archive
        else:
            left_out[record["spec"]["track"]] = left_out.get(record["spec"]["track"], 0) + 1
    return rows, skipped, left_out


def read_published(root: str | Path, tracks: list[str]) -> tuple[list[dict], list[tuple[str, str]], dict]:
    """(run rows, skipped files with the reason, {track: {"folder", "present", "records"}}) of the
    published sets of ``tracks`` under ``root`` (``<root>/<track>/<task>/<method>/<run id>.json``, as a
    results folder). Rows are marked ``source: published``; a file is named ``published/<track>/...``
    on the page and in a release's archive."""
    from benchmark.records import RecordStore

    from .report import run_row

    root = Path(root)
    rows, skipped, found = [], [], {}
    for track in tracks:
        folder = root / track
        found[track] = {"folder": shown(folder), "present": folder.is_dir(), "records": 0}
        for path, record, error in RecordStore(root).scan(track):
            name = f"{ARCHIVE_PREFIX}/{Path(path).relative_to(root)}"
            if error:
                skipped.append((name, error.removeprefix(f"{path}: ")))
                continue
            rows.append({**run_row(record), "source": PUBLISHED, "record_set": RECORD_SET, "record_file": name})
            found[track]["records"] += 1
    return rows, skipped, found


def manifests() -> dict:
    """{method name: manifest} of the submissions in this checkout (the page's paper and licence)."""
    from benchmark.errors import BenchError
    from benchmark.registry import available_methods, methods_dir, read_manifest

    out = {}
    for name in available_methods():
        try:
            out[name] = read_manifest(methods_dir() / name)
        except BenchError:
            pass  # a broken manifest costs the page its paper link, nothing else
    return out


def build_info(published: bool) -> dict:
    """Harness version and commit on every page; the date only on a published one (builds stay byte-stable)."""
    from benchmark import __version__
    from benchmark.environment import git_state

    info = {"harness_version": __version__, "commit": git_state()["sha"], "date": None, "release": None}
    if published:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
        info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))
    return info


def build(results: str | Path, out: str | Path | None, options: Options = Options(),
          tracks: list[str] | None = None, published: bool = False, release: str | None = None,
          published_root: str | Path | None = None) -> Build:
    """Read, aggregate and (when ``out`` is given) write the site, and freeze it as ``release`` if
    given; returns what was built. ``published_root``: a folder of published sets (the CLI's default
    ``sources.default_root()``), whose sets of the tracks shown (``tracks``, else those of the records
    under ``results``) are read beside the user's records; None reads none."""
    if release and out is not None:
        check_new(out, release)  # refused before anything is read
    rows, skipped, left_out = read(results, tracks)
    found = {}
    if published_root is not None:
        shown_tracks = tracks or sorted({r["track"] for r in rows})
        more, bad, found = read_published(published_root, shown_tracks)
        rows, skipped = rows + more, skipped + bad
    board = build_board(rows, options, manifests(), results=str(results), published=found)
    # Every set that could ship, the tracks not shown included: a board says what is published and what is not.
    board["published_sets"] = catalogue(Path(published_root)) if published_root is not None else []
    result = Build(board, rows, skipped, left_out=left_out, results=Path(results), published=found,
                   published_root=Path(published_root) if published_root is not None else None)
    if out is not None:
        publish(result, out, published, release)
    return result


def publish(result: Build, out: str | Path, published: bool = False, release: str | None = None) -> Path:
    """Write the site of ``result`` into ``out`` (with the releases found there), first freezing it as
    ``release`` under ``out/releases/`` if given (a release is dated); returns the page's path."""
    import tempfile

    from .release import freeze, listed
    from .site import write, write_releases

    out = Path(out)
    info = build_info(published or bool(release))
    if release:
        target = check_new(out, release)
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp), result.board, result.rows, result.skipped, {**info, "release": release})
            about = {"release": release, "date": info["date"], "harness_version": info["harness_version"],
                     "commit": info["commit"], "record_harness_versions": result.board["harness_versions"],
                     "skipped_files": len(result.skipped)}
            # A published record is read from the published sets' folder, under its name in the archive.
            elsewhere = {r["record_file"]: result.published_root / Path(r["record_file"]).relative_to(ARCHIVE_PREFIX)
                         for r in result.rows if r.get("source") == PUBLISHED}
            result.release = freeze(Path(tmp), target, result.results, [r["record_file"] for r in result.rows], about,
                                    elsewhere)
    releases = listed(out)
    result.page = write(out, result.board, result.rows, result.skipped, info, releases)
    if releases:
        write_releases(out, releases)
    if published or release:
        (out / ".nojekyll").write_text("")  # GitHub Pages: serve the files as they are
    return result.page
