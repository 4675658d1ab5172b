"""The reference cache: per-file embeddings and built indexes, under `cache_root()/screening`.

Layout (nothing here is ever written under a dataset folder):
    hashes.sqlite                     path, size, mtime -> sha256 (so unchanged files are not re-read)
    embeddings/<emb>/<reader>/<ab>/<sha256>.npz   vectors of one file's images, by content hash
    index/<key>/                      one built reference: vectors.npy, ids.npy, groups.npy,
                                      nn_sims.npy (calibration), index.faiss (approximate
                                      kinds), meta.json (written last: the completion mark)

`key` hashes the embedder fingerprint, the reader options, the index settings and every
(file id, content sha256): the reference content fingerprint. A second run with the same
reference reuses the index; a run that adds files embeds only the new files and, when a
cached index holds a subset of the files, extends that index with the new vectors instead of
rebuilding it (ids of added files follow the existing ones). Removing or changing files
rebuilds the index from the cached per-file embeddings, without decoding images again.

Privacy note: these are embeddings of real images. With the `pixel` embedder they are 32 x 32
thumbnails, so the cache must be kept as private as the reference itself.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import filelock
import numpy as np

from synthdata.fsutil import atomic_path, cache_root, sha256_file, write_json_atomic
from synthdata.screening import calibrate
from synthdata.screening import index as ix
from synthdata.screening.embedders import Embedder
from synthdata.screening.reference import (
    ReaderOptions,
    ReferenceFile,
    Skipped,
    read_file_images,
    scan_reference,
)

CACHE_VERSION = 1


def screening_cache() -> Path:
    """cache_root()/screening: $SYNTHDATA_CACHE/screening, default ~/.cache/synthdata/screening."""
    return cache_root() / "screening"


@dataclass(frozen=True)
class ReferenceHandle:
    """A built reference index in the cache: small and picklable, for per-shard tasks."""

    key: str
    path: str
    count: int
    embedder_fingerprint: str


@dataclass
class PreparedReference:
    """A reference ready to search: its handle, what was skipped and how it was built."""

    handle: ReferenceHandle
    skipped: list[Skipped]
    meta: dict
    nn_sims: np.ndarray


def content_hashes(files: list[ReferenceFile]) -> dict[Path, str]:
    """sha256 of each file, reusing earlier hashes when path, size and mtime are unchanged."""
    db_path = screening_cache() / "hashes.sqlite"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[Path, str] = {}
    with sqlite3.connect(db_path, timeout=60) as db:
        db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                   "mtime_ns INTEGER, sha256 TEXT)")
        for f in files:
            row = db.execute("SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?",
                             (str(f.path),)).fetchone()
            if row and row[0] == f.size and row[1] == f.mtime_ns:
                out[f.path] = row[2]
                continue
            out[f.path] = sha256_file(f.path)
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                       (str(f.path), f.size, f.mtime_ns, out[f.path]))
    return out


def _embedding_path(emb_fp: str, reader_fp: str, sha: str) -> Path:
    return screening_cache() / "embeddings" / emb_fp[:16] / reader_fp / sha[:2] / f"{sha}.npz"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_file_embeddings(path: Path) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    with np.load(path, allow_pickle=False) as z:
        return (z["emb"], [str(s) for s in z["suffix"]],
                list(zip((str(s) for s in z["skip_suffix"]), (str(r) for r in z["skip_reason"]))))


def _prefetch(fn: Callable, items: list, workers: int = 2, window: int = 8) -> Iterator:
    """fn(item) for each item, in order, computed a few items ahead in threads."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ref-decode") as pool:
        pending: list = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def embed_files(files: list[ReferenceFile], hashes: dict[Path, str], embedder: Embedder,
                options: ReaderOptions) -> list[Skipped]:
    """Embed every file not yet cached, batching images across files; return files skipped."""
    todo = [f for f in files
            if not _embedding_path(embedder.fingerprint, options.fingerprint, hashes[f.path]).is_file()]
    skipped: list[Skipped] = []
    pending: list[tuple[ReferenceFile, list[str], list[np.ndarray], list[Skipped]]] = []

    def flush() -> None:
        images = [img for _, _, imgs, _ in pending for img in imgs]
        vectors = embedder.embed(images) if images else np.zeros((0, embedder.dim), np.float32)
        start = 0
        for ref, suffixes, imgs, bad in pending:
            emb = vectors[start:start + len(imgs)]
            start += len(imgs)
            _save_npz(_embedding_path(embedder.fingerprint, options.fingerprint, hashes[ref.path]),
                      emb=emb, suffix=np.array(suffixes, dtype=str),
                      skip_suffix=np.array([s.id[len(ref.id):] for s in bad], dtype=str),
                      skip_reason=np.array([s.reason for s in bad], dtype=str))
        pending.clear()

    for ref, (images, bad) in zip(todo, _prefetch(lambda f: read_file_images(f, options), todo)):
        if not images and any(s.id == ref.id for s in bad):
            skipped.extend(bad)  # the whole file failed: not cached, retried next run
            continue
        pending.append((ref, [s for s, _ in images], [img for _, img in images], bad))
        if sum(len(p[2]) for p in pending) >= embedder.batch_size:
            flush()
    flush()
    return skipped


def _index_key(emb_fp: str, options: ReaderOptions, settings: dict,
               entries: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(index key, reference content fingerprint)."""
    content = hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()
    blob = json.dumps({"v": CACHE_VERSION, "embedder": emb_fp, "reader": options.fingerprint,
                       "settings": settings, "content": content}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], content


def _find_parent(root: Path, emb_fp: str, options: ReaderOptions, settings: dict,
                 entries: dict[str, str]) -> Path | None:
    """A cached index built from a subset of these files (same embedder and settings)."""
    best, best_n = None, 0
    for meta_path in root.glob("*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (meta.get("embedder_fingerprint") != emb_fp or meta.get("reader") != options.fingerprint
                or meta.get("settings") != settings):
            continue
        files = meta.get("files", {})
        if all(entries.get(fid) == sha for fid, sha in files.items()) and meta["count"] > best_n:
            best, best_n = meta_path.parent, meta["count"]
    return best


def _assemble(files: list[ReferenceFile], hashes: dict[Path, str], embedder: Embedder,
              options: ReaderOptions, skip_ids: set[str]
              ) -> tuple[list[tuple[ReferenceFile, np.ndarray, list[str]]], list[Skipped]]:
    """Cached embeddings of every readable file, and member-level skips recorded with them."""
    out, skipped = [], []
    for ref in files:
        if ref.id in skip_ids:
            continue
        emb, suffixes, bad = _load_file_embeddings(
            _embedding_path(embedder.fingerprint, options.fingerprint, hashes[ref.path]))
        skipped.extend(Skipped(ref.id + s, r) for s, r in bad)
        if len(suffixes) == 0:
            if not bad:
                skipped.append(Skipped(ref.id, f"no images in {ref.kind} file"))
            continue
        out.append((ref, emb, suffixes))
    return out, skipped


def _build(target: Path, parts, embedder: Embedder, options: ReaderOptions, settings: dict,
           content: str) -> None:
    """Build (or extend a parent's) index into target, meta.json last."""
    entries = {ref.id: sha for ref, sha, _, _ in parts}
    parent = _find_parent(target.parent, embedder.fingerprint, options, settings, entries)
    t0 = time.perf_counter()
    group_of = {ref.id: g for g, (ref, _, _, _) in enumerate(parts)}  # file ordinal, this build
    parent_meta = json.loads((parent / "meta.json").read_text()) if parent else None
    if parent is not None:
        old_ids = [str(s) for s in np.load(parent / "ids.npy")]
        old_vec = np.load(parent / "vectors.npy")
        # The parent's groups are ordinals in its own sorted file list; renumber for this build.
        parent_files = sorted(parent_meta["files"])
        old_groups = np.array([group_of[parent_files[g]] for g in np.load(parent / "groups.npy")],
                              dtype=np.int32)
        new_parts = [p for p in parts if p[0].id not in parent_meta["files"]]
    else:
        old_ids, new_parts = [], parts
        old_vec, old_groups = np.zeros((0, embedder.dim), np.float32), np.zeros(0, np.int32)
    new_vec = np.concatenate([e for _, _, e, _ in new_parts]) if new_parts \
        else np.zeros((0, embedder.dim), np.float32)
    new_ids = [ref.id + s for ref, _, _, sfx in new_parts for s in sfx]
    new_groups = np.array([group_of[ref.id] for ref, _, e, _ in new_parts for _ in range(len(e))],
                          dtype=np.int32)
    vectors = np.ascontiguousarray(np.concatenate([old_vec, new_vec]), dtype=np.float32)
    ids, groups = old_ids + new_ids, np.concatenate([old_groups, new_groups])
    plan = ix.choose_index(len(vectors), embedder.dim, **settings)
    extend = parent_meta is not None and parent_meta["index"]["kind"] == plan.kind
    if extend and plan.kind != "flat":
        # Tune on the new vectors before adding them: they are not in the graph yet.
        params = {k: v for k, v in parent_meta["index"].items() if k not in ("kind", "dim")}
        plan = ix.IndexChoice(plan.kind, plan.dim, params)
        index = ix.load_index(parent / "index.faiss", plan, old_vec)
        plan_info = ix.tune(index, old_vec, plan,
                            queries=new_vec if len(new_vec) >= 100 else None)
        index.add(new_vec, vectors)
    else:
        index, order, plan_info = ix.build_tuned(vectors, plan)
        if not np.array_equal(order, np.arange(len(order))):
            vectors, groups = np.ascontiguousarray(vectors[order]), groups[order]
            ids = [ids[i] for i in order]
    build_s = time.perf_counter() - t0
    nn_sims = calibrate.real_nn_similarities(index, vectors, groups)
    target.mkdir(parents=True, exist_ok=True)
    for name, arr in (("vectors.npy", vectors), ("ids.npy", np.array(ids, dtype=str)),
                      ("groups.npy", groups), ("nn_sims.npy", nn_sims)):
        with atomic_path(target / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    if plan.kind != "flat":
        with atomic_path(target / "index.faiss") as tmp:
            ix.save_index(index, tmp)
    write_json_atomic(target / "meta.json", {
        "version": CACHE_VERSION, "count": len(ids), "files": entries, "content": content,
        "embedder": embedder.name, "embedder_fingerprint": embedder.fingerprint,
        "reader": options.fingerprint, "settings": settings, "index": plan_info,
        "built": {"from": f"extended {parent.name}" if extend else "new",
                  "added": len(new_ids) if extend else len(ids),
                  "build_s": round(build_s, 3), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}})


def prepare_reference(paths: list[str], embedder: Embedder, *, options: ReaderOptions,
                      exact_limit: int, memory_gb: float,
                      base_dir: str | Path | None = None) -> PreparedReference:
    """Scan, hash, embed (new files only) and index a reference; reuse everything cached."""
    files, skipped = scan_reference(paths, base_dir)
    hashes = content_hashes(files)
    failed = embed_files(files, hashes, embedder, options)
    parts_raw, member_skips = _assemble(files, hashes, embedder, options, {s.id for s in failed})
    skipped = sorted(skipped + failed + member_skips, key=lambda s: s.id)
    if not parts_raw:
        from synthdata.screening.reference import ReferenceSetError

        reasons = "; ".join(f"{s.id}: {s.reason}" for s in skipped[:5])
        raise ReferenceSetError(f"memorization.reference has no readable images ({reasons})")
    parts = [(ref, hashes[ref.path], emb, sfx) for ref, emb, sfx in parts_raw]
    settings = {"exact_limit": exact_limit, "memory_gb": memory_gb}
    key, content = _index_key(embedder.fingerprint, options, settings,
                              [(ref.id, sha) for ref, sha, _, _ in parts])
    target = screening_cache() / "index" / key
    if not (target / "meta.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(target) + ".lock"):
            if not (target / "meta.json").is_file():
                _build(target, parts, embedder, options, settings, content)
    meta = json.loads((target / "meta.json").read_text())
    handle = ReferenceHandle(key, str(target), meta["count"], embedder.fingerprint)
    return PreparedReference(handle, skipped, meta, np.load(target / "nn_sims.npy"))


@dataclass
class LoadedReference:
    """A reference index in memory: the FAISS index, its ids and its meta."""

    index: ix.NNIndex
    ids: np.ndarray
    vectors: np.ndarray
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
            p = dict(meta["index"])
            plan = ix.IndexChoice(p.pop("kind"), p.pop("dim"), p)
            vectors = np.load(path / "vectors.npy", mmap_mode="r")
            index = ix.build_index(np.asarray(vectors), plan) if plan.kind == "flat" \
                else ix.load_index(path / "index.faiss", plan, vectors)
            ref = LoadedReference(index, np.load(path / "ids.npy"), vectors, meta)
            _LOADED[handle.key] = ref
    return ref


def clear_loaded() -> None:
    """Forget references loaded in this process (tests; long-lived workers)."""
    with _LOADED_LOCK:
        _LOADED.clear()
