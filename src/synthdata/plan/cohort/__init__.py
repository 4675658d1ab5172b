"""Cohort-driven specs: labels and variables drawn from rows of a table of real metadata.

- `table.py` reads CSV/Parquet into text cells (errors name file, column, row);
- `expr.py` is the label expression language (a grammar, never `eval`);
- `columns.py` maps columns to variables (value maps, bins, report-text cleaning);
- `rows_index.py` decides which rows belong to which label and draws a row per sample;
- `report.py` compares requested, planned and realized joint distributions.

The plan (`synthdata.plan`) calls `cohort_index(spec)`; `check_cohort` runs when a spec is
loaded and fills in the table's sha256, which is part of the spec hash.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import numpy as np

from synthdata.plan.cohort.rows_index import CohortIndex, CohortProblems, build_index
from synthdata.plan.cohort.table import Table, TableError, read_table
from synthdata.spec.models import Spec
from synthdata.privacy import pseudonymize_many
from synthdata.privacy import remember

__all__ = ["CohortIndex", "TableError", "check_cohort", "cohort_index", "row_pseudonyms",
           "patient_pseudonyms", "remember_rows", "ROW_KIND", "PATIENT_KIND"]

ROW_KIND = "cohort-row"
PATIENT_KIND = "patient"
_CACHE: OrderedDict[tuple, CohortIndex] = OrderedDict()
_LOCK = threading.Lock()


def _table(spec: Spec) -> Table:
    cohort = spec.cohort
    table = read_table(cohort.table)
    if cohort.sha256 is not None and table.sha256 != cohort.sha256:
        raise TableError(f"{cohort.table}: the table changed since the spec was resolved (sha256 "
                         f"{table.sha256[:12]}..., the spec records {cohort.sha256[:12]}...); restore "
                         "it, or remove cohort.sha256 to make a new dataset from the new table")
    return table


def _index(spec: Spec, table: Table) -> CohortIndex:
    key = (table.sha256, spec.cohort.model_dump_json(exclude={"table", "sha256", "report"}),
           json.dumps({k: v.where for k, v in spec.labels.items()}))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    index = build_index(spec.cohort, table, {k: v.where for k, v in spec.labels.items()})
    with _LOCK:
        _CACHE[key] = index
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return index


def cohort_index(spec: Spec) -> CohortIndex:
    """The cohort of a validated spec (cached per table content and cohort settings)."""
    if spec.cohort is None:
        raise ValueError(f"spec {spec.name!r} has no cohort section")
    try:
        return _index(spec, _table(spec))
    except CohortProblems as exc:
        raise TableError(f"{spec.cohort.table}: {exc}") from None


def check_cohort(spec: Spec) -> tuple[Spec, list[tuple[tuple, str]]]:
    """Read and check the spec's cohort table; return the spec with `cohort.sha256` filled in,
    and every problem as (field path, message)."""
    cohort = spec.cohort
    try:
        table = _table(spec)
    except TableError as exc:
        field = ("cohort", "sha256") if "changed since" in str(exc) else ("cohort", "table")
        return spec, [(field, str(exc))]
    try:
        _index(spec, table)
    except CohortProblems as exc:
        return spec, exc.problems
    return spec.model_copy(update={"cohort": cohort.model_copy(update={"sha256": table.sha256})}), []


def row_pseudonyms(spec: Spec, rows) -> list[str]:
    """plan.parquet's `source_row` of table rows: the row number, or with a `patient_column` a
    pseudonym of (table sha256, row) keyed by this machine's pseudonym key."""
    if spec.cohort.patient_column is None:
        return [str(int(r)) for r in rows]

    sha = cohort_index(spec).sha256
    unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    names = pseudonymize_many([f"{sha}:{int(r)}" for r in unique], ROW_KIND)
    return [names[i] for i in inverse]


def patient_pseudonyms(spec: Spec, rows) -> list[str | None]:
    """plan.parquet's `source_patient`: a pseudonym of the row's patient id (None without a
    `patient_column`)."""
    if spec.cohort.patient_column is None:
        return [None] * len(rows)

    patients = cohort_index(spec).patients
    unique, inverse = np.unique(patients[np.asarray(rows, dtype=np.int64)].astype(str), return_inverse=True)
    names = pseudonymize_many(unique.tolist(), PATIENT_KIND)
    return [names[i] for i in inverse]


def remember_rows(spec: Spec, rows) -> None:
    """Store the map back from this plan's pseudonyms in the private folder (patient tables)."""
    if spec.cohort.patient_column is None:
        return

    index = cohort_index(spec)
    unique = sorted({int(r) for r in rows})
    remember([f"{index.sha256}:{r}" for r in unique], ROW_KIND)
    remember(sorted({str(index.patients[r]) for r in unique}), PATIENT_KIND)
