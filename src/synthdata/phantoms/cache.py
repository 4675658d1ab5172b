"""Phantom sets made once into the cache, keyed by their parameters: what a `phantoms:` data
source of a training or extractor spec names, re-made byte-identical on any machine (so a
model's training images can be screened against without being shipped)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import filelock

from synthdata.fsutil import cache_root
from synthdata.phantoms.params import LABELS
from synthdata.phantoms.writer import PHANTOM_VERSION, write_phantoms


def cached_set(count: int, seed: int, size: int, labels: Sequence[str] | None = None) -> Path:
    """The folder of a phantom set, written once into the cache (keyed by its parameters)."""
    labels = tuple(labels) if labels else LABELS
    key = json.dumps([PHANTOM_VERSION, count, seed, size, labels])
    folder = cache_root() / "phantoms" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / "metadata.csv").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(folder) + ".lock"):
        if not (folder / "metadata.csv").is_file():
            write_phantoms(folder, count=count, seed=seed, size=size, labels=labels)
    return folder
