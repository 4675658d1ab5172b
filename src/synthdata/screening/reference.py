"""Reference ingestion: find the real images, give each a stable id, stream their pixels.

A reference is a list of paths (folders searched recursively, or single files). Each file
becomes a `ReferenceFile` whose id is `<root name>/<path inside the root>` (a root that is a
file: its name); each image inside it gets `file id + suffix` (`#frame=N`, `#slice=S`,
`#page=N`, `#member=NAME`, `#row=N`). Files are visited in sorted id order and decoded one at
a time, so memory holds one file's pixels, never the whole reference.

Each image also gets a patient group, so calibration can compare images across patients
(`groups.group_of`): the DICOM PatientID; else a patient column (`group_column`, or a column
called like a patient id: of a Parquet table of images, of a WebDataset sample's `.json`, or
of a metadata table beside the images, `groups.metadata_groups`); else the DICOM
StudyInstanceUID; else a configured regular expression on the image id (`group_pattern`);
else a known dataset layout in the id (CheXpert's `patientNNNNN`, ...); else the image's own
file (a tar member or Parquet row counts as a file). Metadata tables (CSV/TSV, Parquet
without images) are not images: `scan_reference` leaves them out, `reference_tables` lists
them.

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

from synthdata.errors import ReferenceSetError, SynthdataError  # noqa: F401  (ReferenceSetError: re-exported)
from synthdata.folder.shards import split_member
from synthdata.screening import decoders
from synthdata.screening import groups as grouping

READER_VERSION = 2
PARQUET_IMAGE_COLUMNS = ("image", "img", "png", "jpg", "jpeg", "dcm", "dicom", "bytes")

SkipFn = Callable[[str, str], None]


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
    """One real image: stable id, file id, uint8 pixels (display), other renderings, group."""

    id: str
    file_id: str
    pixels: np.ndarray
    alternates: tuple[np.ndarray, ...] = ()
    group: str = ""

    @property
    def renderings(self) -> list[np.ndarray]:
        """The display rendering first, then the others (see `decoders.Frame`)."""
        return [self.pixels, *self.alternates]


@dataclass(frozen=True)
class ReaderOptions:
    """Options that change which images a file yields (so they are part of cache keys).

    `group_pattern` only changes groups, not images: it is applied when groups are assembled
    and is not part of the per-file fingerprint.
    """

    slice_axis: int = -1
    image_column: str | None = None
    group_column: str | None = None
    group_pattern: str | None = None

    @property
    def fingerprint(self) -> str:
        """Short hash of the options that change decoding, and the reader version."""
        blob = json.dumps({"v": READER_VERSION, "axis": self.slice_axis,
                           "column": self.image_column, "group": self.group_column},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def group_of(image_id: str, file_id: str, found: str | None, pattern: str | None,
             table: str | None = None) -> str:
    """The patient group of an image (`groups.group_of`)."""
    return grouping.group_of(image_id, file_id, found, pattern, table)


def own_file(image_id: str, file_id: str) -> str:
    """The unit that counts as a file for grouping: a tar member or Parquet row, else the file."""
    rest = image_id[len(file_id):]
    if rest.startswith(("#member=", "#row=")):
        return file_id + rest.split(",", 1)[0]
    return file_id


def file_kind(path: Path) -> str | None:
    """The kind of a file from its name (and DICOM magic for files without a suffix);
    `table` for a metadata table (CSV/TSV, or Parquet without an image column)."""
    name = path.name.lower()
    if grouping.is_table(path):
        return "table"
    if name.endswith(decoders.RASTER_SUFFIXES):
        return "raster"
    if name.endswith(decoders.DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(decoders.NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if name.endswith(".parquet"):
        return _parquet_kind(path)
    if "." not in name:
        try:
            with open(path, "rb") as f:
                if decoders.is_dicom_bytes(f.read(132)):
                    return "dicom"
        except OSError:
            return None
    return None


NOT_A_TABLE = ("no image column (binary, or a struct with 'bytes') found, and not a metadata "
               "table (that needs a column naming the images and a patient column)")


def _parquet_kind(path: Path) -> str | None:
    """`parquet` for a Parquet file with a column of image bytes (or one that cannot be read:
    the image reader then reports it), `table` for a metadata table (two columns or more),
    None for anything else (listed as skipped, never silently dropped)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        _parquet_column(schema, None)
    except ValueError:
        return "table" if len(schema.names) >= 2 else None
    except Exception:  # noqa: BLE001 - not readable: let the image reader report it
        return "parquet"
    return "parquet"


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


def _roots(paths: list[str], base_dir: str | Path | None) -> list[Path]:
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    roots = [(base / p) if not Path(p).is_absolute() else Path(p) for p in paths]
    missing = [str(p) for p, r in zip(paths, roots) if not r.exists()]
    if missing:
        raise ReferenceSetError(f"memorization.reference: not found: {', '.join(missing)}")
    return roots


def _scan(paths: list[str], base_dir: str | Path | None
          ) -> tuple[list[ReferenceFile], list[Skipped], list[ReferenceFile]]:
    """(image files, skipped files, metadata tables) under the reference paths, by id."""
    roots = _roots(paths, base_dir)
    files: list[ReferenceFile] = []
    skipped: list[Skipped] = []
    tables: list[ReferenceFile] = []
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
                skipped.append(Skipped(fid, NOT_A_TABLE if path.name.lower().endswith(".parquet")
                                        else "unsupported file type"))
                continue
            st = path.stat()
            ref = ReferenceFile(path.resolve(), fid, kind, st.st_size, st.st_mtime_ns)
            (tables if kind == "table" else files).append(ref)
    files.sort(key=lambda f: f.id)
    skipped.sort(key=lambda s: s.id)
    tables.sort(key=lambda f: f.id)
    return files, skipped, tables


def scan_reference(paths: list[str], base_dir: str | Path | None = None
                   ) -> tuple[list[ReferenceFile], list[Skipped]]:
    """Every image file under the reference paths, sorted by id, and the files skipped
    (metadata tables are neither: see `reference_groups`).

    Relative paths are taken from `base_dir` (default: the current folder). A path that does
    not exist raises `ReferenceSetError`: that is a configuration mistake, not a bad file.
    """
    files, skipped, _ = _scan(paths, base_dir)
    return files, skipped


def reference_groups(paths: list[str], options: ReaderOptions,
                     base_dir: str | Path | None = None) -> grouping.MetadataGroups:
    """The groups metadata tables give the reference's image files (`groups.py`)."""
    files, _, tables = _scan(paths, base_dir)
    meta = grouping.metadata_groups([t.path for t in tables], [f.path for f in files],
                                    _roots(paths, base_dir), options.group_column)
    ids = {str(t.path): t.id for t in tables}
    meta.tables = [{**t, "table": ids.get(t["table"], Path(t["table"]).name)}
                   for t in meta.tables]
    return meta


def _frames(data: bytes, name: str, suffix: str, group: str | None) -> decoders.Decoded:
    """Frames of an image held in memory, suffixed; the container's group where none found."""
    for frame in decoders.decode_bytes(data, name):
        yield decoders.Frame(suffix + frame.suffix.replace("#", ",", 1), frame.image,
                             frame.alternates, frame.group or group)


def _column_group(value) -> str | None:
    return None if value is None or str(value).strip() == "" else f"column:{value}"


def _tar_images(path: Path, group_column: str | None, on_skip: SkipFn) -> decoders.Decoded:
    """Image members of a (WebDataset) tar, in archive order; other members are ignored.

    With `group_column`, each sample's group is that field of its `.json` member (WebDataset
    keeps a sample's members together; the json may come before or after the image).
    """
    wanted = decoders.RASTER_SUFFIXES + decoders.DICOM_SUFFIXES
    pending: list[tuple[str, bytes]] = []
    key, group = None, None

    def flush() -> decoders.Decoded:
        for name, data in pending:
            suffix = f"#member={name}"
            try:
                yield from _frames(data, name, suffix, group)
            except Exception as exc:  # noqa: BLE001 - any undecodable member is skipped
                on_skip(suffix, f"unreadable member: {type(exc).__name__}: {exc}")
        pending.clear()

    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            sample = split_member(name)[0]  # WebDataset's sample key
            if sample != key:
                yield from flush()
                key, group = sample, None
            if group_column and name.lower().endswith(".json"):
                try:
                    meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    group = _column_group(meta.get(group_column)) if isinstance(meta, dict) \
                        else None
                except (ValueError, UnicodeDecodeError):
                    group = None
            elif name.lower().endswith(wanted):
                pending.append((name, tar.extractfile(member).read()))  # type: ignore[union-attr]
        yield from flush()


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


def _parquet_images(path: Path, column: str | None, group_column: str | None,
                    on_skip: SkipFn) -> decoders.Decoded:
    """Images in a Parquet column of bytes (or HF-datasets {bytes, path} structs), by row."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    col = _parquet_column(pf.schema_arrow, column)
    names = [f.name for f in pf.schema_arrow]
    if group_column is not None and group_column not in names:
        raise ValueError(f"no group column {group_column!r} (columns: {', '.join(names)})")
    columns = [col] + ([group_column] if group_column else [])
    row = 0
    for batch in pf.iter_batches(columns=columns, batch_size=64):
        groups = batch.column(1).to_pylist() if group_column else [None] * batch.num_rows
        for value, g in zip(batch.column(0).to_pylist(), groups):
            suffix = f"#row={row}"
            row += 1
            data = value.get("bytes") if isinstance(value, dict) else value
            if not data:
                on_skip(suffix, "empty image cell")
                continue
            try:
                yield from _frames(data, "", suffix, _column_group(g))
            except Exception as exc:  # noqa: BLE001
                on_skip(suffix, f"unreadable image: {type(exc).__name__}: {exc}")


def read_file(ref: ReferenceFile, options: ReaderOptions, on_skip: SkipFn) -> decoders.Decoded:
    """Every image (`decoders.Frame`) in one reference file.

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
        return _tar_images(ref.path, options.group_column, on_skip)
    if ref.kind == "parquet":
        return _parquet_images(ref.path, options.image_column, options.group_column, on_skip)
    raise ValueError(f"unknown reference kind {ref.kind!r}")


def read_file_images(ref: ReferenceFile, options: ReaderOptions
                     ) -> tuple[list[decoders.Frame], list[Skipped]]:
    """All images of one file (decoded fully) and what was skipped in it.

    A file that fails gives no images and one `Skipped` for the whole file.
    """
    skipped: list[Skipped] = []
    images: list[decoders.Frame] = []
    try:
        for frame in read_file(ref, options, lambda s, r: skipped.append(
                Skipped(ref.id + s, r))):
            images.append(frame)
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
    yield from iter_files(files, options, skipped,
                          reference_groups(paths, options, base_dir))


def iter_files(files: list[ReferenceFile], options: ReaderOptions,
               skipped: list[Skipped] | None = None,
               meta: grouping.MetadataGroups | None = None) -> Iterator[RealImage]:
    """Every real image of the given files, in their order, one file at a time (groups
    from `meta`'s tables where they name a file)."""
    for ref in files:
        images, bad = read_file_images(ref, options)
        if skipped is not None:
            skipped.extend(bad)
        table = meta.group(ref.path) if meta is not None else None
        for frame in images:
            image_id = ref.id + frame.suffix
            group = group_of(image_id, own_file(image_id, ref.id), frame.group,
                             options.group_pattern, table)
            yield RealImage(image_id, ref.id, frame.image, frame.alternates, group)
