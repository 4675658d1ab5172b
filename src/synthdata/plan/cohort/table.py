"""Reading a cohort table (CSV or Parquet) into text cells with a missing mask.

Every cell is kept as text exactly as written (CSV) or as the value's plain text (Parquet:
integers and integral floats without a decimal point, booleans as true/false), and a cell that
is empty or only whitespace is *missing*. Nothing is guessed: numbers are parsed only where a
mapping or an expression needs them, and an error then names the file, column and row. Rows are
counted from 0 (the first data row), as in plan.parquet's `source_row`.
"""

from __future__ import annotations

import csv
import gzip
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdata.errors import SynthdataError
from synthdata.fsutil import sha256_file

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
_CACHE: OrderedDict[tuple, Table] = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


class TableError(SynthdataError):
    """A cohort table that cannot be read or used; the message names the file (and column, row)."""


@dataclass(frozen=True)
class Table:
    """A table's cells as text, column by column, with its content hash."""

    path: Path
    sha256: str
    columns: list[str]
    cells: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]

    @property
    def n_rows(self) -> int:
        """Number of data rows."""
        return len(next(iter(self.cells.values()))) if self.cells else 0

    @property
    def name(self) -> str:
        """How errors name the table: its file name."""
        return self.path.name


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _read_csv(path: Path) -> dict[str, list[str]]:
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise TableError(f"{path}: the table is empty (no header row)") from None
        except csv.Error as exc:
            raise TableError(f"{path}: not a readable CSV header ({exc})") from None
        seen: set[str] = set()
        for name in header:
            if not name.strip():
                raise TableError(f"{path}: the header has an empty column name")
            if name in seen:
                raise TableError(f"{path}: column {name!r} appears twice in the header")
            seen.add(name)
        columns: dict[str, list[str]] = {h: [] for h in header}
        lists = list(columns.values())
        try:
            for row in reader:
                if len(row) != len(header):
                    if not row:
                        continue
                    raise TableError(f"{path}: row {len(lists[0])} (line {reader.line_num}) has "
                                     f"{len(row)} cells; the header has {len(header)}")
                for values, cell in zip(lists, row):
                    values.append(cell)
        except csv.Error as exc:
            raise TableError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
    return columns


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _read_parquet(path: Path) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise TableError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    names = table.column_names
    if len(set(names)) != len(names):
        raise TableError(f"{path}: a column name appears twice")
    return {name: [_text(v) for v in table.column(name).to_pylist()] for name in names}


def read_table(path: str | Path) -> Table:
    """Read a CSV/TSV (optionally .gz) or Parquet table; cached per file version in this process."""
    p = Path(path)
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise TableError(f"{p}: no such file (cohort.table is taken from the spec file's folder)") from None
    if not p.is_file():
        raise TableError(f"{p}: not a file")
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    suffix = _suffix(p)
    if suffix in PARQUET_SUFFIXES:
        data = _read_parquet(p)
    elif suffix in CSV_SUFFIXES:
        try:
            data = _read_csv(p)
        except UnicodeDecodeError as exc:
            raise TableError(f"{p}: not UTF-8 text ({exc.reason})") from None
    else:
        raise TableError(f"{p}: unknown table format; expected {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
    cells = {k: np.array(v, dtype=object) for k, v in data.items()}
    missing = {k: np.array([not str(c).strip() for c in v], dtype=bool) for k, v in cells.items()}
    table = Table(p, sha256_file(p), list(cells), cells, missing)
    if table.n_rows == 0:
        raise TableError(f"{p}: the table has a header but no rows")
    with _LOCK:
        _CACHE[key] = table
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return table
