# CUDA image of the benchmark. Build: make docker-build. Run: make docker-bench METHOD=bce.
# The PyPI torch wheel brings its own CUDA libraries; the base gives the CUDA user-space layout
# that the NVIDIA container toolkit expects, on a distribution that ships Python 3.11.
# The base is an argument so that the test suite builds these same steps, unchanged, on a Debian
# bootstrapped locally (tests/test_image.py): no registry of base images is needed there.
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv git \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

# Where pip takes its wheels: the index by default (the CUDA torch for a GPU host). The test points
# pip at a folder of the venv's own wheels, mounted into the build, with the index off, so that it
# installs the same CPU torch and can never fall back to the multi-GB CUDA wheel.
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=

# Dependencies before the source: this layer is rebuilt only when the pins change.
# torch goes first, pinned, as on every other install path.
COPY requirements.txt /tmp/requirements.txt
RUN grep -E '^torch==' /tmp/requirements.txt > /tmp/torch.txt \
    && pip install -r /tmp/torch.txt \
    && pip install -r /tmp/requirements.txt

RUN useradd --create-home --uid 1000 bench
WORKDIR /opt/ehrbench
COPY --chown=1000:1000 . .
RUN pip install --no-deps -e .

# Run as a non-root user; `make docker-bench` passes the caller's uid so results stay theirs,
# hence caches under /tmp, writable by any uid.
USER 1000:1000
ENV HOME=/home/bench \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface
WORKDIR /work
ENTRYPOINT ["ehrbench"]
CMD ["--help"]
