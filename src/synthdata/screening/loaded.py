"""Built references loaded once per process (memory-mapped arrays and the FAISS index), for
the search: `load_reference(handle)`."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdata.screening import index as ix
from synthdata.screening.cache import ReferenceHandle


@dataclass
class LoadedReference:
    """A reference in memory: its rows (and FAISS index for vector stores), ids, groups."""

    index: ix.NNIndex | None
    data: np.ndarray
    owners: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    meta: dict


_LOADED: dict[str, LoadedReference] = {}
_LOADED_LOCK = threading.Lock()


def load_reference(handle: ReferenceHandle) -> LoadedReference:
    """The reference of a handle, loaded once per process (thread-safe)."""
    with _LOADED_LOCK:
        ref = _LOADED.get(handle.key)
        if ref is None:
            path = Path(handle.path)
            meta = json.loads((path / "meta.json").read_text())
            data = np.load(path / "data.npy", mmap_mode="r")
            index = None
            if meta["index"]["kind"] != "thumbnails":
                p = dict(meta["index"])
                plan = ix.IndexChoice(p.pop("kind"), p.pop("dim"), p)
                index = ix.build_index(np.asarray(data), plan) if plan.kind == "flat" \
                    else ix.load_index(path / "index.faiss", plan, data)
            ref = LoadedReference(index, data, np.load(path / "owners.npy"),
                                  np.load(path / "ids.npy"), np.load(path / "groups.npy"), meta)
            _LOADED[handle.key] = ref
    return ref


def clear_loaded() -> None:
    """Forget references loaded in this process (tests; long-lived workers)."""
    with _LOADED_LOCK:
        _LOADED.clear()
