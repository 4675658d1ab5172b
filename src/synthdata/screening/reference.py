"""Reference ingestion: find the real images, give each a stable id, stream their pixels.

A reference is a list of paths (folders searched recursively, or single files). Each file
becomes a `ReferenceFile` whose id is `<root name>/<path inside the root>` (a root that is a
file: its name); each image inside it gets `file id + suffix` (`#frame=N`, `#slice=S`,
`#page=N`, `#member=NAME`, `#row=N`). Files are visited in sorted id order and decoded one at
a time, so memory holds one file's pixels, never the whole reference.

Files that cannot be read (corrupt, no pixels, unsupported type) are reported as `Skipped`
and never stop the run. Hidden files (names starting with ".") are ignored silently.
Pixels are only ever handed to an embedder: nothing here writes them anywhere.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdata.errors import SynthdataError
from synthdata.screening import decoders

READER_VERSION = 1
PARQUET_IMAGE_COLUMNS = ("image", "img", "png", "jpg", "jpeg", "dcm", "dicom", "bytes")

SkipFn = Callable[[str, str], None]


class ReferenceSetError(SynthdataError):
    """A reference that cannot be used at all (a configured path that does not exist)."""


@dataclass(frozen=True)
class ReferenceFile:
    """One file of the reference: where it is, its id, its kind and what stat says of it."""

    path: Path
    id: str
    kind: str  # raster | dicom | nifti | tar | parquet
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    """A reference file (or a member of one) that was not used, and why."""

    id: str
    reason: str


@dataclass(frozen=True)
class RealImage:
    """One real image: its stable id, the id of its file, and its uint8 pixels."""

    id: str
    file_id: str
    pixels: np.ndarray


@dataclass(frozen=True)
class ReaderOptions:
    """Options that change which images a file yields (so they are part of cache keys)."""

    slice_axis: int = -1
    image_column: str | None = None

    @property
    def fingerprint(self) -> str:
        """Short hash of the options and the reader version."""
        blob = json.dumps({"v": READER_VERSION, "axis": self.slice_axis,
                           "column": self.image_column}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_kind(path: Path) -> str | None:
    """The kind of a file from its name (and DICOM magic for files without a suffix)."""
    name = path.name.lower()
    if name.endswith(decoders.RASTER_SUFFIXES):
        return "raster"
    if name.endswith(decoders.DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(decoders.NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if name.endswith(".parquet"):
        return "parquet"
    if "." not in name:
        try:
            with open(path, "rb") as f:
                if decoders.is_dicom_bytes(f.read(132)):
                    return "dicom"
        except OSError:
            return None
    return None


def _root_names(roots: list[Path]) -> list[str]:
    """Distinct display names of the roots: their base names, numbered when they clash."""
    names: list[str] = []
    for root in roots:
        name = root.name or "reference"
        base, n = name, 2
        while name in names:
            name, n = f"{base}~{n}", n + 1
        names.append(name)
    return names


def scan_reference(paths: list[str], base_dir: str | Path | None = None
                   ) -> tuple[list[ReferenceFile], list[Skipped]]:
    """Every usable file under the reference paths, sorted by id, and the files skipped.

    Relative paths are taken from `base_dir` (default: the current folder). A path that does
    not exist raises `ReferenceSetError`: that is a configuration mistake, not a bad file.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    roots = [(base / p) if not Path(p).is_absolute() else Path(p) for p in paths]
    missing = [str(p) for p, r in zip(paths, roots) if not r.exists()]
    if missing:
        raise ReferenceSetError(f"memorization.reference: not found: {', '.join(missing)}")
    files: list[ReferenceFile] = []
    skipped: list[Skipped] = []
    for root, name in zip(roots, _root_names(roots)):
        if root.is_file():
            candidates = [(root, name)]
        else:
            candidates = [(p, f"{name}/{p.relative_to(root).as_posix()}")
                          for p in root.rglob("*")
                          if p.is_file() and not any(part.startswith(".")
                                                     for part in p.relative_to(root).parts)]
        for path, fid in candidates:
            kind = file_kind(path)
            if kind is None:
                skipped.append(Skipped(fid, "unsupported file type"))
                continue
            st = path.stat()
            files.append(ReferenceFile(path.resolve(), fid, kind, st.st_size, st.st_mtime_ns))
    files.sort(key=lambda f: f.id)
    skipped.sort(key=lambda s: s.id)
    return files, skipped


def _tar_images(path: Path, on_skip: SkipFn) -> decoders.Decoded:
    """Image members of a (WebDataset) tar, in archive order; other members are ignored."""
    wanted = decoders.RASTER_SUFFIXES + decoders.DICOM_SUFFIXES
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith(wanted):
                continue
            suffix = f"#member={member.name}"
            try:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                for inner, image in decoders.decode_bytes(data, member.name):
                    yield suffix + inner.replace("#", ",", 1), image
            except Exception as exc:  # noqa: BLE001 - any undecodable member is skipped
                on_skip(suffix, f"unreadable member: {type(exc).__name__}: {exc}")


def _parquet_column(schema, wanted: str | None) -> str:
    """The image column of a Parquet file: the configured one, or a likely binary column."""
    import pyarrow as pa

    def is_image(field) -> bool:
        t = field.type
        return (pa.types.is_binary(t) or pa.types.is_large_binary(t)) or (
            pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)

    fields = {f.name: f for f in schema}
    if wanted is not None:
        if wanted not in fields:
            raise ValueError(f"no column {wanted!r} (columns: {', '.join(fields)})")
        return wanted
    for name in PARQUET_IMAGE_COLUMNS:
        if name in fields and is_image(fields[name]):
            return name
    for field in schema:
        if is_image(field):
            return field.name
    raise ValueError("no image column (binary, or a struct with 'bytes') found")


def _parquet_images(path: Path, column: str | None, on_skip: SkipFn) -> decoders.Decoded:
    """Images in a Parquet column of bytes (or HF-datasets {bytes, path} structs), by row."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    col = _parquet_column(pf.schema_arrow, column)
    row = 0
    for batch in pf.iter_batches(columns=[col], batch_size=64):
        for value in batch.column(0).to_pylist():
            suffix = f"#row={row}"
            row += 1
            data = value.get("bytes") if isinstance(value, dict) else value
            if not data:
                on_skip(suffix, "empty image cell")
                continue
            try:
                for inner, image in decoders.decode_bytes(data):
                    yield suffix + inner.replace("#", ",", 1), image
            except Exception as exc:  # noqa: BLE001
                on_skip(suffix, f"unreadable image: {type(exc).__name__}: {exc}")


def read_file(ref: ReferenceFile, options: ReaderOptions, on_skip: SkipFn) -> decoders.Decoded:
    """(suffix, uint8 image) for every image in one reference file.

    Raises for a file that cannot be read at all; members of containers (tar, Parquet) that
    cannot be decoded are reported through `on_skip(suffix, reason)` and passed over.
    """
    if ref.kind == "raster":
        return decoders.decode_raster(ref.path)
    if ref.kind == "dicom":
        return decoders.decode_dicom(ref.path)
    if ref.kind == "nifti":
        return decoders.decode_nifti(ref.path, options.slice_axis)
    if ref.kind == "tar":
        return _tar_images(ref.path, on_skip)
    if ref.kind == "parquet":
        return _parquet_images(ref.path, options.image_column, on_skip)
    raise ValueError(f"unknown reference kind {ref.kind!r}")


def read_file_images(ref: ReferenceFile, options: ReaderOptions
                     ) -> tuple[list[tuple[str, np.ndarray]], list[Skipped]]:
    """All images of one file (decoded fully) and what was skipped in it.

    A file that fails gives no images and one `Skipped` for the whole file.
    """
    skipped: list[Skipped] = []
    images: list[tuple[str, np.ndarray]] = []
    try:
        for suffix, image in read_file(ref, options, lambda s, r: skipped.append(
                Skipped(ref.id + s, r))):
            images.append((suffix, image))
    except Exception as exc:  # noqa: BLE001 - a bad file never stops the run
        message = str(exc).replace(str(ref.path), ref.id)  # ids, never machine paths
        return [], [Skipped(ref.id, f"unreadable {ref.kind}: {type(exc).__name__}: {message}")]
    if not images and not skipped:
        skipped.append(Skipped(ref.id, f"no images in {ref.kind} file"))
    return images, skipped


def iter_reference(paths: list[str], options: ReaderOptions | None = None,
                   base_dir: str | Path | None = None,
                   skipped: list[Skipped] | None = None) -> Iterator[RealImage]:
    """Stream every real image of a reference, in sorted file order, one file at a time.

    Files and members that are skipped are appended to `skipped` when given.
    """
    options = options or ReaderOptions()
    files, unsupported = scan_reference(paths, base_dir)
    if skipped is not None:
        skipped.extend(unsupported)
    for ref in files:
        images, bad = read_file_images(ref, options)
        if skipped is not None:
            skipped.extend(bad)
        for suffix, pixels in images:
            yield RealImage(ref.id + suffix, ref.id, pixels)
