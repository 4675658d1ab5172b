"""From table cells to template-variable values: value maps, bins, report-text cleaning.

Each mapping gives one text value per table row, or marks the row to be left out (a blank cell
without a `missing:` value). Report text is cleaned of de-identification markers and the rows
whose text held one are flagged, so plan.parquet, lineage and the report can show them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from synthdata.plan.cohort.table import Table
from synthdata.spec.cohort import ColumnMap, TextClean

MARKER_PATTERNS = {
    "underscores": r"_{3,}",                 # MIMIC-CXR: ___
    "xxxx": r"X{4,}",                        # Open-i / Indiana: XXXX
    "brackets": r"\[\*\*[^\]]*?\*\*\]",      # MIMIC-II/III: [**Known lastname 123**]
}
MAX_ERRORS = 3


class MappingError(ValueError):
    """A column that cannot be mapped as configured; the message names table, column and rows."""


@dataclass(frozen=True)
class Mapped:
    """One variable's value per table row; `left_out` rows have no value; `markers` flags text
    that held de-identification markers (text columns only, else all False)."""

    values: np.ndarray
    left_out: np.ndarray
    markers: np.ndarray


def _rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:MAX_ERRORS])
    more = f" and {len(rows) - MAX_ERRORS} more" if len(rows) > MAX_ERRORS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def number_format(value: float) -> str:
    """A number as text: integral values without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def clean_text(text: str, cfg: TextClean) -> tuple[str, bool]:
    """(cleaned text, whether it held a de-identification marker)."""
    found = False
    for name in cfg.markers:
        text, n = re.subn(MARKER_PATTERNS[name], cfg.replace_with, text)
        found = found or n > 0
    if cfg.whitespace:
        text = re.sub(r"\s+", " ", text).strip()
        text = re.sub(r" +([.,;:!?])", r"\1", text)
    return text, found


def _numbers(table: Table, column: str, present: np.ndarray, why: str) -> np.ndarray:
    cells = table.cells[column]
    out = np.full(len(cells), np.nan)
    bad = []
    for i in np.nonzero(present)[0]:
        try:
            out[i] = float(cells[i])
        except ValueError:
            bad.append(i)
        else:
            if not math.isfinite(out[i]):
                bad.append(i)
    if bad:
        raise MappingError(f"table {table.name}, column {column!r}, {_rows(np.array(bad))}: "
                           f"{cells[bad[0]]!r} is not a number ({why})")
    return out


def _bin(table: Table, cfg: ColumnMap, present: np.ndarray) -> np.ndarray:
    nums = _numbers(table, cfg.column, present, "needed for bins")
    out = np.full(len(nums), None, dtype=object)
    if cfg.bins == "decade":
        for i in np.nonzero(present)[0]:
            lo = int(math.floor(nums[i] / 10.0) * 10)
            out[i] = f"{lo}-{lo + 9}"
        return out
    edges = np.asarray(cfg.bins, dtype=float)
    names = cfg.bin_labels or [f"{number_format(a)}-{number_format(b)}" for a, b in zip(edges, edges[1:])]
    where = np.searchsorted(edges, nums, side="right") - 1
    outside = present & ((where < 0) | (where >= len(names)))
    if outside.any():
        rows = np.nonzero(outside)[0]
        raise MappingError(f"table {table.name}, column {cfg.column!r}, {_rows(rows)}: "
                           f"{table.cells[cfg.column][rows[0]]!r} is outside the bins "
                           f"[{number_format(edges[0])}, {number_format(edges[-1])})")
    for i in np.nonzero(present)[0]:
        out[i] = names[where[i]]
    return out


def _values(table: Table, cfg: ColumnMap, present: np.ndarray) -> np.ndarray:
    cells = table.cells[cfg.column]
    out = np.full(len(cells), None, dtype=object)
    unknown = []
    for i in np.nonzero(present)[0]:
        cell = str(cells[i]).strip()
        if cell in cfg.values:
            out[i] = cfg.values[cell]
        elif cfg.other is not None:
            out[i] = cfg.other
        else:
            unknown.append(i)
    if unknown:
        seen = sorted({str(cells[i]).strip() for i in unknown})
        raise MappingError(f"table {table.name}, column {cfg.column!r}, {_rows(np.array(unknown))}: "
                           f"value {seen[0]!r} is not in `values` ({', '.join(cfg.values) or 'none'})"
                           f"{'; also ' + ', '.join(map(repr, seen[1:4])) if len(seen) > 1 else ''}; "
                           "add it to `values` or set `other`")
    return out


def map_column(table: Table, cfg: ColumnMap) -> Mapped:
    """The variable's value for every row of the table (MappingError when a cell cannot map)."""
    if cfg.column not in table.cells:
        raise MappingError(f"table {table.name} has no column {cfg.column!r} "
                           f"(columns: {', '.join(table.columns)})")
    cells = table.cells[cfg.column]
    present = ~table.missing[cfg.column]
    markers = np.zeros(len(cells), dtype=bool)
    if cfg.text is not None:
        values = np.full(len(cells), None, dtype=object)
        for i in np.nonzero(present)[0]:
            values[i], markers[i] = clean_text(str(cells[i]), cfg.text)
        present = present & np.array([bool(v) for v in values], dtype=bool)
    elif cfg.bins is not None:
        values = _bin(table, cfg, present)
    elif cfg.values is not None:
        values = _values(table, cfg, present)
    else:
        values = np.array([str(c).strip() for c in cells], dtype=object)
    values = np.where(present, values, None if cfg.missing is None else cfg.missing)
    left_out = ~present if cfg.missing is None else np.zeros(len(cells), dtype=bool)
    return Mapped(values.astype(object), left_out, markers)
