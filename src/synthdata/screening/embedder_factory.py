"""`get_embedder(name)`: a built-in embedder (`embedders`) or a local model folder
(`local_model`), loaded once per process. Apart from both, so neither imports the other."""

from __future__ import annotations

import threading
from pathlib import Path

from synthdata.errors import ModelError
from synthdata.screening.embedders import BUILTIN, EfficientNetLite0Embedder, Embedder, PixelEmbedder
from synthdata.screening.local_model import LocalModelEmbedder

_CACHE: dict[tuple, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name: str, *, device: str = "auto", batch_size: int | None = None,
                 base_dir: str | Path | None = None) -> Embedder:
    """The embedder called `name` (built-in or a local model folder), loaded once per process.

    Relative folder paths are taken from `base_dir` (default: the current folder).
    """
    path = Path(name) if Path(name).is_absolute() else Path(base_dir or Path.cwd()) / name
    if name not in BUILTIN and not path.is_dir():
        raise ModelError(f"memorization: matcher or retriever {name!r} is neither a built-in embedder "
                         f"({', '.join(BUILTIN)}) nor a local model folder")
    key = (name if name in BUILTIN else str(path.resolve()), device, batch_size)
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            if name == "pixel":
                emb = PixelEmbedder(batch_size=batch_size or 256)
            elif name == "efficientnet-lite0":
                emb = EfficientNetLite0Embedder(device, batch_size)
            else:
                emb = LocalModelEmbedder(path, device, batch_size)
            _CACHE[key] = emb
    return emb
