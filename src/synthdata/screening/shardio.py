"""Screening's view of the dataset folder: raw shards in, embeddings and accepted shards out.

- Raw shards (`DIR/raw/shard-NNNNNN.tar`, rows `.parquet`, marker `.done.json`) are read,
  never changed.
- Embeddings of a raw shard are kept in `DIR/embeddings/shard-NNNNNN.emb-<fp16>.npz` (`keys`,
  `emb`, `tar_sha256`), keyed by the embedder fingerprint and valid only for the tar bytes
  they were computed from; re-screening with another threshold reuses them (a search, no
  decoding). The generation worker may write them too, with `save_shard_embeddings`.
- Accepted shards are written by copying the raw tar's member bytes for the accepted keys,
  in the same order, with the same deterministic writer: never decoded or re-encoded. A
  shard whose samples are all accepted is its raw tar: a hard link to it (`link_accepted_tar`;
  a copy only where the file system cannot link), so a fully accepted dataset costs no second
  copy on disk. Nothing ever writes into a tar in place (every tar is written under a
  temporary name and renamed), so sharing the file is safe.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path, replace_with_link
from synthdata.folder.shards import DeterministicTarWriter, split_member

def complete_shards(out_dir: str | Path) -> list[int]:
    """Numbers of the raw shards that are complete (`DatasetFolder.shard_state`), sorted."""
    return DatasetFolder(out_dir).complete_shards()


def sample_count(out_dir: str | Path, shards: list[int] | tuple[int, ...]) -> int:
    """Samples in these raw shards, as their completion markers count them (progress totals)."""
    folder = DatasetFolder(out_dir)
    return sum(int((folder.marker(s) or {}).get("count") or 0) for s in shards)


def raw_tar(out_dir: str | Path, shard: int) -> Path:
    """DIR/raw/shard-NNNNNN.tar."""
    return DatasetFolder(out_dir).raw_tar(shard)


def tar_sha256(out_dir: str | Path, shard: int) -> str:
    """The raw tar's sha256 as its completion marker records it."""
    marker = DatasetFolder(out_dir).marker(shard)
    if marker is None:
        raise FileNotFoundError(f"{DatasetFolder(out_dir).raw_marker(shard)}: no completion marker")
    return marker["tar_sha256"]


def member_key(name: str) -> str:
    """The sample key of a tar member name (`folder.shards.split_member`)."""
    return split_member(name)[0]


def read_members(tar_path: str | Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file member of a tar, in archive order."""
    out = []
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            if member.isfile():
                out.append((member.name, tar.extractfile(member).read()))  # type: ignore[union-attr]
    return out


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 array (gray or RGB)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        return np.asarray(img).copy()


def shard_images(members: list[tuple[str, bytes]]) -> tuple[list[str], list[np.ndarray]]:
    """Keys and decoded images of a shard's .png members, in archive (key) order."""
    keys, images = [], []
    for name, data in members:
        if name.endswith(".png"):
            keys.append(member_key(name))
            images.append(decode_png(data))
    return keys, images


def shard_labels(out_dir: str | Path, shard: int) -> dict[str, tuple[str, int]]:
    """key -> (label, label_index) from the raw shard's rows parquet."""
    path = DatasetFolder(out_dir).raw_rows(shard)
    table = pq.read_table(path, columns=["key", "label", "label_index"]).to_pydict()
    return {k: (lab, int(li)) for k, lab, li in zip(table["key"], table["label"],
                                                   table["label_index"])}


def embeddings_path(out_dir: str | Path, shard: int, embedder_fingerprint: str) -> Path:
    """DIR/embeddings/shard-NNNNNN.emb-<first 16 hex of the embedder fingerprint>.npz.

    Not under raw/: raw/ is generation's output alone (DVC tracks it as the generate stage's).
    """
    return DatasetFolder(out_dir).embeddings_file(shard, embedder_fingerprint)


def save_shard_embeddings(out_dir: str | Path, shard: int, embedder_fingerprint: str,
                          keys: list[str], vectors: np.ndarray, sha256: str) -> Path:
    """Store a shard's embeddings (or uint8 thumbnails) beside it atomically; return the path."""
    path = embeddings_path(out_dir, shard, embedder_fingerprint)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        data = np.asarray(vectors)
        np.savez(f, keys=np.array(keys, dtype=str),
                 emb=np.ascontiguousarray(data, dtype=np.uint8 if data.dtype == np.uint8
                                          else np.float32),
                 tar_sha256=np.array(sha256), embedder=np.array(embedder_fingerprint))
    return path


def load_shard_embeddings(out_dir: str | Path, shard: int, embedder_fingerprint: str,
                          sha256: str) -> tuple[list[str], np.ndarray] | None:
    """(keys, vectors) stored for this shard and embedder, or None if absent or stale."""
    path = embeddings_path(out_dir, shard, embedder_fingerprint)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["tar_sha256"]) != sha256 or str(z["embedder"]) != embedder_fingerprint:
                return None
            emb = z["emb"]
            return [str(k) for k in z["keys"]], emb if emb.dtype == np.uint8 \
                else emb.astype(np.float32)
    except (OSError, ValueError, KeyError):
        return None


def write_accepted_tar(members: list[tuple[str, bytes]], keep: set[str],
                       path: str | Path) -> int:
    """Write the members of the kept keys, in their order, to a tar atomically; count samples."""
    kept = 0
    last = None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = DeterministicTarWriter(f)
        for name, data in members:
            key = member_key(name)
            if key in keep:
                writer.add(name, data)
                if key != last:
                    kept, last = kept + 1, key
        writer.close()
    return kept


def link_accepted_tar(out_dir: str | Path, shard: int, path: str | Path) -> None:
    """Make `path` the raw tar of `shard` itself, atomically: a hard link, or a copy where the
    file system has no hard links or `path` is on another device (`fsutil.link_or_copy`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    replace_with_link(raw_tar(out_dir, shard), path)


def qc_failures(out_dir: str | Path, shard: int) -> dict[str, str]:
    """key -> reason of the raw shard's samples that failed QC (none without QC columns); they
    are never copied into the accepted shards."""
    path = DatasetFolder(out_dir).raw_rows(shard)
    if "qc_passed" not in pq.read_schema(path).names:
        return {}
    table = pq.read_table(path, columns=["key", "qc_passed", "qc_reason"]).to_pylist()
    return {r["key"]: r["qc_reason"] for r in table if not r["qc_passed"]}
