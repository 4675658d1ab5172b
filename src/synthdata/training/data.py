"""Training data: images and captions from a folder, a CSV/Parquet table, WebDataset tars or phantoms.

Every source becomes a list of `Item`s (where the image bytes are, the caption, the
metadata row) in a stable order. Images are decoded on demand to RGB at the training
resolution. The data fingerprint hashes each image's bytes and combines the sorted hashes, so
it does not depend on order or on file names.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from synthdata.errors import SynthdataError
from synthdata.folder.shards import split_member
from synthdata.phantoms.cache import cached_set
from synthdata.spec.checks import template_slots
from synthdata.training.spec import Data, PhantomSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class TrainDataError(SynthdataError):
    """Training data that cannot be used (names the file and the field)."""


@dataclass(frozen=True)
class Item:
    """One training image: its file (or tar + member), caption and metadata."""

    path: Path
    caption: str
    member: str | None = None
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        """Where the image is: the file path, or `tar#member`."""
        return f"{self.path}#{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        """The image file's bytes."""
        if self.member is None:
            return self.path.read_bytes()
        with tarfile.open(self.path) as tar:
            f = tar.extractfile(self.member)
            if f is None:
                raise TrainDataError(f"{self.id}: not a regular file in the tar")
            return f.read()


def phantom_set(source: PhantomSource) -> Path:
    """The folder of a phantom source, written once into the cache (`phantoms.cache`)."""
    return cached_set(source.count, source.seed, source.size, source.labels)


def _caption_maker(data: Data, columns: list[str], where: str) -> Callable[[dict], str]:
    if data.caption_template is not None:
        missing = [s for s in template_slots(data.caption_template) if s not in columns]
        if missing:
            raise TrainDataError(f"{where}: data.caption_template uses {missing}, which are not among "
                                 f"its columns {columns}")
        return lambda row: data.caption_template.format(**{k: _text(v) for k, v in row.items()})
    column = data.caption_column or "caption"
    if column not in columns:
        raise TrainDataError(f"{where}: no caption column {column!r} (columns: {columns}); set "
                             "data.caption_column or data.caption_template")
    return lambda row: _text(row[column])


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _keep(data: Data, row: dict, where: str) -> bool:
    for column, allowed in data.filter.items():
        if column not in row:
            raise TrainDataError(f"{where}: data.filter names {column!r}, which is not a column "
                                 f"(columns: {sorted(row)})")
        if _text(row[column]) not in allowed:
            return False
    return True


def _table_items(data: Data, table: Path, rows: list[dict], columns: list[str]) -> list[Item]:
    where = str(table)
    if data.path_column not in columns:
        raise TrainDataError(f"{where}: no path column {data.path_column!r} (columns: {columns}); "
                             "set data.path_column")
    caption = _caption_maker(data, columns, where)
    items = []
    for row in rows:
        if not _keep(data, row, where):
            continue
        path = Path(_text(row[data.path_column])).expanduser()
        path = path if path.is_absolute() else table.parent / path
        items.append(Item(path=path, caption=caption(row), meta=row))
    return items


def _read_table(path: Path, kind: str) -> tuple[list[dict], list[str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False) if kind == "csv" \
            else pd.read_parquet(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TrainDataError(f"{path}: cannot read the {kind} table: {str(exc).splitlines()[0]}") from None
    return frame.to_dict(orient="records"), [str(c) for c in frame.columns]


def _folder_items(data: Data, root: Path) -> list[Item]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    items = []
    for p in files:
        sidecar = p.with_suffix(".txt")
        if sidecar.is_file():
            caption = sidecar.read_text(encoding="utf-8").strip()
        elif data.caption_template is not None:
            try:
                caption = data.caption_template.format(name=p.stem, folder=p.parent.name)
            except KeyError as exc:
                raise TrainDataError(f"{root}: data.caption_template uses {exc}, but a folder source "
                                     "knows only {name} and {folder}") from None
        else:
            raise TrainDataError(f"{p}: no caption: add {sidecar.name} beside it or set data.caption_template")
        items.append(Item(path=p, caption=caption, meta={"name": p.stem, "folder": p.parent.name}))
    return items


def _tar_items(data: Data, tar_path: Path) -> list[Item]:
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(tar_path) as tar:
            for info in tar.getmembers():
                if not info.isfile():
                    continue
                key, ext = split_member(info.name)
                if not ext:
                    continue
                groups.setdefault(key, {})[ext.lower()] = info
            items = []
            for key in sorted(groups):
                members = groups[key]
                image = next((members[e] for e in ("png", "jpg", "jpeg") if e in members), None)
                if image is None:
                    continue
                meta = json.loads(tar.extractfile(members["json"]).read()) if "json" in members else {}
                if not isinstance(meta, dict):
                    meta = {}
                text = tar.extractfile(members["txt"]).read().decode("utf-8").strip() if "txt" in members else None
                row = {k: v for k, v in meta.items() if not isinstance(v, (dict, list))}
                if text is not None:
                    row.setdefault("txt", text)
                where = f"{tar_path}#{key}"
                if not _keep(data, row, where):
                    continue
                if data.caption_template is not None or data.caption_column is not None:
                    caption = _caption_maker(data, sorted(row), where)(row)
                elif text is not None:
                    caption = text
                else:
                    raise TrainDataError(f"{where}: no caption (.txt member) and no data.caption_template")
                items.append(Item(path=tar_path, member=image.name, caption=caption, meta=row))
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise TrainDataError(f"{tar_path}: cannot read the WebDataset tar: {exc}") from None
    return items


def collect_items(data: Data) -> list[Item]:
    """The training items of the data section, in a stable order (filter and limit applied)."""
    if data.phantoms is not None:
        folder = phantom_set(data.phantoms)
        rows, columns = _read_table(folder / "metadata.csv", "csv")
        items = _table_items(data, folder / "metadata.csv", rows, columns)
    elif data.csv is not None or data.parquet is not None:
        kind = "csv" if data.csv is not None else "parquet"
        table = Path(getattr(data, kind)).expanduser()
        rows, columns = _read_table(table, kind)
        items = _table_items(data, table, rows, columns)
    elif data.folder is not None:
        items = _folder_items(data, Path(data.folder).expanduser())
    else:
        tars = sorted({p for pattern in data.webdataset or [] for p in glob.glob(str(Path(pattern).expanduser()))})
        items = [it for t in tars for it in _tar_items(data, Path(t))]
    if data.limit is not None:
        items = items[: data.limit]
    if not items:
        raise TrainDataError("data: no training images found (check the source, filter and limit)")
    return items


def decode(item: Item, resolution: int, center_crop: bool = True) -> np.ndarray:
    """An item's image as RGB uint8, resolution x resolution (shorter side resized, then cropped)."""
    try:
        with Image.open(io.BytesIO(item.read_bytes())) as img:
            img = img.convert("RGB")
            if center_crop:
                scale = resolution / min(img.size)
                size = (max(resolution, round(img.size[0] * scale)), max(resolution, round(img.size[1] * scale)))
                img = img.resize(size, Image.Resampling.BICUBIC)
                left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
                img = img.crop((left, top, left + resolution, top + resolution))
            else:
                img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise TrainDataError(f"{item.id}: cannot read the image: {str(exc).splitlines()[0]}") from None


def data_fingerprint(items: list[Item]) -> tuple[str, list[str]]:
    """(fingerprint, per-item sha256): sha256 over the sorted image-content hashes."""
    hashes = [hashlib.sha256(it.read_bytes()).hexdigest() for it in items]
    top = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
    return top, hashes


def captions_fingerprint(items: list[Item]) -> str:
    """sha256 over the sorted (image hash-independent) captions."""
    return hashlib.sha256("\n".join(sorted(it.caption for it in items)).encode()).hexdigest()


def source_record(data: Data) -> dict:
    """What the data section points at, for train.json (paths absolute)."""
    kind = data.source_kind()
    if kind == "phantoms":
        return {"kind": "phantoms", **data.phantoms.model_dump(mode="json")}
    if kind == "webdataset":
        tars = sorted({str(Path(p).resolve()) for pattern in data.webdataset
                       for p in glob.glob(str(Path(pattern).expanduser()))})
        return {"kind": kind, "tars": tars}
    return {"kind": kind, "path": str(Path(getattr(data, kind)).expanduser().resolve())}
