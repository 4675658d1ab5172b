"""Feature extractors for evaluation, and features of shards and real images, cached.

An extractor is a screening embedder (`synthdata.screening.embedders`: the same shared
preprocessing, the same offline weights loading) used *without* the final L2 normalisation,
because FID and KID depend on the features' scale:
- `efficientnet-lite0` (the default): ImageNet EfficientNet-Lite0 pooled 1280-d features,
  weights from a registry package, nothing downloaded;
- `pixel`: 32 x 32 standardised thumbnails (cheap; for tests and sanity checks);
- any local folder (`screening/local_model.py`): TorchScript, torch.export or a transformers
  safetensors model (Inception, RadImageNet, RadDINO, torchxrayvision, BiomedCLIP's vision
  tower exported as one of those), loaded with `local_files_only`, never downloaded.

Caches, keyed by content and extractor (the extractor key hashes the embedder fingerprint,
which covers weights and preprocessing):
- synthetic shards: `$SYNTHDATA_CACHE/evaluation/features/<key16>/<tar sha256>.npz`;
- real images: `$SYNTHDATA_CACHE/private/evaluation/<key16>/<chunk hash>.npz`, folders 0700
  and files 0600 (`synthdata.privacy`): features of real images are as private as the images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdata.evaluation.realset import RealItem, read_images
from synthdata.fsutil import atomic_path, cache_root, sha256_file, write_private
from synthdata.screening.embedders import Embedder
from synthdata.screening.embedder_factory import get_embedder
from synthdata.screening.shardio import decode_png, read_members
from synthdata.evaluation.extractors import resolve
from synthdata.folder.shards import split_member
from synthdata.privacy import private_dir

DEFAULT_EXTRACTOR = "efficientnet-lite0"
FEATURES_VERSION = 2   # 2: shard caches also hold each sample's variables (subgroups)
REAL_CHUNK = 512


def get_extractor(name: str = DEFAULT_EXTRACTOR, *, device: str = "auto",
                  base_dir: str | Path | None = None) -> Embedder:
    """The extractor called `name` (a built-in such as `builtin:phantom-encoder`, or a local
    model folder), loaded once per process."""

    return get_embedder(resolve(name), device=device, base_dir=base_dir)


def extractor_key(extractor: Embedder) -> str:
    """Cache key of raw (unnormalised) features from this extractor."""
    blob = json.dumps({"embedder": extractor.fingerprint, "raw": True, "v": FEATURES_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()


def describe(extractor: Embedder, name: str | None = None) -> dict:
    """Name, fingerprint and dimension of an extractor, for evaluation.json (a built-in's name
    as asked for, `builtin:...`, rather than its folder's)."""
    shown = name if name and name.startswith("builtin:") else extractor.name
    return {"name": shown, "fingerprint": extractor.fingerprint, "dim": extractor.dim,
            "input_size": extractor.input_size}


@dataclass
class ShardFeatures:
    """Features of one shard's samples with what evaluation groups them by."""

    keys: list[str]
    labels: list[str]
    prompts: list[str]
    features: np.ndarray
    attrs: list[dict] | None = None   # each sample's `vars` (sex, age, view, cohort columns)

    def save(self, path: Path) -> None:
        """Write atomically as .npz (no pickles; variables as JSON text)."""
        attrs = [json.dumps(a, sort_keys=True) for a in (self.attrs or [{}] * len(self.keys))]
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(self.keys, dtype=str), labels=np.array(self.labels, dtype=str),
                     prompts=np.array(self.prompts, dtype=str), attrs=np.array(attrs, dtype=str),
                     features=np.ascontiguousarray(self.features, dtype=np.float32))

    @classmethod
    def load(cls, path: Path) -> ShardFeatures:
        """Read what `save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            return cls([str(k) for k in z["keys"]], [str(v) for v in z["labels"]],
                       [str(v) for v in z["prompts"]], z["features"].astype(np.float32),
                       [json.loads(str(a)) for a in z["attrs"]])


def read_shard(tar_path: str | Path) -> tuple[list[str], list[str], list[str], list[np.ndarray]]:
    """Keys, labels, prompts and decoded images of a synthdata shard, in key order."""
    keys, labels, prompts, images, _ = read_shard_with_vars(tar_path)
    return keys, labels, prompts, images


def read_shard_with_vars(tar_path: str | Path):
    """Keys, labels, prompts, decoded images and sample variables of a shard, in key order."""
    meta: dict[str, dict] = {}
    pngs: dict[str, bytes] = {}
    for name, data in read_members(tar_path):
        key, ext = split_member(name)
        if ext == "png":
            pngs[key] = data
        elif ext == "json":
            meta[key] = json.loads(data)
    keys = sorted(pngs)
    labels = [str(meta.get(k, {}).get("label", "")) for k in keys]
    prompts = [str(meta.get(k, {}).get("prompt", "")) for k in keys]
    attrs = [{str(a): str(v) for a, v in (meta.get(k, {}).get("vars") or {}).items()} for k in keys]
    return keys, labels, prompts, [decode_png(pngs[k]) for k in keys], attrs


def shard_cache_path(tar_sha256: str, key: str) -> Path:
    """$SYNTHDATA_CACHE/evaluation/features/<key16>/<tar sha256>.npz."""
    return cache_root() / "evaluation" / "features" / key[:16] / f"{tar_sha256}.npz"


def shard_features(tar_path: str | Path, extractor: Embedder, *, use_cache: bool = True
                   ) -> ShardFeatures:
    """Features of one shard, from the cache when this tar's bytes were seen with this extractor."""
    path = shard_cache_path(sha256_file(tar_path), extractor_key(extractor))
    if use_cache and path.is_file():
        return ShardFeatures.load(path)
    keys, labels, prompts, images, attrs = read_shard_with_vars(tar_path)
    feats = extractor.embed(images, normalise=False)
    out = ShardFeatures(keys, labels, prompts, feats, attrs)
    if use_cache:
        out.save(path)
    return out


def real_chunks(items: list[RealItem], size: int = REAL_CHUNK) -> list[list[RealItem]]:
    """The real items in fixed-size chunks (one task and one cache file each)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _chunk_hash(items: list[RealItem]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(f"{item.id}\0{item.sha256}\n".encode())
    return h.hexdigest()


def real_cache_path(items: list[RealItem], key: str) -> Path:
    """$SYNTHDATA_CACHE/private/evaluation/<key16>/<chunk hash>.npz (folder made 0700)."""

    return private_dir("evaluation", key[:16]) / f"{_chunk_hash(items)}.npz"


def real_features(items: list[RealItem], extractor: Embedder, *, use_cache: bool = True
                  ) -> np.ndarray:
    """Features of real images (one chunk), cached privately (0700 folder, 0600 file)."""
    if not items:
        return np.zeros((0, extractor.dim), np.float32)
    path = real_cache_path(items, extractor_key(extractor))
    if use_cache and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["features"].astype(np.float32)
    feats = extractor.embed(list(read_images(items)), normalise=False)
    if use_cache:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, features=np.ascontiguousarray(feats, dtype=np.float32))

        write_private(path, save)
    return feats
