"""The image built for real: the Dockerfile's own steps, unchanged after FROM, built by podman on a Debian
base bootstrapped here (no registry of base images is reachable from CI), then the CLI run inside it as a
non-root user with a results folder mounted, as ``make docker-bench`` runs it.

What the CUDA base adds (its runtime libraries, GPU access through the NVIDIA toolkit) is not tested here:
that needs a GPU host. Bookworm is the base because it ships the Python the image installs (python3.11).

Cached between runs on one machine, so that a warm ``make test`` only runs the checks: the base image
(tagged with a hash of what debootstrap is asked for) in podman's storage, the folder of wheels (keyed by
the pins and the venv's torch) under ~/.cache/ehrbench-image, and the build's layers in podman's layer
cache. Needs root, podman, buildah and debootstrap (``.ci/run`` installs them); skipped with the reason
otherwise. ``podman run`` is not used: on hosts where crun cannot set rlimits (hybrid cgroups) it is
refused, so the checks run through ``buildah run --isolation=chroot``, as the build steps do.
"""
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest

from benchmark.records import RecordStore

pytestmark = [pytest.mark.slow, pytest.mark.image]

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ehrbench-image"
BINARIES = ("podman", "buildah", "debootstrap")
# What debootstrap is asked for; its hash names the cached base, so a change here bootstraps a new one.
# No extra packages: the Dockerfile must install everything it needs itself, as it must on the CUDA base.
DEBIAN = {"suite": "bookworm", "variant": "minbase", "mirror": "http://deb.debian.org/debian", "include": []}
IMAGE = "localhost/noisy-ehr-bench:test"
# A uid with no account in the image and other than its own user's (1000): `make docker-bench` passes the
# caller's uid, whatever it is, so the image must work for any uid (caches under /tmp, results mounted).
CALLER = (4242, 4242)
WHEELS_IN_BUILD = "/wheels"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """stdout and stderr as one text, in order: a builder's error is read next to the step that printed it."""
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _cannot_build() -> str | None:
    """Why the image cannot be built on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "podman and debootstrap need Linux"
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        return f"{', '.join(missing)} absent: apt-get install podman buildah debootstrap"
    if os.geteuid() != 0:
        return "debootstrap and podman's root storage need root"
    info = _run([_which("podman"), "info", "--format", "{{.Store.GraphDriverName}}"], timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stdout.strip().splitlines()[-1:]}"
    if "+cpu" not in version("torch"):
        # The image gets the venv's own torch wheel; anything else would be the multi-GB CUDA build.
        return f"the venv's torch {version('torch')} is not a CPU build"
    return None


@contextmanager
def _locked(name: str):
    """One bootstrap or download at a time per machine: two test runs at once share the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _image_exists(tag: str) -> bool:
    return _run([_which("podman"), "image", "exists", tag], timeout=60).returncode == 0


def _bootstrap(tag: str) -> None:
    """debootstrap into a scratch folder, emptied of apt's downloads and lists (the Dockerfile runs
    apt-get update itself, as on the CUDA base), imported as a one-layer local image."""
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        boot = _run([_which("debootstrap"), f"--variant={DEBIAN['variant']}",
                     *([f"--include={','.join(DEBIAN['include'])}"] if DEBIAN["include"] else []),
                     DEBIAN["suite"], str(rootfs), DEBIAN["mirror"]], timeout=900)
        assert boot.returncode == 0, f"debootstrap failed (exit {boot.returncode}):\n{boot.stdout[-3000:]}"
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / leftovers).glob("*"):
                if f.is_file():
                    f.unlink()
        tarball = Path(scratch) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], check=True)
        imported = _run([_which("podman"), "import", str(tarball), tag], timeout=600)
        assert imported.returncode == 0, f"podman import failed:\n{imported.stdout[-3000:]}"


def _wheel_folder(folder: Path) -> None:
    """Every wheel the build installs, by the venv's pip and its configuration: the venv's own CPU torch,
    pinned to its exact version, the pins and their dependencies, and the build backend of `pip install -e .`."""
    build_requires = re.search(r'requires = \[(.*?)\]', (ROOT / "pyproject.toml").read_text()).group(1)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="wheels-") as scratch:
        pin = Path(scratch) / "torch.txt"
        pin.write_text(f"torch=={version('torch')}\n")
        got = _run([sys.executable, "-m", "pip", "download", "-q", "-d", scratch + "/w", "-c", str(pin),
                    "-r", str(ROOT / "requirements.txt"), *json.loads(f"[{build_requires}]")], timeout=1200)
        assert got.returncode == 0, f"pip download failed:\n{got.stdout[-3000:]}"
        os.replace(Path(scratch) / "w", folder)  # whole or not at all: a cut download is never a cache hit


@pytest.fixture(scope="module")
def engine():
    reason = _cannot_build()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def base(engine) -> str:
    tag = f"localhost/ehrbench-base:{DEBIAN['suite']}-{_digest(DEBIAN)}"
    with _locked("base"):
        if not _image_exists(tag):
            _bootstrap(tag)
    return tag


@pytest.fixture(scope="module")
def wheels(engine) -> Path:
    key = _digest((ROOT / "requirements.txt").read_text(), (ROOT / "pyproject.toml").read_text(), version("torch"))
    folder = CACHE / f"wheels-{key}"
    with _locked("wheels"):
        if not folder.is_dir():
            _wheel_folder(folder)
    return folder


def build(dockerfile: Path, base: str, wheels: Path, tag: str) -> None:
    """podman build of ROOT with ``dockerfile``; a failure is an AssertionError carrying the builder's own
    message (its ``Error:`` line and the last lines it printed), so that CI shows which step broke and why."""
    proc = _run([_which("podman"), "build", "--isolation=chroot", "--pull=never", "--force-rm",
                 "--build-arg", f"BASE={base}",
                 # pip off the index, on the folder of wheels: the venv's CPU torch, never the CUDA one.
                 "--build-arg", "PIP_NO_INDEX=1", "--build-arg", f"PIP_FIND_LINKS={WHEELS_IN_BUILD}",
                 "--volume", f"{wheels}:{WHEELS_IN_BUILD}:ro",
                 "-f", str(dockerfile), "-t", tag, str(ROOT)], timeout=1800)
    if proc.returncode != 0:
        lines = proc.stdout.splitlines()
        error = next((ln for ln in reversed(lines) if ln.startswith("Error")), "(no Error line)")
        raise AssertionError(f"podman build failed (exit {proc.returncode}): {error}\n--- last lines of the build ---\n"
                             + "\n".join(lines[-40:]))


def _image_id(tag: str) -> str | None:
    got = _run([_which("podman"), "image", "inspect", "--format", "{{.Id}}", tag], timeout=60)
    return got.stdout.strip() if got.returncode == 0 else None


@pytest.fixture(scope="module")
def image(base, wheels) -> str:
    before = _image_id(IMAGE)
    build(ROOT / "Dockerfile", base, wheels, IMAGE)
    if before and before != _image_id(IMAGE):
        # The build of an earlier checkout, untagged now: without this each edit of the source would leave
        # its copy-of-the-tree layers behind. Its dependency layers are shared with the new one and stay.
        _run([_which("podman"), "rmi", before], timeout=120)
    return IMAGE


@pytest.fixture
def container(image):
    """A working container of the image (buildah from), removed afterwards, pass or fail."""
    name = f"ehrbench-test-{os.getpid()}"
    made = _run([_which("buildah"), "from", "--pull=never", "--name", name, image], timeout=120)
    assert made.returncode == 0, made.stdout
    try:
        yield name
    finally:
        _run([_which("buildah"), "rm", name], timeout=120)


def inside(container: str, *cmd: str, user: tuple[int, int] | None = None, volume: str | None = None,
           timeout: float = 300) -> str:
    """Runs ``cmd`` in the container, as the image's own USER unless ``user`` is given; its output."""
    proc = _run([_which("buildah"), "run", "--isolation=chroot",
                 *(["--user", f"{user[0]}:{user[1]}"] if user else []), *(["--volume", volume] if volume else []),
                 container, "--", *cmd], timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode} in the image:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _config(image: str) -> dict:
    got = _run([_which("podman"), "image", "inspect", "--format", "{{json .Config}}", image], timeout=60)
    assert got.returncode == 0, got.stdout
    return json.loads(got.stdout)


def test_the_cli_starts_as_the_images_non_root_user_with_the_venvs_cpu_torch(image, container):
    config = _config(image)
    assert config["User"] == "1000:1000" and inside(container, "id", "-u").strip() == "1000"
    # What `docker run IMAGE` starts, its ENTRYPOINT and CMD read from the built image (buildah run takes
    # a command of its own, and podman run is refused on some hosts).
    assert config["Entrypoint"] == ["ehrbench"] and config["Cmd"] == ["--help"]
    assert "usage: ehrbench" in inside(container, *config["Entrypoint"], *config["Cmd"])
    assert re.search(r"^smoke\s+tasks: syn-phe, syn-dia", inside(container, "ehrbench", "tracks"), re.M)
    torch = inside(container, "python", "-c", "import torch; print(torch.__version__, torch.cuda.is_available())")
    assert torch.split() == [version("torch"), "False"]


def test_a_smoke_bench_inside_writes_valid_records_owned_by_the_caller(container, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, *CALLER)  # as `mkdir -p results` by the caller of `make docker-bench`
    out = inside(container, "ehrbench", "bench", "--method", "bce", "--track", "smoke", "--seeds", "30",
                 "--noise", "sym-20", "--results", "/results", user=CALLER, volume=f"{results}:/results")
    assert "[2/2]" in out, out
    store = RecordStore(results)
    records = sorted(results.glob("smoke/*/bce/*.json"))
    assert [p.parts[-3] for p in records] == ["syn-dia", "syn-phe"]
    for path in records:
        record = store.read(path)  # validates: fields, types, the run id is the hash of its spec
        assert record["status"] == "done" and record["spec"]["track"] == "smoke", record.get("failure")
    assert [err for _, _, err in store.scan() if err] == []
    for path in [results, *results.rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == CALLER, path


def test_a_broken_step_fails_the_build_with_the_builders_message(base, wheels, tmp_path):
    broken = tmp_path / "Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    assert "python3.11-venv git" in text
    broken.write_text(text.replace("python3.11-venv git", "python3.11-venv no-such-package-ehrbench"))
    with pytest.raises(AssertionError) as failed:
        build(broken, base, wheels, "localhost/noisy-ehr-bench:broken")
    message = str(failed.value)
    assert "Unable to locate package no-such-package-ehrbench" in message  # apt's own words
    assert "Error: building at STEP" in message and "apt-get install" in message  # podman's: which step
    assert not _image_exists("localhost/noisy-ehr-bench:broken")
