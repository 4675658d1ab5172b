"""Per-sample decisions from nearest real neighbours, and near-duplicates among synthetics.

- `reject`: the nearest real image is at or above the threshold (a likely copy);
- `review`: in the band [threshold - review_band, threshold) (DeepSSIM's "similar": a person
  should look);
- `accept`: below that.
Near-duplicates among the synthetic samples themselves (mode collapse) are flagged, not
removed: `near_duplicate_of` names the nearest other synthetic sample when its similarity is
at or above the same threshold.
"""

from __future__ import annotations

import numpy as np

from synthdata.screening import index as ix
from synthdata.screening.cache import LoadedReference

ACCEPT, REVIEW, REJECT = "accept", "review", "reject"
DECISIONS = (ACCEPT, REVIEW, REJECT)


def decide(top1: np.ndarray, threshold: float, review_band: float = 0.0) -> list[str]:
    """The decision for each top-1 similarity."""
    top1 = np.asarray(top1, dtype=np.float64)
    out = np.where(top1 >= threshold, REJECT,
                   np.where(top1 >= threshold - review_band, REVIEW, ACCEPT))
    return out.tolist()


def nearest_real(ref: LoadedReference, vectors: np.ndarray, k: int
                 ) -> tuple[list[list[str]], np.ndarray]:
    """Ids and similarities (n x k, best first) of the k nearest real images of each vector."""
    sims, ids = ref.index.search(vectors, k)
    sims = np.where(np.isfinite(sims), np.clip(sims, -1.0, 1.0), sims)  # float rounding
    names = [[str(ref.ids[j]) for j in row if j >= 0] for row in ids]
    return names, sims


def near_duplicates(vectors: np.ndarray, keys: list[str], threshold: float,
                    exact_limit: int = 100_000) -> tuple[list[str | None], np.ndarray]:
    """(near_duplicate_of, similarity to the nearest other synthetic sample) for each sample."""
    n = len(vectors)
    nearest = np.full(n, np.nan, dtype=np.float32)
    dup_of: list[str | None] = [None] * n
    if n < 2:
        return dup_of, nearest
    plan = ix.choose_index(n, vectors.shape[1], exact_limit=exact_limit, memory_gb=1e9)
    index, order, _ = ix.build_tuned(vectors, plan)
    sims, ids = index.search(vectors, min(n, 4))
    ids = np.where(ids >= 0, order[np.maximum(ids, 0)], -1)  # index rows -> sample rows
    for i in range(n):
        for s, j in zip(sims[i], ids[i]):
            if j >= 0 and j != i:
                nearest[i] = min(s, 1.0)
                if s >= threshold:
                    dup_of[i] = keys[j]
                break
    return dup_of, nearest
