"""The deterministic plan: every sample's label, prompt, variables and seed, before any GPU work.

Each sample is a pure function of (spec, sample index): labels are laid out by exact
largest-remainder counts and spread over indices by a keyed permutation (a small Feistel
network), and every random choice comes from a counter-based hash of (seed, index, stream).
So one sample can be re-derived alone, and planning streams in chunks of constant memory.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthdata.spec import Spec
from synthdata.spec.models import Categorical, IntRange
from synthdata.fsutil import atomic_path
from synthdata.plan.cohort import cohort_index, patient_pseudonyms, remember_rows, row_pseudonyms
from synthdata.plan.seeds import SEED_MASK, apportion, mix, permute  # noqa: F401  (part of the plan API)

CHUNK_ROWS = 65_536
_STREAM_SEED, _STREAM_TEMPLATE, _STREAM_ATTEMPT = 0, 2, 3  # 1: seeds.STREAM_PERM

PLAN_SCHEMA = pa.schema([
    ("index", pa.int64()), ("key", pa.string()), ("label", pa.string()),
    ("label_index", pa.int32()), ("template_index", pa.int32()), ("prompt", pa.string()),
    ("negative_prompt", pa.string()), ("vars", pa.string()), ("seed", pa.int64()),
    ("steps", pa.int32()), ("guidance_scale", pa.float64()), ("shard", pa.int32()),
    ("batch", pa.int32()),
])
# Cohort specs add: the table row (its number, or a pseudonym when the table names patients),
# the patient's pseudonym, and whether the row's report text held de-identification markers.
COHORT_FIELDS = [("source_row", pa.string()), ("source_patient", pa.string()),
                 ("deid_markers", pa.bool_())]
# What the plan hash covers besides PLAN_SCHEMA for cohort specs: machine-independent values
# only (the raw row number stands for source_row and source_patient, whose pseudonyms depend
# on this machine's key).
COHORT_HASHED = ["deid_markers", "source_row_number"]


def plan_schema(spec: Spec) -> pa.Schema:
    """The columns of plan.parquet for this spec."""
    if spec.cohort is None:
        return PLAN_SCHEMA
    return pa.schema([*PLAN_SCHEMA, *[pa.field(n, t) for n, t in COHORT_FIELDS]])


def _name_word(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def _uniform(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def label_counts(spec: Spec) -> dict[str, int]:
    """Exact number of samples per label, in spec order."""
    if spec.cohort is not None and spec.cohort.mode == "mirror":
        return dict(zip(spec.labels, cohort_index(spec).mirror_counts(spec.count)))
    fixed = {k: v.count for k, v in spec.labels.items() if v.count is not None}
    weighted = [k for k in spec.labels if k not in fixed]
    rest = (spec.count or 0) - sum(fixed.values()) if weighted else 0
    shares = apportion(rest, [spec.labels[k].weight if spec.labels[k].weight is not None else 1.0
                              for k in weighted])
    share_of = dict(zip(weighted, shares))
    return {k: fixed.get(k, share_of.get(k, 0)) for k in spec.labels}


def total_count(spec: Spec) -> int:
    """Number of samples the spec plans."""
    return sum(label_counts(spec).values())


def _sample_var(var: IntRange | Categorical, u: np.ndarray) -> np.ndarray:
    if isinstance(var, IntRange):
        span = var.max - var.min + 1
        return (var.min + np.minimum(np.floor(u * span), span - 1)).astype(np.int64).astype(str)
    cum = np.cumsum(np.asarray(var.weights, dtype=np.float64))
    pick = np.searchsorted(cum / cum[-1], u, side="right")
    return np.asarray(var.values, dtype=object)[np.minimum(pick, len(var.values) - 1)]


def attempt_seed(spec_seed: int, index: int | np.ndarray, attempt: int | np.ndarray) -> int | np.ndarray:
    """The generation seed of a sample's attempt: attempt 0 is the planned seed (plan.parquet's
    `seed`); attempt a > 0 (a regeneration after QC or screening) a seed derived from
    (spec seed, index, a) alone. Ints in, int out; arrays in, int64 array out."""
    idx = np.asarray(index, dtype=np.uint64)
    att = np.asarray(attempt, dtype=np.int64)
    if (att < 0).any():
        raise ValueError("attempt must be >= 0")
    first = mix(spec_seed, _STREAM_SEED, idx)
    later = mix(spec_seed, _STREAM_ATTEMPT, idx, att.astype(np.uint64))
    seeds = (np.where(att == 0, first, later) & np.uint64(SEED_MASK)).astype(np.int64)
    return int(seeds) if seeds.ndim == 0 else seeds


def derive_rows(spec: Spec, start: int, stop: int) -> pa.Table:
    """Plan rows [start, stop) of the spec, computed from (spec, index) alone (and, for cohort
    specs, the table's content)."""
    return _derive(spec, start, stop)[0]


def _derive(spec: Spec, start: int, stop: int) -> tuple[pa.Table, np.ndarray | None]:
    """(plan rows [start, stop), their cohort table rows or None)."""
    counts = list(label_counts(spec).values())
    n = sum(counts)
    stop = min(stop, n)
    idx = np.arange(start, stop, dtype=np.int64)
    bounds = np.cumsum(counts)
    position = permute(idx, n, spec.seed)
    label_idx = np.searchsorted(bounds, position, side="right")
    source = cohort = None
    if spec.cohort is not None:
        cohort = cohort_index(spec)
        rank = position - (bounds - np.asarray(counts))[label_idx]
        source = cohort.draw(spec.seed, label_idx, rank, counts)
    names = spec.label_names
    gen = spec.generator
    cols: dict[str, list] = {c: [None] * len(idx) for c in
                             ("template_index", "prompt", "negative_prompt", "vars", "steps", "guidance_scale")}
    for li in np.unique(label_idx):
        label = spec.labels[names[li]]
        where = np.nonzero(label_idx == li)[0]
        sub = idx[where].astype(np.uint64)
        tmpl = np.floor(_uniform(mix(spec.seed, _STREAM_TEMPLATE, sub)) * len(label.prompts)).astype(int)
        variables = {**spec.vars, **label.vars}
        drawn = {v: _sample_var(d, _uniform(mix(spec.seed, _name_word(v), sub)))
                 for v, d in sorted(variables.items())}
        over = label.generator
        neg = over.negative_prompt if over.negative_prompt is not None else gen.negative_prompt
        steps = over.steps or gen.steps
        guidance = over.guidance_scale if over.guidance_scale is not None else gen.guidance_scale
        for j, row in enumerate(where):
            values = {v: str(d[j]) for v, d in drawn.items()}
            if cohort is not None:
                values.update({v: str(col[source[row]]) for v, col in cohort.variables.items()})
            cols["template_index"][row] = int(tmpl[j])
            cols["prompt"][row] = label.prompts[tmpl[j]].format(**values)
            cols["vars"][row] = json.dumps(values, sort_keys=True)
            cols["negative_prompt"][row] = neg
            cols["steps"][row] = steps
            cols["guidance_scale"][row] = guidance
    size, batch = spec.shards.size, gen.batch_size
    seeds = attempt_seed(spec.seed, idx, 0) if len(idx) else np.zeros(0, dtype=np.int64)
    data = {
        "index": idx, "key": [f"{spec.name}-{i:09d}" for i in idx],
        "label": [names[i] for i in label_idx], "label_index": label_idx.astype(np.int32),
        **cols, "seed": seeds, "shard": (idx // size).astype(np.int32),
        "batch": ((idx % size) // batch).astype(np.int32),
    }
    if cohort is not None:
        data.update(source_row=row_pseudonyms(spec, source), source_patient=patient_pseudonyms(spec, source),
                    deid_markers=cohort.markers[source])
    return pa.Table.from_pydict(data, schema=plan_schema(spec)), source


def iter_plan(spec: Spec, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    """The whole plan in chunks of at most chunk_rows rows."""
    for table, _ in _iter_derived(spec, chunk_rows):
        yield table


def _iter_derived(spec: Spec, chunk_rows: int) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    n = total_count(spec)
    for start in range(0, n, chunk_rows):
        yield _derive(spec, start, start + chunk_rows)


def shard_count(spec: Spec) -> int:
    """Number of shards the plan fills."""
    return math.ceil(total_count(spec) / spec.shards.size)


def shard_rows(spec: Spec, shard: int) -> pa.Table:
    """The plan rows of one shard: rows [shard*S, (shard+1)*S)."""
    size = spec.shards.size
    return derive_rows(spec, shard * size, (shard + 1) * size)


class PlanHasher:
    """sha256 of a plan, the same whatever the chunk size and stable across pyarrow versions.

    Covers PLAN_SCHEMA's columns, and for cohort plans COHORT_HASHED: pseudonyms (source_row,
    source_patient) are machine-local, so the raw table row numbers stand for them.
    """

    def __init__(self, cohort: bool = False) -> None:
        names = PLAN_SCHEMA.names + (COHORT_HASHED if cohort else [])
        self._columns = {name: hashlib.sha256() for name in names}

    def update(self, table: pa.Table, source_rows: np.ndarray | None = None) -> None:
        """Add the next rows of the plan (and, for cohort plans, their table row numbers)."""
        for name, h in self._columns.items():
            if name == "source_row_number":
                h.update(np.asarray(source_rows, dtype="<i8").tobytes())
                continue
            col = table.column(name)
            if pa.types.is_string(col.type):
                for value in col.to_pylist():
                    h.update(value.encode() + b"\x00")
            else:
                values = col.to_numpy()
                h.update(values.astype(values.dtype.newbyteorder("<")).tobytes())

    def hexdigest(self) -> str:
        """The plan hash."""
        top = hashlib.sha256()
        for name, h in self._columns.items():
            top.update(f"{name}={h.hexdigest()};".encode())
        return top.hexdigest()


def write_plan(spec: Spec, path: str | Path, chunk_rows: int = CHUNK_ROWS) -> str:
    """Write the plan to a parquet file atomically, in chunks; return the plan hash."""

    h = PlanHasher(cohort=spec.cohort is not None)
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, plan_schema(spec)) as writer:
            for chunk, source in _iter_derived(spec, chunk_rows):
                h.update(chunk, source)
                if source is not None:
                    remember_rows(spec, source)
                writer.write_table(chunk, row_group_size=chunk_rows)
    return h.hexdigest()


def plan_hash(spec: Spec, chunk_rows: int = CHUNK_ROWS) -> str:
    """The plan hash without writing anything (same value write_plan returns)."""
    h = PlanHasher(cohort=spec.cohort is not None)
    for chunk, source in _iter_derived(spec, chunk_rows):
        h.update(chunk, source)
    return h.hexdigest()


def plan_batches(rows: list[dict]) -> Iterator[list[list[dict]]]:
    """The plan batches of a shard, each as its pipeline calls: rows split by (steps, guidance)."""
    batches: dict[int, list[dict]] = {}
    for r in rows:
        batches.setdefault(r["batch"], []).append(r)
    for b in sorted(batches):
        calls: dict[tuple, list[dict]] = {}
        for r in batches[b]:
            calls.setdefault((r["steps"], r["guidance_scale"]), []).append(r)
        yield list(calls.values())


def replay_calls(rows: list[dict], batch_sizes: Mapping[str, int] | None = None) -> Iterator[list[dict]]:
    """The exact pipeline calls a shard was generated in, in order, for `reproduce`.

    `rows` are the shard's plan rows; `batch_sizes` maps keys to the `batch_size` recorded with
    each sample (KEY.json or the rows parquet). Without it, the planned calls. A planned call
    that was split after an out-of-memory error is cut back into the recorded consecutive parts.
    """
    for calls in plan_batches(rows):
        for call in calls:
            if batch_sizes is None:
                yield call
                continue
            i = 0
            while i < len(call):
                size = int(batch_sizes[call[i]["key"]])
                part = call[i:i + size]
                if size < 1 or len(part) != size or any(int(batch_sizes[r["key"]]) != size for r in part):
                    raise ValueError(f"recorded batch sizes do not cut the call starting at "
                                     f"{call[0]['key']} into consecutive parts")
                yield part
                i += size
