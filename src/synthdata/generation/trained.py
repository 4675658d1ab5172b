"""What a model was trained from, read from the `train.json` that `synthdata train` writes
beside its outputs: the training chain for run records and lineage (`training_chain`,
`generator_training`), and the training images for screening against them
(`training_reference`, `resolve_from_training` for `memorization.reference: from-training`;
phantom sources are re-made in the cache, byte-identical). `training_chain(path)` finds the
record from any output path (or DIR) and checks that it names that output.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthdata.errors import ModelError
from synthdata.fsutil import sha256_file
from synthdata.generation.fingerprint import model_folder
from synthdata.phantoms.cache import cached_set

TRAIN_JSON = "train.json"
FORMAT = "synthdata-train/v1"


def _record_dir(path: str | Path) -> Path | None:
    p = Path(path).expanduser()
    for candidate in (p, p.parent) if p.is_dir() else (p.parent,):
        if (candidate / TRAIN_JSON).is_file():
            return candidate
    return None


def read_train_record(path: str | Path) -> dict | None:
    """The train.json of a training output (DIR, DIR/model, DIR/lora.safetensors, DIR/embedding.pt), or None."""
    root = _record_dir(path)
    if root is None:
        return None
    try:
        record = json.loads((root / TRAIN_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    p = Path(path).expanduser().resolve()
    if p != root.resolve() and not _names_output(record, root, p):
        return None
    return record


def _names_output(record: dict, root: Path, p: Path) -> bool:
    """True when the path is an output the record lists (and a file's content still matches)."""
    for info in record.get("outputs", {}).values():
        target = (root / info["path"]).resolve()
        if target != p:
            continue
        if "sha256" in info:
            return p.is_file() and sha256_file(p) == info["sha256"]
        return True
    return False


def training_chain(path: str | Path) -> dict | None:
    """What a trained model was made from, for lineage: method, base and data fingerprints,
    image count, hyperparameters, final loss (no per-image paths). None if not trained here."""
    record = read_train_record(path)
    if record is None:
        return None
    keys = ("name", "method", "spec_hash", "seed", "base", "base_fingerprint", "data_fingerprint",
            "captions_fingerprint", "images", "hyperparameters", "final_loss", "outputs", "output_fingerprint")
    chain = {k: record.get(k) for k in keys}
    chain["data_source"] = record.get("data", {}).get("source")
    chain["train_json"] = str(_record_dir(path) / TRAIN_JSON)
    return chain


def training_reference(path: str | Path) -> list[str] | None:
    """The images a model was trained on (absolute paths; phantom sets re-made in the cache when
    missing), for screening against them. None when the path has no train.json."""
    record = read_train_record(path)
    if record is None:
        return None
    source = record.get("data", {}).get("source", {})
    if source.get("kind") == "phantoms":
        folder = cached_set(source["count"], source["seed"], source["size"], source.get("labels"))
        return [str(folder / rel) for rel in record["training_images"]]
    if source.get("kind") == "webdataset":
        return sorted({i.split("#", 1)[0] for i in record["training_images"]})
    return list(record["training_images"])


def _trained_parts(generator) -> list[tuple[str, Path]]:
    """(role, path) of the generator's model folder and adapter files."""
    parts = [("model", model_folder(generator))]
    parts += [(f"textual_inversion[{i}]", Path(t.path)) for i, t in enumerate(generator.textual_inversion)]
    parts += [(f"lora[{i}]", Path(lo.path)) for i, lo in enumerate(generator.lora)]
    return parts


def generator_training(generator) -> dict:
    """{role: training_chain} for the parts of a generator that `synthdata train` made (run.json)."""
    chains = {role: training_chain(path) for role, path in _trained_parts(generator)}
    return {role: chain for role, chain in chains.items() if chain is not None}


def resolve_from_training(memorization, generator):
    """`memorization` with `from-training` replaced by the images the generator's model and
    adapters were trained on; unchanged when the reference does not ask for it."""
    if "from-training" not in memorization.reference:
        return memorization
    images: list[str] = []
    for _, path in _trained_parts(generator):
        images += training_reference(path) or []
    if not images:
        raise ModelError(f"memorization.reference: 'from-training' needs a model or adapter made by "
                        f"`synthdata train` (a train.json beside it); {generator.model!r} and its "
                        f"adapters have none: list the training images instead")
    reference = [r for r in memorization.reference if r != "from-training"] + sorted(set(images))
    return memorization.model_copy(update={"reference": reference})
