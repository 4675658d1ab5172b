"""Which table rows belong to which label, and the deterministic draw of a row per sample.

Rules (also in docs/cohorts.md):
- A row is used when `filter` (if any) holds, every mapped variable has a value (or a
  `missing:` default) and a label's `where` holds. Labels are tried in spec order; a row
  takes the first label whose `where` holds. Rows matching no label are left out.
- Finding columns (1 positive, 0 negative, -1 uncertain, blank) used by a `where` or the
  `filter`: `uncertain` reads -1 as 0 (negative), 1 (positive) or leaves the row out (exclude);
  `missing` reads a blank as 0 (negative) or leaves the row out (exclude). Every left-out row is
  counted by reason.
- Sample draw: the plan's permutation puts sample i at position p of the label layout, so it is
  the k-th sample of its label (k = p - the label's first position). With `stratify`, the
  label's samples are apportioned over its strata (largest remainder: proportional to the
  strata's rows, or equal) and k falls in one stratum. Within the (label, stratum) group of m
  rows, sample k takes row perm_c(k mod m), where perm_c is a keyed bijection of [0, m) for
  cycle c = k div m. So every row of a group is used once before any is used twice, and a
  sample's row is a function of (spec, table content, index) alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synthdata.plan.cohort import expr
from synthdata.plan.cohort.columns import Mapped, MappingError, map_column
from synthdata.plan.cohort.table import Table
from synthdata.spec.cohort import Cohort
from synthdata.plan.seeds import SEED_MASK, apportion, mix, permute

_STREAM_COHORT = 0xC0407
FieldPath = tuple[str | int, ...]


class CohortProblems(Exception):
    """Problems found building a cohort, each as (spec field path, message)."""

    def __init__(self, problems: list[tuple[FieldPath, str]]):
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


@dataclass
class CohortIndex:
    """The cohort of one spec over one table: values per row, rows per label and stratum."""

    sha256: str
    table_rows: int
    label_names: list[str]
    variables: dict[str, np.ndarray]
    markers: np.ndarray
    patients: np.ndarray | None
    label_rows: list[np.ndarray]
    strata_of: list[list[tuple[tuple[str, ...], np.ndarray]]] | None
    allocation: str
    left_out: dict[str, int]
    findings: list[str]
    overlapping_rows: int
    _groups: dict = field(default_factory=dict, repr=False)

    @property
    def used_rows(self) -> int:
        """Rows that belong to a label."""
        return int(sum(len(r) for r in self.label_rows))

    def mirror_counts(self, total: int | None) -> list[int]:
        """Per-label counts proportional to the table's rows per label (largest remainder)."""

        sizes = [len(r) for r in self.label_rows]
        return apportion(self.used_rows if total is None else total, sizes)

    def groups(self, label: int, count: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(row groups, samples allocated to each) of a label with `count` samples."""
        key = (label, count)
        if key not in self._groups:
            if self.strata_of is None:
                groups = [self.label_rows[label]]
                alloc = [count]
            else:
                groups = [rows for _, rows in self.strata_of[label]]
                weights = [len(g) if self.allocation == "proportional" else 1 for g in groups]
                alloc = apportion(count, weights)
            self._groups[key] = (groups, np.asarray(alloc, dtype=np.int64))
        return self._groups[key]

    def draw(self, seed: int, label_idx: np.ndarray, rank: np.ndarray, counts: list[int]) -> np.ndarray:
        """The table row of each sample, given its label and rank within the label."""

        rows = np.empty(len(rank), dtype=np.int64)
        for li in np.unique(label_idx):
            sel = np.nonzero(label_idx == li)[0]
            groups, alloc = self.groups(int(li), counts[li])
            ends = np.cumsum(alloc)
            k = rank[sel]
            g = np.searchsorted(ends, k, side="right")
            k_in = k - (ends[g] - alloc[g])
            for gi in np.unique(g):
                members = groups[gi]
                m = len(members)
                at = np.nonzero(g == gi)[0]
                cycle, j = np.divmod(k_in[at], m)
                keys = mix(seed, _STREAM_COHORT, int(li), int(gi), cycle.astype(np.uint64)) & np.uint64(SEED_MASK)
                rows[sel[at]] = members[permute(j, m, keys)]
        return rows

    def strata(self, label: int) -> list[tuple[str, ...]]:
        """The strata keys of a label, in draw order ([()] without stratification)."""
        return [()] if self.strata_of is None else [k for k, _ in self.strata_of[label]]


def _is_finding(table: Table, column: str) -> bool:
    cells, missing = table.cells[column], table.missing[column]
    for c in cells[~missing]:
        try:
            if float(c) not in (-1.0, 0.0, 1.0):
                return False
        except ValueError:
            return False
    return True


def _normalise_findings(table: Table, cohort: Cohort, columns: list[str], cells: dict, missing: dict,
                        left_out: dict[str, np.ndarray]) -> None:
    """Apply the uncertain/missing rules to finding columns, in place on copies of the cells."""
    for col in columns:
        values = table.cells[col].copy()
        miss = table.missing[col].copy()
        nums = np.array([float(v) if not m else np.nan for v, m in zip(values, miss)])
        uncertain = nums == -1.0
        if cohort.uncertain == "exclude":
            left_out[f"uncertain (-1) in {col}"] = uncertain
        else:
            values[uncertain] = "0" if cohort.uncertain == "negative" else "1"
        if cohort.missing == "exclude":
            left_out[f"blank in {col}"] = miss.copy()
        else:
            values[miss] = "0"
            miss[:] = False
        cells[col], missing[col] = values, miss


def _compile(text: str, table: Table, path: FieldPath, problems: list) -> object | None:
    try:
        return expr.compile_expression(text, table.columns)
    except expr.ExprError as exc:
        problems.append((path, f"in {text!r}: {exc}"))
        return None


def build_index(cohort: Cohort, table: Table, wheres: dict[str, str | None]) -> CohortIndex:
    """Evaluate the cohort over the table; CohortProblems lists everything that is wrong."""
    problems: list[tuple[FieldPath, str]] = []
    compiled = {name: _compile(w, table, ("labels", name, "where"), problems)
                for name, w in wheres.items() if w is not None}
    for name, w in wheres.items():
        if w is None:
            problems.append((("labels", name), "cohort specs need `where:` on every label "
                             "(an expression over the table's columns; `true` takes every row left)"))
    filt = _compile(cohort.filter, table, ("cohort", "filter"), problems) if cohort.filter else None
    mapped: dict[str, Mapped] = {}
    for var, cfg in cohort.columns.items():
        try:
            mapped[var] = map_column(table, cfg)
        except MappingError as exc:
            problems.append((("cohort", "columns", var), str(exc)))
    patients = None
    if cohort.patient_column is not None:
        if cohort.patient_column not in table.cells:
            problems.append((("cohort", "patient_column"), f"table {table.name} has no column "
                             f"{cohort.patient_column!r} (columns: {', '.join(table.columns)})"))
        else:
            blank = np.nonzero(table.missing[cohort.patient_column])[0]
            if len(blank):
                problems.append((("cohort", "patient_column"), f"table {table.name}, column "
                                 f"{cohort.patient_column!r}, row {int(blank[0])}: blank patient id "
                                 f"({len(blank)} such rows)"))
            patients = table.cells[cohort.patient_column]
    if problems:
        raise CohortProblems(problems)
    used = sorted({c.name for node in [*compiled.values(), filt] if node is not None
                   for c in expr.columns_of(node)})
    if cohort.findings == "auto":
        findings = [c for c in used if _is_finding(table, c)]
    else:
        findings = list(cohort.findings)
        for col in findings:
            if col not in table.cells:
                problems.append((("cohort", "findings"), f"table {table.name} has no column {col!r}"))
            elif not _is_finding(table, col):
                problems.append((("cohort", "findings"), f"table {table.name}, column {col!r}: "
                                 "values other than 1, 0, -1 and blank"))
        if problems:
            raise CohortProblems(problems)
        findings = [c for c in findings if c in used]
    cells, missing = dict(table.cells), dict(table.missing)
    reasons: dict[str, np.ndarray] = {}
    _normalise_findings(table, cohort, findings, cells, missing, reasons)
    frame = expr.Frame(cells, missing, cohort.separator, f"table {table.name}")
    n = table.n_rows
    keep = np.ones(n, dtype=bool)
    matches = {}
    for path, node in [(("cohort", "filter"), filt),
                       *[(("labels", name, "where"), node) for name, node in compiled.items()]]:
        if node is None:
            continue
        try:
            result = expr.evaluate(node, frame)
        except expr.ExprError as exc:
            text = cohort.filter if path[0] == "cohort" else wheres[path[1]]
            problems.append((path, f"in {text!r}: {exc}"))
            continue
        if path[0] == "cohort":
            reasons["filter is false"] = ~result
        else:
            matches[path[1]] = result
    if problems:
        raise CohortProblems(problems)
    for var, m in mapped.items():
        reasons[f"blank {cohort.columns[var].column} ({var})"] = m.left_out
    left_out: dict[str, int] = {}
    for reason, mask in reasons.items():
        newly = mask & keep
        if newly.any():
            left_out[reason] = int(newly.sum())
        keep &= ~mask
    label_of = np.full(n, -1, dtype=np.int64)
    hits = np.zeros(n, dtype=np.int64)
    for li, name in enumerate(wheres):
        hit = matches[name] & keep
        hits += hit
        label_of[(label_of < 0) & hit] = li
    if ((label_of < 0) & keep).any():
        left_out["matches no label"] = int(((label_of < 0) & keep).sum())
    label_rows = [np.nonzero(label_of == li)[0].astype(np.int64) for li in range(len(wheres))]
    for name, rows in zip(wheres, label_rows):
        if not len(rows):
            problems.append((("labels", name, "where"), f"no row of table {table.name} is left for "
                             f"this label (rows: {n}; left out: {left_out or 'none'}; a row takes "
                             "the first label whose `where` holds)"))
    strata_of = None
    if cohort.stratify is not None:
        unknown = [v for v in cohort.stratify.by if v not in mapped]
        if unknown:
            problems.append((("cohort", "stratify", "by"), f"not cohort variables: {', '.join(unknown)}"
                             f" (known: {', '.join(mapped) or 'none'})"))
        else:
            strata_of = [_strata(rows, [mapped[v].values for v in cohort.stratify.by])
                         for rows in label_rows]
    if problems:
        raise CohortProblems(problems)
    markers = np.zeros(n, dtype=bool)
    for m in mapped.values():
        markers |= m.markers
    return CohortIndex(
        sha256=table.sha256, table_rows=n, label_names=list(wheres),
        variables={v: m.values for v, m in mapped.items()}, markers=markers, patients=patients,
        label_rows=label_rows, strata_of=strata_of,
        allocation=cohort.stratify.allocation if cohort.stratify else "proportional",
        left_out=left_out, findings=findings, overlapping_rows=int(((hits > 1) & keep).sum()))


def _strata(rows: np.ndarray, columns: list[np.ndarray]) -> list[tuple[tuple[str, ...], np.ndarray]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for r in rows:
        groups.setdefault(tuple(str(c[r]) for c in columns), []).append(int(r))
    return [(k, np.asarray(groups[k], dtype=np.int64)) for k in sorted(groups)]
