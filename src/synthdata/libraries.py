"""The synthdata version and the installed versions of the libraries that shape the output,
for run.json and train.json (bottom layer: imports nothing of synthdata)."""

from __future__ import annotations

import importlib.metadata


LIBRARIES = ("synthdata", "torch", "diffusers", "transformers", "accelerate", "safetensors", "peft",
             "prefect", "webdataset", "faiss-cpu", "faiss-gpu", "numpy", "pyarrow", "pandas",
             "Pillow", "dvc", "pydantic")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the output (absent ones left out)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
