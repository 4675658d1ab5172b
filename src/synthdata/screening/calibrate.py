"""`threshold: auto`: calibrate the copy threshold on how near real images are to each other.

Method (recorded with its numbers in the screening report):
1. For each real image (all of them, or a deterministic sample of `CALIBRATION_SAMPLE`),
   find its nearest real neighbour *from another source file*. Other frames or slices of the
   same file (the same patient, usually adjacent anatomy) are excluded along with the image
   itself, or a volume's neighbouring slices would set the bar.
2. Drop pairs at or above `DUPLICATE_SIMILARITY`: those are duplicates inside the reference
   (the same image exported twice), not the natural spread of distinct images. Their count is
   recorded.
3. q = the `quantile` (default 0.99) of the remaining similarities; the threshold is
   `q + margin * (1 - q)` (default margin 0.5: halfway from q to an identical image).
   So a synthetic image is rejected only when it is nearer to some real image than 99% of
   real images are to any other patient's image, by a margin.
When fewer than two source files have images, there is nothing to calibrate on and the
embedder's default threshold is used (recorded as such).
"""

from __future__ import annotations

import numpy as np

from synthdata.screening import index as ix

CALIBRATION_SAMPLE = 5000
DUPLICATE_SIMILARITY = 0.9999
HISTOGRAM_BINS = 50


def real_nn_similarities(index: ix.NNIndex, vectors: np.ndarray, groups: np.ndarray,
                         sample: int = CALIBRATION_SAMPLE, seed: int = 0) -> np.ndarray:
    """Similarity of each (sampled) real image to its nearest real image in another group."""
    n = len(vectors)
    if n < 2 or len(np.unique(groups)) < 2:
        return np.zeros(0, dtype=np.float32)
    rows = np.arange(n) if n <= sample else np.sort(
        np.random.default_rng(seed).choice(n, sample, replace=False))
    result = np.full(len(rows), np.nan, dtype=np.float32)
    todo = np.arange(len(rows))
    k = min(n, 16)
    while len(todo):
        sims, ids = index.search(vectors[rows[todo]], k)
        unresolved = []
        for t, srow, irow in zip(todo, sims, ids):
            own = groups[rows[t]]
            hit = next((s for s, j in zip(srow, irow) if j >= 0 and groups[j] != own), None)
            if hit is None:
                unresolved.append(t)
            else:
                result[t] = hit
        if k >= n:
            break
        todo, k = np.array(unresolved, dtype=np.int64), min(n, k * 8)
    return result[~np.isnan(result)]


def histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    """Counts of values in equal bins over [-1, 1] (cosine range), for reports."""
    counts, edges = np.histogram(np.clip(values, -1, 1), bins=bins, range=(-1.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def auto_threshold(nn_sims: np.ndarray, quantile: float = 0.99, margin: float = 0.5
                   ) -> tuple[float | None, dict]:
    """(threshold, how) from real-vs-real similarities; threshold None when there are none."""
    sims = np.asarray(nn_sims, dtype=np.float64)
    dupes = int(np.sum(sims >= DUPLICATE_SIMILARITY))
    kept = sims[sims < DUPLICATE_SIMILARITY]
    info: dict = {"method": "real-vs-real nearest neighbour (other source file), "
                            "threshold = q + margin * (1 - q)",
                  "quantile": quantile, "margin": margin, "pairs": len(kept),
                  "duplicates_excluded": dupes}
    if len(kept) == 0:
        return None, info
    q = float(np.quantile(kept, quantile))
    threshold = q + margin * (1.0 - q)
    info.update({
        "q": round(q, 6), "threshold": round(threshold, 6),
        "real_nn": {name: round(float(v), 6) for name, v in zip(
            ("min", "p50", "p90", "p95", "p99", "max"),
            np.quantile(kept, [0.0, 0.5, 0.9, 0.95, 0.99, 1.0]))},
    })
    if len(kept) < 100:
        info["warning"] = f"only {len(kept)} real-vs-real pairs: the quantile is coarse"
    return threshold, info


def resolve_threshold(configured: str | float, override: float | None, nn_sims: np.ndarray | None,
                      quantile: float, margin: float, default: float) -> tuple[float, dict]:
    """The threshold to use and how it was chosen: override, configured number, auto, default."""
    if override is not None:
        return float(override), {"method": "given on the command line", "threshold": override}
    if configured != "auto":
        return float(configured), {"method": "configured", "threshold": float(configured)}
    if nn_sims is not None:
        threshold, info = auto_threshold(nn_sims, quantile, margin)
        if threshold is not None:
            return threshold, info
        reason = "fewer than two reference source files with images"
    else:
        reason = "no reference configured"
    return default, {"method": f"embedder default ({reason})", "threshold": default}
