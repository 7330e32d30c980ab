"""Tasks whose raw database tables ship with the project (the MIMIC-III demo): built once into the cache.

A vendored task's card names its tables (``raw_tables``, with a ``SHA256SUMS``) and their pipeline
(``build``). On first use the checksums are verified and the tables built by that pipeline, the same
steps as ``ehrbench data build``, into ``<cache>/files/<task>-<key>/`` (a temporary folder, renamed when
complete), where ``key`` is the checksums' digest and the pipeline's version: changed tables or a
changed pipeline give a new build, never a stale one.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..cards import Card, datasets_dir, read_card
from ..errors import UsageError
from .cache import TensorCache, built_folder
from .extract import demo, mimic3

PIPELINES = {"mimic3": mimic3}


def card_of(spec) -> Card:
    path = datasets_dir() / spec.data_dir / "card.yaml"
    if not path.is_file():
        raise UsageError(f"{path}: card of the vendored task '{spec.name}' not found")
    return read_card(path)


def raw_folder(spec) -> Path:
    card = card_of(spec)
    folder = card.path.parent / card.raw_tables
    if not folder.is_dir():
        raise UsageError(f"{folder}: vendored tables of task '{spec.name}' not found (card {card.path})")
    return folder


def identity(spec) -> str:
    """The vendored tables (their checksums, verified) and the pipeline version that builds them."""
    card = card_of(spec)
    sums = demo.verify(raw_folder(spec))
    return hashlib.sha256(f"{sums} {card.build} {PIPELINES[card.build].VERSION}".encode()).hexdigest()


def built_files(spec, cache: TensorCache) -> Path:
    """The task files built from the vendored tables, built now if not yet in the cache."""
    folder = cache.root / "files" / f"{spec.name}-{identity(spec)[:16]}"
    return built_folder(cache.root, folder, lambda tmp: PIPELINES[card_of(spec).build].build(raw_folder(spec), tmp))
