# Noisy EHR Bench. The two commands: `make bench METHOD=miracl` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

METHOD ?=
TRACK ?= quick
TASKS ?=
NOISE ?=
SEEDS ?=
RESULTS ?= results
DEVICE ?= auto
SITE ?= site
PUBLISH_DIR ?= public
BASELINES_DIR ?=
LEADERBOARD_FLAGS ?=
RELEASE ?=
JOBS ?= 0
EXECUTOR ?= local
# pytest workers (pytest-xdist, one test file each at a time): the cores, at most 4 (each worker builds its own
# tensor cache). TEST_JOBS=0 runs the suite in one process.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PROFILE ?=
BENCH_FLAGS ?=
IMAGE ?= noisy-ehr-bench:latest
MIMIC_DIR ?= $(CURDIR)/data

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# The venv is installed without byte-compiling (--no-compile, below): each module is compiled when a run
# first imports it and its bytecode kept in __pycache__. Under PYTHONDONTWRITEBYTECODE none would be kept
# and every process (a bench's parent and each worker) would compile torch's and transformers' modules
# again: some 8 s per process on a 2-core machine. Where the files are read-only, none is written anyway.
unexport PYTHONDONTWRITEBYTECODE

NAME ?=

.PHONY: setup bench status table leaderboard publish publish-baselines test perf clean docker-build docker-bench help new-method validate

help:
	@echo "make bench METHOD=bce [TRACK=quick TASKS=.. NOISE=.. SEEDS=.. JOBS=..]   run a method's grid, print the table"
	@echo "make bench METHOD=miracl EXECUTOR=slurm PROFILE=slurm.yaml [BENCH_FLAGS=--no-wait]   the grid as a Slurm job array"
	@echo "make bench METHOD=bce BENCH_FLAGS=\"--noise-draws 3\"                        each (setting, seed) on 3 noise draws"
	@echo "make status METHOD=miracl                                               per run: done / failed / running / pending"
	@echo "make test                                                               run the test suite"
	@echo "make table [TRACK=quick]                                                print the tables from results/"
	@echo "make leaderboard [RESULTS=results SITE=site]                             render the static leaderboard site from results/ and the published set"
	@echo "make publish-baselines [TRACK=quick]                                    every shipped method's grid into leaderboard/published/TRACK (resumable)"
	@echo "make publish [PUBLISH_DIR=public RELEASE=v1.0]                          the site, dated, ready for a static host; RELEASE freezes it"
	@echo "make new-method NAME=foo                                                scaffold methods/foo/ from the template (CONTRIBUTING.md)"
	@echo "make validate METHOD=foo                                                check a submission: manifest, boundaries, a smoke run"
	@echo "make perf                                                               speed benchmarks (docs/performance.md)"
	@echo "make setup | clean | docker-build | docker-bench METHOD=..."

setup: $(STAMP)

# torch first and pinned, so that pip takes the pinned CPU build rather than a multi-GB CUDA one.
# --no-compile: pip would byte-compile every module of every package (most of torch's install time);
# Python compiles the modules a run imports, once, into the venv's __pycache__.
$(STAMP): pyproject.toml requirements.txt
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile "$$(grep -E '^torch==' requirements.txt)"
	$(BIN)/python -m pip install -q --no-compile -e .
	@touch $@

# The test and benchmark tools (pytest, Triton's interpreter, playwright, ...) only where they are used:
# `make bench` does not wait for them.
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(BIN)/python -m pip install -q --no-compile -e '.[test]'
	@touch $@

bench: setup
	$(BIN)/ehrbench bench --method "$(METHOD)" --track "$(TRACK)" --results "$(RESULTS)" --device "$(DEVICE)" --jobs "$(JOBS)" \
	  --executor "$(EXECUTOR)" $(if $(PROFILE),--profile "$(PROFILE)") $(BENCH_FLAGS) \
	  $(if $(TASKS),--tasks "$(TASKS)") $(if $(NOISE),--noise "$(NOISE)") $(if $(SEEDS),--seeds "$(SEEDS)")

# Per run of the grid: done, failed, running or pending (and its Slurm job id).
status: setup
	$(BIN)/ehrbench status --method "$(METHOD)" --track "$(TRACK)" --results "$(RESULTS)" \
	  $(if $(TASKS),--tasks "$(TASKS)") $(if $(NOISE),--noise "$(NOISE)") $(if $(SEEDS),--seeds "$(SEEDS)")

# A new submission from methods/_template/: methods/$(NAME)/ and tests/test_method_$(NAME).py.
new-method: setup
	$(BIN)/ehrbench methods new "$(NAME)"

validate: setup
	$(BIN)/ehrbench methods validate "$(METHOD)"

table: setup
	$(BIN)/ehrbench table --track "$(TRACK)" --results "$(RESULTS)"

# Your results/ beside the published set of the same tracks (leaderboard/published/). LEADERBOARD_FLAGS passes
# options through, e.g. "--correction holm --test welch", or --no-published for your records only.
leaderboard: setup
	$(BIN)/ehrbench leaderboard --results "$(RESULTS)" --out "$(SITE)" $(LEADERBOARD_FLAGS)

# The published set: every shipped method over every noise setting and seed of TRACK, by `bench`, into
# leaderboard/published/TRACK (BASELINES_DIR/TRACK); finished runs are skipped, stale records redone.
# quick on a CPU (over an hour on 2 cores); full with the same command on a GPU (DEVICE=auto finds it).
publish-baselines: setup
	$(BIN)/ehrbench publish-baselines --track "$(TRACK)" --device "$(DEVICE)" --jobs "$(JOBS)" \
	  $(if $(BASELINES_DIR),--out "$(BASELINES_DIR)")

# Writes over the files of an earlier build in PUBLISH_DIR; nothing else there is removed. RELEASE=vX.Y
# also freezes the site under PUBLISH_DIR/releases/vX.Y/ (refused if that version is there already).
publish: setup
	$(BIN)/ehrbench leaderboard --results "$(RESULTS)" --out "$(PUBLISH_DIR)" --publish --format none \
	  $(if $(RELEASE),--release "$(RELEASE)") $(LEADERBOARD_FLAGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

# CPU benchmarks (pytest-benchmark); on a CUDA machine also the naive-vs-fast training benchmark and
# (unless PERF_GRIDS=0) BCE's and MIRACL's compiled mimic4-phe grids, 30 runs each: about 25 minutes
# each on an H200; resumable, their records kept in PERF_GRIDS_DIR.
PERF_GRIDS ?= 1
PERF_GRIDS_DIR ?= results/perf-grids
perf: $(TEST_STAMP)
	$(BIN)/python -m pytest perf -q -p no:cacheprovider --benchmark-columns=min,median,max,rounds
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  PYTHONPATH=. $(BIN)/python perf/speed.py --pack 4 --padded-too --packed-too --length-chunks 1,4 --compiled-too --parity minilm --out docs/perf-latest.json; \
	  PYTHONPATH=. $(BIN)/python perf/train_step.py --batches 128,256,512 --out docs/perf-train-step.json; \
	  for t in mimic4-dia mimic3-phe; do \
	    PYTHONPATH=. $(BIN)/python perf/speed.py --task $$t --naive-steps 6 --out docs/perf-latest-$$t.json || exit 1; done; \
	  for n in mimic4 mimic3; do \
	    PYTHONPATH=. $(BIN)/python perf/train_step.py --batches 128 --notes $$n --out docs/perf-train-step-$$n.json || exit 1; done; \
	  if [ "$(PERF_GRIDS)" != 0 ]; then \
	    for m in bce miracl; do \
	      $(BIN)/ehrbench bench --method $$m --track full --tasks mimic4-phe --compile on --encoder random-bert-base --results $(PERF_GRIDS_DIR) || exit 1; done; \
	    PYTHONPATH=. $(BIN)/python perf/grid_costs.py $(PERF_GRIDS_DIR) | tee docs/perf-grids.md; fi; \
	else echo "no CUDA device: perf/speed.py (GPU training speed) skipped"; fi

# Keeps results/: run records are the expensive part.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

docker-build:
	docker build -t $(IMAGE) .

# GPUs, a shared-memory size for PyTorch, results written with the caller's uid, real data and a
# profile read-only; every variable `bench` takes, each path quoted.
docker-bench:
	mkdir -p "$(RESULTS)"
	docker run --rm --gpus all --shm-size=8g --user "$$(id -u):$$(id -g)" \
	  -v "$$(realpath -m "$(RESULTS)")":/work/results \
	  -v "$(MIMIC_DIR)":/data:ro \
	  $(if $(PROFILE),-v "$$(realpath "$(PROFILE)")":/work/profile.yaml:ro) \
	  $(IMAGE) bench --method "$(METHOD)" --track "$(TRACK)" --results /work/results --device "$(DEVICE)" --jobs "$(JOBS)" \
	  --executor "$(EXECUTOR)" $(if $(PROFILE),--profile /work/profile.yaml) $(BENCH_FLAGS) \
	  $(if $(TASKS),--tasks "$(TASKS)") $(if $(NOISE),--noise "$(NOISE)") $(if $(SEEDS),--seeds "$(SEEDS)")
