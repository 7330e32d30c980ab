"""Versioned releases (leaderboard/release.py): frozen under releases/<version>/ with checksums that
verify, listed by the index with the latest marked, and never rewritten."""
import csv
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmark.errors import UsageError
from leaderboard import Options, build
from leaderboard.release import archive
from record_factory import board_records, write_records

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def results(tmp_path):
    write_records(tmp_path / "results", board_records())
    return tmp_path / "results"


def ehrbench(*args):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_release_holds_the_site_the_records_and_checksums_that_verify(results, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    site = tmp_path / "public"
    proc = ehrbench("leaderboard", "--results", str(results), "--out", str(site), "--publish", "--format", "none",
                    "--release", "v1.0")
    assert proc.returncode == 0, proc.stderr
    assert f"release v1.0 frozen at {site / 'releases' / 'v1.0'}" in proc.stdout
    release = site / "releases" / "v1.0"
    assert sorted(p.name for p in release.iterdir()) == sorted(
        ["index.html", "runs.csv", "board.json", "board.tex", "board.md", "records.tar.gz", "manifest.json",
         "SHA256SUMS"])
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["release"] == "v1.0" and manifest["date"] == "2026-01-01 00:00 UTC"
    assert set(manifest["files"]) == {p.name for p in release.iterdir()} - {"manifest.json", "SHA256SUMS"}
    for name, entry in manifest["files"].items():
        data = (release / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, name
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=release, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(manifest["files"])
    assert all(not p.stat().st_mode & 0o222 for p in release.iterdir())  # read-only

    # The archive holds exactly the records the board read, byte for byte, under their results paths.
    runs = list(csv.DictReader((release / "runs.csv").open()))
    with tarfile.open(release / "records.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert sorted(members) == sorted(r["record_file"] for r in runs) and manifest["records"] == len(runs)
    assert all(members[name] == (results / name).read_bytes() for name in members)

    page = (release / "index.html").read_text()
    assert "Release <strong>v1.0</strong>, frozen 2026-01-01 00:00 UTC" in page and 'href="../index.html"' in page
    assert "Release <strong>" not in (site / "index.html").read_text()  # the site's own page is no release
    index = (site / "releases" / "index.html").read_text()
    assert 'href="v1.0/index.html">v1.0</a> (latest)' in index


def test_publishing_a_version_again_is_refused_in_one_line_and_changes_nothing(results, tmp_path):
    site = tmp_path / "public"
    assert ehrbench("leaderboard", "--results", str(results), "--out", str(site), "--release", "v1.0",
                    "--format", "none").returncode == 0
    before = snapshot(site / "releases" / "v1.0")
    again = ehrbench("leaderboard", "--results", str(results), "--out", str(site), "--release", "v1.0",
                     "--format", "none")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == (f"ehrbench: error: --release v1.0: already published at {site / 'releases' / 'v1.0'}; "
                            f"a release is never rewritten, publish a new version\n")
    assert snapshot(site / "releases" / "v1.0") == before
    with pytest.raises(UsageError, match="already published"):
        build(results, site, Options(), release="v1.0")
    bad = ehrbench("leaderboard", "--results", str(results), "--out", str(site), "--release", "1.0")
    assert bad.returncode == 2 and "expected a version vX.Y or vX.Y.Z" in bad.stderr


def test_the_index_lists_every_release_and_marks_the_highest_version_latest(results, tmp_path):
    site = tmp_path / "public"
    for version in ("v1.2", "v1.10", "v1.9"):
        build(results, site, Options(), release=version)
    first = snapshot(site / "releases" / "v1.2")
    build(results, site, Options())  # a plain build later keeps listing them, and touches none
    assert snapshot(site / "releases" / "v1.2") == first
    page = (site / "index.html").read_text()
    assert page.index("v1.10/index.html") < page.index("v1.9/index.html") < page.index("v1.2/index.html")
    assert 'href="releases/v1.10/index.html">v1.10</a> <strong class="latest">(latest)</strong>' in page
    assert page.count("(latest)") == 1


def test_the_archive_is_byte_stable(results):
    names = [str(p.relative_to(results)) for p in results.rglob("*.json")]
    assert archive(results, names) == archive(results, list(reversed(names)))
    with tarfile.open(fileobj=io.BytesIO(archive(results, names))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {0} and {m.uname for m in tar.getmembers()} == {""}


def test_make_publish_passes_the_release():
    dry = subprocess.run(["make", "-n", "publish", "RELEASE=v2.0", "PUBLISH_DIR=pub"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert '--out "pub" --publish --format none' in dry and '--release "v2.0"' in dry
    plain = subprocess.run(["make", "-n", "publish"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--release" not in plain
