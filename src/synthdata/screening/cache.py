"""The reference cache: per-file data and built references, under `cache_root()/screening`.

A *store* is what screening keeps of each real image for one matcher: an embedder's view
rows (vectors; `embedders.py`), or the aligned matcher's thumbnails (`align.py`).
Layout (private: folders 0700, files 0600; nothing here is written under a dataset folder):

    hashes.sqlite                              path, size, mtime -> sha256 (files not re-read)
    files/<store>/<reader>/<ab>/<sha256>.npz   one file's data for one store: rows, the image
                                               each row belongs to, image suffixes and groups
    index/<key>/                               one built reference of one store: data.npy
                                               (rows), owners.npy (row -> image), ids.npy,
                                               groups.npy (patient group per image),
                                               nn_sims.npy (calibration, vector stores),
                                               index.faiss (approximate kinds), meta.json
                                               (written last: the completion mark)

Private writes and the hash database are `private_cache`; loading a built reference for the
search is `loaded`. `key` hashes the store fingerprint, the reader options, the group pattern, the index settings
and every (file id, content sha256). Files are decoded once for every store that lacks them.
A reference that grows is extended from a cached index of a subset of its files; removing
or changing files rebuilds from the per-file data without decoding images again.

Privacy: these are derived from real images, and the `pixel` rows and aligned thumbnails
are small pictures of them. The cache is as sensitive as the reference: it is created
owner-only, and its ids are the real ids (machine paths never; ids start at the reference
root's name). What leaves the cache for a dataset folder is pseudonymized (`privacy`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from synthdata.screening.private_cache import (  # noqa: F401  (screening_cache: re-exported)
    _write_private,
    content_hashes,
    private_lock,
    save_array,
    save_json,
    screening_cache,
)
from synthdata.screening.kinds import SKIPPED_KIND
from synthdata.screening import calibrate
from synthdata.screening import index as ix
from synthdata.screening.groups import MetadataGroups, check_group_column
from synthdata.screening.reference import (
    ReaderOptions,
    ReferenceFile,
    ReferenceSetError,
    Skipped,
    group_of,
    own_file,
    read_file_images,
    reference_groups,
    scan_reference,
)
from synthdata import privacy

CACHE_VERSION = 2


class Store(Protocol):
    """What a matcher keeps of real images: rows of data per image (see module doc)."""

    name: str
    fingerprint: str

    def reference_rows(self, renderings: Sequence[Sequence[np.ndarray]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, owner image index of each row) of several real images' renderings."""


@dataclass(frozen=True)
class ReferenceHandle:
    """A built reference of one store in the cache: small and picklable, for tasks."""

    key: str
    path: str
    count: int
    store: str
    fingerprint: str


@dataclass
class PreparedReference:
    """A reference ready to search: its handle, what was skipped and how it was built."""

    handle: ReferenceHandle
    skipped: list[Skipped]
    meta: dict
    nn_sims: np.ndarray


def _file_path(store_fp: str, reader_fp: str, sha: str) -> Path:
    return screening_cache() / "files" / store_fp[:16] / reader_fp / sha[:2] / f"{sha}.npz"


def _load_file(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {"data": z["data"], "owner": z["owner"], "suffix": [str(s) for s in z["suffix"]],
                "group": [str(g) for g in z["group"]],
                "skipped": list(zip((str(s) for s in z["skip_suffix"]),
                                    (str(r) for r in z["skip_reason"])))}


def _prefetch(fn: Callable, items: list, workers: int = 2, window: int = 8) -> Iterator:
    """fn(item) for each item, in order, computed a few items ahead in threads."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ref-decode") as pool:
        pending: list = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def store_files(files: list[ReferenceFile], hashes: dict[Path, str], stores: Sequence[Store],
                options: ReaderOptions) -> list[Skipped]:
    """Decode every file some store lacks (once) and store its data; return files skipped."""
    missing = {f.id: [s for s in stores if not _file_path(
        s.fingerprint, options.fingerprint, hashes[f.path]).is_file()] for f in files}
    todo = [f for f in files if missing[f.id]]
    skipped: list[Skipped] = []
    for ref, (frames, bad) in zip(todo, _prefetch(lambda f: read_file_images(f, options), todo)):
        if not frames and any(s.id == ref.id for s in bad):
            skipped.extend(bad)  # the whole file failed: not cached, retried next run
            continue
        renderings = [f.renderings for f in frames]
        for store in missing[ref.id]:
            data, owner = store.reference_rows(renderings)
            arrays = {"data": data, "owner": owner,
                      "suffix": np.array([f.suffix for f in frames], dtype=str),
                      "group": np.array([f.group or "" for f in frames], dtype=str),
                      "skip_suffix": np.array([s.id[len(ref.id):] for s in bad], dtype=str),
                      "skip_reason": np.array([s.reason for s in bad], dtype=str)}
            _write_private(_file_path(store.fingerprint, options.fingerprint, hashes[ref.path]),
                           lambda tmp, a=arrays: np.savez(open(tmp, "wb"), **a))
    return skipped


@dataclass
class _Part:
    ref: ReferenceFile
    sha: str
    data: np.ndarray
    owner: np.ndarray
    ids: list[str]
    groups: list[str]


def _assemble(files: list[ReferenceFile], hashes: dict[Path, str], store: Store,
              options: ReaderOptions, skip_ids: set[str], meta: MetadataGroups
              ) -> tuple[list[_Part], list[Skipped]]:
    """Cached data of every readable file, with final groups; member-level skips."""
    parts, skipped = [], []
    for ref in files:
        if ref.id in skip_ids:
            continue
        f = _load_file(_file_path(store.fingerprint, options.fingerprint, hashes[ref.path]))
        skipped.extend(Skipped(ref.id + s, r) for s, r in f["skipped"])
        if not f["suffix"]:
            if not f["skipped"]:
                skipped.append(Skipped(ref.id, f"no images in {ref.kind} file"))
            continue
        ids = [ref.id + s for s in f["suffix"]]
        table = meta.group(ref.path)
        groups = [group_of(i, own_file(i, ref.id), g or None, options.group_pattern, table)
                  for i, g in zip(ids, f["group"])]
        parts.append(_Part(ref, hashes[ref.path], f["data"], f["owner"], ids, groups))
    return parts, skipped


def _index_key(store_fp: str, options: ReaderOptions, settings: dict,
               entries: list[tuple[str, str]], tables: str) -> tuple[str, str]:
    """(index key, reference content fingerprint); `tables`: the metadata groups' hash."""
    content = hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()
    blob = json.dumps({"v": CACHE_VERSION, "store": store_fp, "reader": options.fingerprint,
                       "pattern": options.group_pattern, "settings": settings,
                       "content": content, "tables": tables}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], content


def _find_parent(root: Path, store_fp: str, settings_meta: dict, entries: dict[str, str]
                 ) -> Path | None:
    """A cached index of the same store and settings built from a subset of these files."""
    best, best_n = None, 0
    for meta_path in root.glob("*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if any(meta.get(k) != v for k, v in settings_meta.items()) or meta.get(
                "fingerprint") != store_fp:
            continue
        files = meta.get("files", {})
        if all(entries.get(fid) == sha for fid, sha in files.items()) and meta["count"] > best_n:
            best, best_n = meta_path.parent, meta["count"]
    return best


def _vector_index(data: np.ndarray, dim: int, settings: dict, parent: Path | None,
                  parent_meta: dict | None) -> tuple[ix.NNIndex, np.ndarray, dict, bool]:
    """Build (or extend the parent's) FAISS index over the rows: (index, row order, info,
    extended). The parent's rows are the first ones of `data`, in its order."""
    plan = ix.choose_index(len(data), dim, **settings)
    if parent_meta is not None and parent_meta["index"]["kind"] == plan.kind:
        n_old = parent_meta["rows"]
        params = {k: v for k, v in parent_meta["index"].items() if k not in ("kind", "dim")}
        plan = ix.IndexChoice(plan.kind, plan.dim, params)
        if plan.kind == "flat":
            index = ix.build_index(data, plan)
        else:
            index = ix.load_index(parent / "index.faiss", plan, data[:n_old])  # type: ignore[operator]
            new = data[n_old:]
            ix.tune(index, data[:n_old], plan, queries=new if len(new) >= 100 else None)
            index.add(new, data)
        return index, np.arange(len(data)), plan.describe(), True
    index, order, info = ix.build_tuned(data, plan)
    return index, order, info, False


def _build(target: Path, parts: list[_Part], store: Store, options: ReaderOptions,
           settings: dict, content: str, signed: bool, meta: MetadataGroups) -> None:
    """Build one store's reference into target (meta.json last)."""
    entries = {p.ref.id: p.sha for p in parts}
    is_vector = hasattr(store, "dim")
    ident = {"store": store.name, "reader": options.fingerprint, "pattern": options.group_pattern,
             "settings": settings, "tables": meta.fingerprint}
    parent = _find_parent(target.parent, store.fingerprint, ident, entries) if is_vector else None
    parent_meta = json.loads((parent / "meta.json").read_text()) if parent else None
    t0 = time.perf_counter()
    if parent is not None:
        ids = [str(i) for i in np.load(parent / "ids.npy")]
        groups = [str(g) for g in np.load(parent / "groups.npy")]
        chunks, owner_chunks = [np.load(parent / "data.npy")], [np.load(parent / "owners.npy")]
        parts = [p for p in parts if p.ref.id not in parent_meta["files"]]  # type: ignore[index]
    else:
        ids, groups, chunks, owner_chunks = [], [], [], []
    for p in parts:
        owner_chunks.append(p.owner + len(ids))
        chunks.append(p.data)
        ids += p.ids
        groups += p.groups
    data, owners = np.concatenate(chunks), np.concatenate(owner_chunks).astype(np.int64)
    info, extended = {"kind": "thumbnails"}, False
    nn_sims = np.zeros(0, dtype=np.float32)
    if is_vector:
        data = np.ascontiguousarray(data, dtype=np.float32)
        index, order, info, extended = _vector_index(data, store.dim, settings, parent,
                                                     parent_meta)
        if not np.array_equal(order, np.arange(len(order))):
            data, owners = np.ascontiguousarray(data[order]), owners[order]
        first_rows = np.unique(owners, return_index=True)[1]  # each image's display row
        group_codes = np.unique(np.array(groups), return_inverse=True)[1].astype(np.int64)
        nn_sims = calibrate.real_nn_similarities(index, data[first_rows], group_codes,
                                                 group_codes[owners], signed)
        if index.plan.kind != "flat":
            _write_private(target / "index.faiss", lambda tmp: ix.save_index(index, tmp))
    build_s = time.perf_counter() - t0
    for name, arr in (("data.npy", data), ("owners.npy", owners),
                      ("ids.npy", np.array(ids, dtype=str)),
                      ("groups.npy", np.array(groups, dtype=str)), ("nn_sims.npy", nn_sims)):
        save_array(target / name, arr)
    save_json(target / "meta.json", {
        "version": CACHE_VERSION, "count": len(ids), "rows": len(data), "files": entries,
        "content": content, **ident, "fingerprint": store.fingerprint, "index": info,
        "groups": len(set(groups)), "group_sources": _group_sources(groups),
        "group_tables": meta.tables,
        "max_rows_per_image": int(np.bincount(owners).max()) if len(owners) else 0,
        "built": {"from": f"extended {parent.name}" if extended and parent else "new",
                  "added": len(ids) - (parent_meta["count"] if extended and parent_meta else 0),
                  "build_s": round(build_s, 3), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}})


def _group_sources(groups: list[str]) -> dict[str, int]:
    """How many distinct groups came from DICOM patient, study, column, pattern, file."""
    out: dict[str, int] = {}
    for g in set(groups):
        kind = g.split(":", 1)[0]
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def prepare_references(paths: list[str], stores: Sequence[Store], *, options: ReaderOptions,
                       exact_limit: int, memory_gb: float,
                       base_dir: str | Path | None = None) -> list[PreparedReference]:
    """Scan, hash, decode (new files only) and build each store's reference; reuse the cache."""
    files, skipped = scan_reference(paths, base_dir)
    tables = reference_groups(paths, options, base_dir)
    hashes = content_hashes(files)
    failed = store_files(files, hashes, stores, options)
    settings = {"exact_limit": exact_limit, "memory_gb": memory_gb}
    out = []
    for store in stores:
        parts, member_skips = _assemble(files, hashes, store, options, {s.id for s in failed},
                                        tables)
        all_skipped = sorted(skipped + failed + member_skips, key=lambda s: s.id)
        if not parts:
            raise ReferenceSetError(_unreadable_message(all_skipped))
        check_group_column([g for p in parts for g in p.groups], options.group_column)
        key, content = _index_key(store.fingerprint, options, settings,
                                  [(p.ref.id, p.sha) for p in parts], tables.fingerprint)
        target = screening_cache() / "index" / key
        if not (target / "meta.json").is_file():
            with private_lock(target):
                if not (target / "meta.json").is_file():
                    _build(target, parts, store, options, settings, content,
                           bool(getattr(store, "signed", False)), tables)
        meta = json.loads((target / "meta.json").read_text())
        handle = ReferenceHandle(key, str(target), meta["count"], store.name, store.fingerprint)
        out.append(PreparedReference(handle, all_skipped, meta, np.load(target / "nn_sims.npy")))
    return out


def _unreadable_message(skipped: list) -> str:
    """Why a reference has no readable images, naming files by pseudonym only: the error may
    end in Prefect's state and logs, and reference file names can carry patient identifiers."""

    names = privacy.remember(sorted({s.id for s in skipped[:5]}), SKIPPED_KIND)
    reasons = "; ".join(f"{names[s.id]}: {s.reason.replace(s.id, names[s.id])}" for s in skipped[:5])
    return (f"memorization.reference has no readable images ({len(skipped)} file(s) skipped: {reasons}); "
            "`synthdata screen DIR --reveal p-...` names a file on this machine")


def prepare_reference(paths: list[str], store: Store, **kwargs) -> PreparedReference:
    """`prepare_references` for one store."""
    return prepare_references(paths, [store], **kwargs)[0]
