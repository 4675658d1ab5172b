"""Unbiased MMD² on whole feature sets with a standard error: KID and CMMD-style distances.

- `kid_unbiased`: Bińkowski et al. 2018's KID, the unbiased U-statistic of MMD² with the cubic
  polynomial kernel k(x, y) = (x·y / d + 1)³, on all images at once (no subsets).
- `cmmd`: Jayasumana et al. 2024's CMMD shape, MMD² with a Gaussian RBF kernel (no Gaussian
  assumption about the features, unlike FID), scaled by 1000 as they do, on the evaluation's
  headline features instead of CLIP embeddings. The bandwidth is the median pairwise distance
  of the *real* features (same real set and extractor: same kernel for every model compared),
  recorded. Unlike their code (which keeps the kernel's diagonal, a biased V-statistic), this
  is the unbiased estimate: zero in expectation for two samples of one distribution, so it can
  be slightly negative.

The standard error is a grouped delete-one-block jackknife: each side's groups (patients on the
real side) are dealt into `blocks` blocks; the estimate is recomputed without block j on both
sides, and SE² = (J - 1)/J Σ (θ₋ⱼ - θ̄)². Kernel sums are taken per block pair, in chunks, so
memory stays O(chunk · n). Sets larger than `max_n` are subsampled (seeded) and that is
recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from synthdata.evaluation.bootstrap import group_codes

BLOCKS = 20
MAX_N = 5000
CHUNK = 1024
CMMD_SCALE = 1000.0


def polynomial_kernel(dim: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """KID's kernel: (x·y / d + 1)³."""
    return lambda a, b: (a @ b.T / dim + 1.0) ** 3


def rbf_kernel(sigma: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """exp(-||x - y||² / (2 σ²))."""
    gamma = 1.0 / (2.0 * sigma * sigma)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.exp(-gamma * np.maximum(d2, 0.0))
    return k


def median_distance(x: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance among (up to max_n, seeded) rows."""
    x = np.asarray(x, np.float64)
    if len(x) > max_n:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_n, replace=False))]
    d2 = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    iu = np.triu_indices(len(x), 1)
    return float(np.sqrt(np.median(np.maximum(d2[iu], 0.0))))


def _blocks(groups: Sequence[str] | None, n: int, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Block number of each item: its group's, groups dealt at random into `blocks` blocks."""
    codes = group_codes(groups, n)
    n_groups = int(codes.max()) + 1
    deal = rng.permutation(n_groups) % blocks
    return deal[codes]


def _block_sums(kernel, a: np.ndarray, ba: np.ndarray, b: np.ndarray, bb: np.ndarray,
                blocks: int) -> np.ndarray:
    """(J, J) sums of kernel values between a's block i and b's block j."""
    out = np.zeros((blocks, blocks))
    onehot_b = np.eye(blocks)[bb]
    for start in range(0, len(a), CHUNK):
        k = kernel(a[start:start + CHUNK], b)
        per_row = k @ onehot_b                                   # (chunk, J)
        np.add.at(out, ba[start:start + CHUNK], per_row)
    return out


def _diag_sums(kernel, a: np.ndarray, ba: np.ndarray, blocks: int) -> np.ndarray:
    diag = np.concatenate([np.diag(kernel(a[s:s + CHUNK], a[s:s + CHUNK]))
                           for s in range(0, len(a), CHUNK)])
    return np.bincount(ba, weights=diag, minlength=blocks)


def _estimate(sxx, dxx, nx, syy, dyy, ny, sxy) -> float:
    return float((sxx - dxx) / (nx * (nx - 1)) + (syy - dyy) / (ny * (ny - 1))
                 - 2.0 * sxy / (nx * ny))


def mmd2_unbiased(kernel, x: np.ndarray, y: np.ndarray, *, x_groups: Sequence[str] | None = None,
                  y_groups: Sequence[str] | None = None, blocks: int = BLOCKS,
                  max_n: int = MAX_N, seed: int = 0) -> dict:
    """Unbiased MMD² between the rows of x and y with its grouped jackknife standard error.

    Returns {value, se, n_real, n_synthetic, blocks, subsampled}. Needs at least 2 rows a side.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least 2 samples on each side")
    subsampled = {}
    if len(x) > max_n:
        keep = np.sort(rng.choice(len(x), max_n, replace=False))
        x, x_groups = x[keep], None if x_groups is None else [x_groups[i] for i in keep]
        subsampled["real"] = max_n
    if len(y) > max_n:
        keep = np.sort(rng.choice(len(y), max_n, replace=False))
        y, y_groups = y[keep], None if y_groups is None else [y_groups[i] for i in keep]
        subsampled["synthetic"] = max_n
    j = int(min(blocks, len(set(x_groups)) if x_groups is not None else len(x),
                len(set(y_groups)) if y_groups is not None else len(y)))
    bx = _blocks(x_groups, len(x), j, rng)
    by = _blocks(y_groups, len(y), j, rng)
    sxx = _block_sums(kernel, x, bx, x, bx, j)
    syy = _block_sums(kernel, y, by, y, by, j)
    sxy = _block_sums(kernel, x, bx, y, by, j)
    dxx, dyy = _diag_sums(kernel, x, bx, j), _diag_sums(kernel, y, by, j)
    nx_b, ny_b = np.bincount(bx, minlength=j), np.bincount(by, minlength=j)
    value = _estimate(sxx.sum(), dxx.sum(), len(x), syy.sum(), dyy.sum(), len(y), sxy.sum())
    leave = []
    for b in range(j):
        nx, ny = len(x) - nx_b[b], len(y) - ny_b[b]
        if nx < 2 or ny < 2:
            continue
        leave.append(_estimate(sxx.sum() - sxx[b].sum() - sxx[:, b].sum() + sxx[b, b],
                               dxx.sum() - dxx[b], nx,
                               syy.sum() - syy[b].sum() - syy[:, b].sum() + syy[b, b],
                               dyy.sum() - dyy[b], ny,
                               sxy.sum() - sxy[b].sum() - sxy[:, b].sum() + sxy[b, b]))
    se = None
    if len(leave) >= 2:
        t = np.asarray(leave)
        se = float(np.sqrt((len(t) - 1) / len(t) * ((t - t.mean()) ** 2).sum()))
    out = {"value": value, "se": se, "n_real": int(len(x)), "n_synthetic": int(len(y)),
           "blocks": len(leave)}
    if subsampled:
        out["subsampled"] = subsampled
    return out


def kid_unbiased(real: np.ndarray, fake: np.ndarray, *, real_groups: Sequence[str] | None = None,
                 seed: int = 0) -> dict:
    """KID (cubic polynomial kernel) on all images: {value, se, n_real, n_synthetic, ...}."""
    return mmd2_unbiased(polynomial_kernel(real.shape[1]), real, fake, x_groups=real_groups,
                         seed=seed)


def cmmd(real: np.ndarray, fake: np.ndarray, *, real_groups: Sequence[str] | None = None,
         sigma: float | None = None, seed: int = 0) -> dict:
    """CMMD-style distance: 1000 × unbiased RBF MMD², bandwidth = median real distance.

    {value, se, sigma, n_real, n_synthetic, ...}; `sigma` fixes the bandwidth instead.
    """
    sigma = float(sigma) if sigma is not None else median_distance(real, seed=seed)
    if not sigma > 0:
        raise ValueError("CMMD needs real features that are not all identical")
    out = mmd2_unbiased(rbf_kernel(sigma), real, fake, x_groups=real_groups, seed=seed)
    out["value"] *= CMMD_SCALE
    if out["se"] is not None:
        out["se"] *= CMMD_SCALE
    return {**out, "sigma": sigma, "scale": CMMD_SCALE}
