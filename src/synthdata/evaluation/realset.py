"""Real labelled images for evaluation: three layouts, one listing, a content fingerprint.

`load_real_set(REF)` accepts:
- a **table**: a CSV or Parquet file with `path` and `label` columns (paths relative to the
  table's folder; optional `patient_id` keeps a patient's images on one side of a split), or
  a folder holding `metadata.csv` / `metadata.parquet` / `labels.csv` (what `synthdata
  phantoms` writes);
- **WebDataset** tars: a `.tar` file, a folder of `.tar` files, or a synthdata dataset folder
  (its accepted shards); each sample's label is the `label` of its `.json`, else its `.cls`;
- an **ImageFolder**: one sub-folder per label holding the images.

Images are read only to be embedded (`read_images`); nothing here writes them anywhere. Items
are sorted by id, and the fingerprint hashes every item's id, label and file content, so the
same set gives the same fingerprint wherever it lies.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthdata.errors import SynthdataError
from synthdata.screening import decoders
from synthdata.folder import DatasetFolder
from synthdata.folder.shards import split_member
from synthdata.folder.snapshot import hold
from synthdata.fsutil import sha256_file

IMAGE_SUFFIXES = decoders.RASTER_SUFFIXES + decoders.DICOM_SUFFIXES
TABLE_NAMES = ("metadata.csv", "metadata.parquet", "labels.csv", "labels.parquet")
GROUP_COLUMNS = ("patient_id", "patient", "subject_id")


class RealSetError(SynthdataError):
    """A real set that cannot be used: missing, empty, or without labels."""


@dataclass(frozen=True)
class RealItem:
    """One real image: its id (relative path, `#member=` inside a tar), label and group."""

    id: str
    label: str
    group: str
    file: str               # absolute path of the file holding it
    member: str | None = None
    sha256: str = ""        # content hash of that file (set by load_real_set)
    attrs: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # other table columns
                            # or the tar JSON's `vars` (subgroups: sex, age, view, ...)

    def attributes(self) -> dict[str, str]:
        """The item's attributes as a dict."""
        return dict(self.attrs)


@dataclass
class RealSet:
    """A listed real set: where, which layout, its items (sorted by id) and fingerprint."""

    root: str
    layout: str             # table | webdataset | imagefolder
    items: list[RealItem]
    fingerprint: str = ""
    skipped: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({i.label for i in self.items})

    def counts(self) -> dict[str, int]:
        """Images per label."""
        out: dict[str, int] = {}
        for item in self.items:
            out[item.label] = out.get(item.label, 0) + 1
        return dict(sorted(out.items()))


def _read_table(path: Path) -> list[dict]:
    import pandas as pd

    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise RealSetError(f"{path}: unreadable table ({exc})") from None
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise RealSetError(f"{path}: missing column(s) {', '.join(missing)}; expected a table "
                           f"with 'path' and 'label' (columns: {', '.join(map(str, df.columns))})")
    return df.to_dict("records")


def _table_items(table: Path) -> tuple[list[RealItem], list[str]]:
    base = table.parent.resolve()
    group_col = None
    items, skipped = [], []
    rows = _read_table(table)
    if rows:
        group_col = next((c for c in GROUP_COLUMNS if c in rows[0]), None)
    for n, row in enumerate(rows):
        rel, label = row.get("path"), row.get("label")
        if not isinstance(rel, str) or not rel or label is None or str(label) in ("", "nan"):
            raise RealSetError(f"{table}: row {n + 2}: empty path or label")
        file = (base / rel).resolve()
        if base not in file.parents:
            raise RealSetError(f"{table}: row {n + 2}: path {rel!r} leaves the table's folder")
        if not file.is_file():
            skipped.append(f"{rel}: file not found")
            continue
        group = str(row[group_col]) if group_col else rel
        attrs = tuple((str(k), str(v)) for k, v in row.items()
                      if k not in ("path", "label", group_col) and v is not None and str(v) != "nan")
        items.append(RealItem(Path(rel).as_posix(), str(label), group, str(file), attrs=attrs))
    return items, skipped


def _tar_items(tars: list[Path], root: Path) -> tuple[list[RealItem], list[str]]:
    items, skipped = [], []
    for tar_path in tars:
        rel_tar = tar_path.relative_to(root).as_posix() if root in tar_path.parents else tar_path.name
        samples: dict[str, dict[str, bytes]] = {}
        images: dict[str, str] = {}
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_member(member.name)
                if ext in ("json", "cls"):
                    samples.setdefault(key, {})[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
                elif member.name.lower().endswith(IMAGE_SUFFIXES):
                    images.setdefault(key, member.name)
        for key, member in images.items():
            parts = samples.get(key, {})
            label, attrs = None, ()
            if "json" in parts:
                try:
                    meta = json.loads(parts["json"])
                    label = meta.get("label") if isinstance(meta, dict) else None
                    found = meta.get("vars") if isinstance(meta, dict) else None
                    if isinstance(found, dict):
                        attrs = tuple((str(k), str(v)) for k, v in sorted(found.items()))
                except json.JSONDecodeError:
                    label = None
            if label is None and "cls" in parts:
                label = parts["cls"].decode().strip()
            if label is None or str(label) == "":
                skipped.append(f"{rel_tar}#{key}: no label (.json 'label' or .cls)")
                continue
            items.append(RealItem(f"{rel_tar}#member={member}", str(label), f"{rel_tar}#{key}",
                                  str(tar_path.resolve()), member, attrs=attrs))
    return items, skipped


def _imagefolder_items(root: Path) -> tuple[list[RealItem], list[str]]:
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(label_dir.rglob("*")):
            if file.is_file() and file.name.lower().endswith(IMAGE_SUFFIXES) \
                    and not any(part.startswith(".") for part in file.relative_to(root).parts):
                rel = file.relative_to(root).as_posix()
                items.append(RealItem(rel, label_dir.name, rel, str(file.resolve())))
    return items, []


def _hash_files(items: list[RealItem]) -> list[RealItem]:
    """The items with the content hash of their files filled in."""
    from dataclasses import replace

    digests: dict[str, str] = {}
    out = []
    for item in items:
        if item.file not in digests:
            digests[item.file] = sha256_file(item.file)
        out.append(replace(item, sha256=digests[item.file]))
    return out


def items_fingerprint(items: list[RealItem]) -> str:
    """sha256 over every item's id, label, group and file content hash."""
    h = hashlib.sha256()
    for item in items:
        h.update(f"{item.id}\0{item.label}\0{item.group}\0{item.sha256}\n".encode())
    return h.hexdigest()


def load_real_set(ref: str | Path) -> RealSet:
    """List a real labelled set (see the module docstring for the layouts it accepts)."""

    root = Path(ref)
    if not root.exists():
        raise RealSetError(f"--real {ref}: not found")
    if root.is_file():
        if root.suffix in (".csv", ".parquet"):
            layout, (items, skipped) = "table", _table_items(root)
        elif root.name.endswith(".tar"):
            layout, (items, skipped) = "webdataset", _tar_items([root], root.parent)
        else:
            raise RealSetError(f"--real {ref}: expected a CSV/Parquet table, a .tar, or a folder")
    elif (table := next((root / n for n in TABLE_NAMES if (root / n).is_file()), None)):
        layout, (items, skipped) = "table", _table_items(table)
    elif DatasetFolder(root).is_dataset():
        tars = hold(root).accepted_tars()  # one screening generation, pinned until exit
        if not tars:
            raise RealSetError(f"--real {ref}: a dataset folder without accepted shards")
        layout, (items, skipped) = "webdataset", _tar_items(tars, root)
    elif tars := sorted(root.glob("*.tar")):
        layout, (items, skipped) = "webdataset", _tar_items(tars, root)
    else:
        layout, (items, skipped) = "imagefolder", _imagefolder_items(root)
    if not items:
        raise RealSetError(
            f"--real {ref}: no labelled images found ({layout} layout); expected a table with "
            "path,label, WebDataset tars with .cls/.json, or one folder of images per label")
    items.sort(key=lambda i: i.id)
    if len({i.id for i in items}) != len(items):
        raise RealSetError(f"--real {ref}: the same image is listed twice")
    items = _hash_files(items)
    return RealSet(str(root.resolve()), layout, items, items_fingerprint(items), skipped)


def read_images(items: list[RealItem]) -> Iterator[np.ndarray]:
    """uint8 pixels of each item, in order (first frame of multi-frame files)."""
    open_tar: tuple[str, tarfile.TarFile] | None = None
    try:
        for item in items:
            if item.member is None:
                data = Path(item.file).read_bytes()
                name = item.file
            else:
                if open_tar is None or open_tar[0] != item.file:
                    if open_tar is not None:
                        open_tar[1].close()
                    open_tar = (item.file, tarfile.open(item.file, "r:*"))
                data = open_tar[1].extractfile(item.member).read()  # type: ignore[union-attr]
                name = item.member
            try:
                image = next(iter(decoders.decode_bytes(data, name))).image
            except (StopIteration, OSError, ValueError) as exc:
                raise RealSetError(f"real image {item.id}: unreadable ({type(exc).__name__})") from None
            yield image
    finally:
        if open_tar is not None:
            open_tar[1].close()


def split_items(items: list[RealItem], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split by group (patient) into (first, second) index lists; `fraction` of the
    groups go to the second part. Stratified by the group's first label, so every label lands on
    both sides when it has at least two groups."""
    by_label: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for item in items:
        if item.group not in seen:
            seen[item.group] = item.label
            by_label.setdefault(item.label, []).append(item.group)
    second: set[str] = set()
    rng = np.random.default_rng(seed)
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        order = rng.permutation(len(groups))
        n = int(round(len(groups) * fraction))
        if len(groups) >= 2:
            n = min(max(n, 1), len(groups) - 1)
        second.update(groups[i] for i in order[:n])
    first_idx = [i for i, item in enumerate(items) if item.group not in second]
    second_idx = [i for i, item in enumerate(items) if item.group in second]
    return first_idx, second_idx
