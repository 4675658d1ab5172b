"""FAISS nearest-neighbour indexes over unit vectors (inner product = cosine similarity).

Choice by size and memory budget (the autofaiss idea, measured rather than assumed):
- up to `exact_limit` vectors: `IndexFlatIP`, exact;
- above it, when vectors plus graph fit in the memory budget: HNSW (M=32, efConstruction 80);
- above the budget: IVF-PQ (about 4*sqrt(n) lists, 8-bit codes of `dim/8`..`dim/2` bytes),
  whose candidates (10 x k) are re-ranked exactly against the full vectors read from a memory
  map, so only the codes need to fit in memory.

An approximate index is tuned after building: its search breadth (HNSW efSearch, IVF nprobe)
is raised until recall@1 against exact search reaches the target on a sample, and the recall
reached is recorded. The sample queries are indexed vectors themselves, and recall counts the
nearest *other* vector (self matches excluded), so the figure is not inflated by trivial
self-hits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

RECALL_TARGET = 0.99
RECALL_SAMPLE = 1000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
EF_SEARCH_STEPS = (32, 64, 128, 256, 512, 1024, 2048)
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
RERANK_FACTOR = 10


@dataclass
class IndexChoice:
    """Which index to build and with which parameters (recorded in caches and reports)."""

    kind: str  # flat | hnsw | ivfpq
    dim: int
    params: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """Plain data for JSON."""
        return {"kind": self.kind, "dim": self.dim, **self.params}


def estimated_bytes(kind: str, n: int, dim: int) -> int:
    """Rough resident size of an index of n vectors."""
    if kind == "flat":
        return n * dim * 4
    if kind == "hnsw":
        return n * (dim * 4 + HNSW_M * 2 * 4 + 16)
    return n * (max(8, dim // 8) + 8)


def choose_index(n: int, dim: int, *, exact_limit: int = 100_000,
                 memory_gb: float = 16.0) -> IndexChoice:
    """Exact up to exact_limit vectors, HNSW while it fits the memory budget, else IVF-PQ."""
    if n <= exact_limit:
        return IndexChoice("flat", dim)
    if estimated_bytes("hnsw", n, dim) <= memory_gb * 2**30:
        return IndexChoice("hnsw", dim, {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION,
                                       "efSearch": 64})
    nlist = int(min(65536, max(64, 4 * math.sqrt(n))))
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m > 0 and dim % m == 0)
    return IndexChoice("ivfpq", dim, {"nlist": nlist, "m": m, "nbits": 8, "nprobe": 16})


class NNIndex:
    """A FAISS index with its plan; IVF-PQ results are re-ranked exactly on the full vectors.

    `vectors` (possibly a read-only memory map) are only needed for IVF-PQ re-ranking, so the
    compressed index stays within its memory budget while its answers use exact similarities.
    """

    def __init__(self, index: faiss.Index, plan: IndexChoice, vectors: np.ndarray | None = None):
        self.index, self.plan, self.vectors = index, plan, vectors
        apply_search_params(index, plan)

    @property
    def ntotal(self) -> int:
        """How many vectors are indexed."""
        return int(self.index.ntotal)

    def add(self, x: np.ndarray, vectors: np.ndarray | None = None) -> None:
        """Append vectors (ids continue from ntotal); `vectors`: the new full re-rank table."""
        self.index.add(np.ascontiguousarray(x, dtype=np.float32))
        if vectors is not None:
            self.vectors = vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids) of the k nearest; missing neighbours: id -1, similarity -inf."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.plan.kind != "ivfpq" or self.vectors is None:
            return search(self.index, q, k)
        factor = self.plan.params.get("rerank", RERANK_FACTOR)
        _, cand = search(self.index, q, min(self.ntotal, k * factor))
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        for r in range(len(q)):
            c = np.unique(cand[r][cand[r] >= 0])
            if len(c) == 0:
                continue
            s = np.asarray(self.vectors[c], dtype=np.float32) @ q[r]
            top = np.argsort(-s, kind="stable")[:k]
            sims[r, :len(top)], ids[r, :len(top)] = s[top], c[top]
        return sims, ids


def build_index(vectors: np.ndarray, plan: IndexChoice, seed: int = 0) -> NNIndex:
    """A new index of the planned kind holding `vectors` (row i has id i)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if plan.kind == "flat":
        index = faiss.IndexFlatIP(plan.dim)
    elif plan.kind == "hnsw":
        index = faiss.IndexHNSWFlat(plan.dim, plan.params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = plan.params["efConstruction"]
    elif plan.kind == "ivfpq":
        p = plan.params
        index = faiss.index_factory(plan.dim, f"IVF{p['nlist']},PQ{p['m']}x{p['nbits']}",
                                    faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        n_train = min(len(x), max(p["nlist"] * 40, 10_000))
        index.train(x[np.sort(rng.choice(len(x), n_train, replace=False))])
    else:
        raise ValueError(f"unknown index kind {plan.kind!r}")
    index.add(x)
    return NNIndex(index, plan, vectors if plan.kind == "ivfpq" else None)


def apply_search_params(index: faiss.Index, plan: IndexChoice) -> None:
    """Set the planned search breadth on an index (after building or loading)."""
    if plan.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = plan.params["efSearch"]
    elif plan.kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = plan.params["nprobe"]


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw FAISS search, padded: missing neighbours are id -1, similarity -inf."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if len(q) == 0 or index.ntotal == 0:
        return (np.full((len(q), k), -np.inf, dtype=np.float32),
                np.full((len(q), k), -1, dtype=np.int64))
    sims, ids = index.search(q, min(k, index.ntotal))
    sims = np.where(ids >= 0, sims, -np.inf).astype(np.float32)
    if sims.shape[1] < k:
        pad = k - sims.shape[1]
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return sims, ids


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by a temporary flat index (ground truth for recall)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return search(flat, queries, k)


def exact_top1(vectors: np.ndarray, queries: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Exact nearest id of each query, streaming the (possibly memory-mapped) vectors."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best = np.full(len(q), -np.inf, dtype=np.float32)
    arg = np.full(len(q), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        sims = q @ np.asarray(vectors[start:start + chunk], dtype=np.float32).T
        j = sims.argmax(axis=1)
        s = sims[np.arange(len(q)), j]
        better = s > best
        best[better], arg[better] = s[better], j[better] + start
    return arg


def _other_top1(ids: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
    """Per row, the first id that is not the query itself (-1 if none)."""
    out = np.full(len(ids), -1, dtype=np.int64)
    for r, row in enumerate(ids):
        for j in row:
            if j >= 0 and j != self_ids[r]:
                out[r] = j
                break
    return out


def recall_at_1(index: NNIndex, vectors: np.ndarray, sample: int = RECALL_SAMPLE,
                seed: int = 0, queries: np.ndarray | None = None) -> float:
    """Share of sample queries whose approximate nearest neighbour is the exact one.

    Without `queries`, a sample of the indexed vectors is used and self matches are excluded
    on both sides; with `queries` (e.g. synthetic samples), those are searched as they are.
    """
    if queries is None:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(vectors), min(sample, len(vectors)), replace=False))
        q = vectors[rows]
        _, exact = exact_search(vectors, q, 4)
        _, approx = index.search(q, 4)
        truth, got = _other_top1(exact, rows), _other_top1(approx, rows)
    else:
        q = queries[:sample]
        truth = exact_top1(vectors, q)
        got = index.search(q, 1)[1][:, 0]
    if len(truth) == 0:
        return 1.0
    return float(np.mean(truth == got))


def tune(index: NNIndex, vectors: np.ndarray, plan: IndexChoice, queries: np.ndarray | None = None,
         target: float = RECALL_TARGET, sample: int = RECALL_SAMPLE, seed: int = 0) -> dict:
    """Raise search breadth until recall@1 >= target, then one step more; record and return it.

    `queries` should be vectors that are *not* in the index (held out of the build): searching
    for an indexed vector is easier than for a new one, because the graph leads to the vector
    itself. Without them, a self-excluded sample of the indexed vectors is used (optimistic).
    The extra step is headroom for queries from another distribution (synthetic images).
    """
    if plan.kind == "flat":
        plan.params["recall_at_1"] = 1.0
        return plan.describe()
    name, steps = ("efSearch", EF_SEARCH_STEPS) if plan.kind == "hnsw" \
        else ("nprobe", [s for s in NPROBE_STEPS if s <= plan.params["nlist"]])

    def measure() -> float:
        apply_search_params(index.index, plan)
        return recall_at_1(index, vectors, sample, seed, queries)

    recall, reached = 0.0, None
    for i, value in enumerate(steps):
        plan.params[name] = value
        recall = measure()
        if recall >= target:
            reached = (value, recall)
            if i + 1 < len(steps):
                plan.params[name] = steps[i + 1]
                recall = measure()
            break
    plan.params["recall_at_1"] = round(recall, 4)
    plan.params["recall_sample"] = min(sample, len(vectors) if queries is None else len(queries))
    plan.params["recall_queries"] = "self-excluded sample" if queries is None else "held out"
    if reached is not None:
        plan.params["target_reached_at"] = {name: reached[0], "recall_at_1": round(reached[1], 4)}
    return plan.describe()


def build_tuned(vectors: np.ndarray, plan: IndexChoice, seed: int = 0
                ) -> tuple[NNIndex, np.ndarray, dict]:
    """Build and tune an index, holding a sample out of the build to tune on.

    Returns (index, order, info): row j of the index is `vectors[order[j]]` (held-out rows are
    added last, after tuning), so callers store their ids and vectors in that order.
    """
    n = len(vectors)
    order = np.arange(n)
    if plan.kind == "flat" or n < 4 * RECALL_SAMPLE:
        index = build_index(vectors, plan, seed)
        return index, order, tune(index, vectors, plan, seed=seed)
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).choice(n, RECALL_SAMPLE, replace=False)] = True
    order = np.concatenate([np.flatnonzero(~held), np.flatnonzero(held)])
    inserted = np.ascontiguousarray(vectors[order[:n - RECALL_SAMPLE]])
    index = build_index(inserted, plan, seed)
    info = tune(index, inserted, plan, queries=vectors[held], seed=seed)
    full = np.ascontiguousarray(vectors[order])
    index.add(vectors[held], full if plan.kind == "ivfpq" else None)
    return index, order, info


def save_index(index: NNIndex, path: str | Path) -> None:
    """Write an index to a file (the caller renames it into place)."""
    faiss.write_index(index.index, str(path))


def load_index(path: str | Path, plan: IndexChoice, vectors: np.ndarray | None = None) -> NNIndex:
    """Read an index and restore its tuned search parameters."""
    return NNIndex(faiss.read_index(str(path)), plan, vectors)
