"""Seeded draws shared by the plan, its cohort source and the phantoms: a platform-independent
64-bit mix of integers (`mix`), keyed permutations (`permute`) and exact integer shares
(`apportion`). Pure numpy: the same words give the same numbers on every machine."""

from __future__ import annotations

import math

import numpy as np

SEED_MASK = (1 << 63) - 1
STREAM_PERM = 1   # the plan's stream number of permutations (its other streams: plan/__init__)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def mix(*words: int | np.ndarray) -> np.ndarray:
    """A 64-bit hash of the words (ints or uint64 arrays), vectorised and platform-independent."""
    h = np.zeros((), dtype=np.uint64)
    for w in words:
        h = _splitmix(h ^ np.asarray(w, dtype=np.uint64))
    return h


def apportion(total: int, weights: list[float]) -> list[int]:
    """Exact integer shares of `total` proportional to `weights` (largest remainder, ties by order)."""
    wsum = float(sum(weights))
    if total == 0 or wsum <= 0:
        return [0] * len(weights)
    quotas = [total * w / wsum for w in weights]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def permute(indices: np.ndarray, n: int, seed: int | np.ndarray) -> np.ndarray:
    """A keyed bijection of [0, n): a 4-round Feistel network with cycle walking.

    `seed` is one key, or an array of keys aligned with `indices` (each element permuted by its
    own key: many small permutations in one vectorised call).
    """
    half = max(1, math.ceil(max(1, (n - 1).bit_length()) / 2))
    mask = np.uint64((1 << half) - 1)
    keys = np.asarray(seed, dtype=np.uint64)

    def rounds(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for r in range(4):
            left, right = right, left ^ (mix(k, STREAM_PERM, r, right) & mask)
        return (left << np.uint64(half)) | right

    y = rounds(indices.astype(np.uint64), keys)
    while (bad := y >= np.uint64(n)).any():
        y[bad] = rounds(y[bad], keys if keys.ndim == 0 else keys[bad])
    return y.astype(np.int64)
