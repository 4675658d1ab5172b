"""Which feature extractor an evaluation uses: built-in names, shipped domain encoders, defaults.

- `builtin:phantom-encoder`: a small ResNet trained by `synthdata train-extractor
  specs/train-phantom-encoder.yaml` on procedural phantoms (not clinical data); its weights
  ship in the package (`phantom_encoder/extractor/`, safetensors, with the run's train.json).
  It is the **default headline extractor whenever the real set is a `synthdata phantoms` set**,
  with ImageNet `efficientnet-lite0` as the second opinion (`per_extractor`); any other real
  set defaults to `efficientnet-lite0` alone.
- `efficientnet-lite0`, `pixel`, and local model folders as `screening.embedders` reads them.

Screening takes the same encoder as a folder path (`memorization.retrievers: [FOLDER]`);
`builtin_path("phantom-encoder")` gives the shipped one's.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthdata.errors import ModelError

PHANTOM_ENCODER_DIR = Path(__file__).resolve().parent / "phantom_encoder"
BUILTIN_EXTRACTORS = {"phantom-encoder": PHANTOM_ENCODER_DIR / "extractor"}
IMAGENET = "efficientnet-lite0"
PHANTOM_DEFAULT = ["builtin:phantom-encoder", IMAGENET]


def builtin_path(name: str) -> Path:
    """The folder of a shipped extractor (`phantom-encoder` or `builtin:phantom-encoder`)."""
    key = name.removeprefix("builtin:")
    if key not in BUILTIN_EXTRACTORS:
        raise ModelError(f"unknown built-in extractor {name!r}; known: "
                         f"{', '.join('builtin:' + k for k in BUILTIN_EXTRACTORS)}")
    folder = BUILTIN_EXTRACTORS[key]
    if not (folder / "config.json").is_file():
        raise ModelError(f"builtin:{key}: its weights are missing from the installed package "
                         f"({folder}); reinstall synthdata")
    return folder


def resolve(name: str) -> str:
    """What `screening.embedder_factory.get_embedder` loads for an extractor name."""
    return str(builtin_path(name)) if name.startswith("builtin:") else name


def is_phantom_set(root: str | Path) -> bool:
    """True when the real set's folder was written by `synthdata phantoms` (its phantoms.json)."""
    path = Path(root)
    folder = path if path.is_dir() else path.parent
    try:
        info = json.loads((folder / "phantoms.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("generator") == "synthdata phantoms"


def default_extractors(real_root: str | Path) -> list[str]:
    """The extractors used when `--features` is not given (see the module docstring)."""
    return list(PHANTOM_DEFAULT) if is_phantom_set(real_root) else [IMAGENET]
