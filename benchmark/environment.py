"""Provenance of a run: harness version, git state, hardware and software versions."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

from . import __version__

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def git_state() -> dict:
    """{'sha': ..., 'dirty': bool} of the checkout the harness runs from, or nulls outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    # Imported here so that reading records (tables, leaderboard) does not load torch. scikit-learn's
    # version from its metadata: importing it costs a worker 2.5 s, and a run uses it only by option.
    from importlib.metadata import version

    import numpy as np
    import torch

    env = {
        "harness_version": __version__,
        "git": git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": version("scikit-learn"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "gpu": None,
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_bytes"] = props.total_memory
        env["cudnn"] = torch.backends.cudnn.version()
        from .backbones import fused  # its kernels draw GPU training's dropout masks

        env["triton"] = fused.triton.__version__ if fused.triton is not None else None
        # Without them the PyTorch ops run, with PyTorch's dropout draws: another run of the same spec.
        env["fused_kernels"] = fused.ENABLED and fused.triton is not None
    return env


def hardware_class(env: dict) -> str:
    """What compute times may be compared across: the GPU model, else the CPU model."""
    return env.get("gpu") or f"CPU: {env.get('cpu')}"


#: Set by a submitted job (``executors.run_specs``) for the runs it executes; worker processes inherit it.
ENV_EXECUTOR = "EHRBENCH_EXECUTOR"


def executor() -> dict:
    """Where a run executed: executor, node, scheduler job id (None when local)."""
    import os
    import socket

    job = None
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    elif os.environ.get("SLURM_JOB_ID"):
        job = os.environ["SLURM_JOB_ID"]
    elif os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        job = os.environ["SUBMITIT_LOCAL_JOB_ID"]
    return {"name": os.environ.get(ENV_EXECUTOR, "local"), "node": socket.gethostname(), "job_id": job}
