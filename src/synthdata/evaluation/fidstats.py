"""FID as a measurement: its bootstrap interval, FD at infinite n, and the floor at equal n.

FID is biased upward at finite n (the trace terms of two sample covariances), by an amount that
depends on both sample sizes and the extractor (Chong and Forsyth 2020). So:

- `fid_interval`: 95% interval over bootstrap resamples, real images resampled *by patient*
  (`bootstrap.py`) and synthetic images one by one: the spread of FID at this n. Resampling
  with replacement repeats images, and FID rises when fewer distinct images enter its
  covariances (measured: at 200 images a side the median resample sits 10-40% above the
  estimate), so the raw percentile interval can miss the estimate altogether when the true
  distance is small. The resamples are therefore re-centred on the estimate (their median
  moved onto it) before the 2.5 and 97.5 percentiles are taken: the interval keeps the spread
  and skew and drops the duplication artefact. The estimate's own small-n bias is `fd_inf`'s
  business, not the interval's.
- `fd_infinity`: "FD∞", FID extrapolated to infinitely many images. FID is computed on
  subsamples of both sides at fractions t of their sizes (several draws each), a line is fitted
  to FID against 1/t, and its intercept is the estimate. Chong and Forsyth fit against 1/N of
  the generated side with the real statistics fixed; subsampling both sides at the same
  fraction removes the real side's bias too (the bias is linear in 1/n_real + 1/n_synthetic,
  both proportional to 1/t). The fitted points are recorded.
- `matched_floor`: the comparison at equal n. The real set is drawn into two disjoint halves of
  `n` images (never sharing a patient) several times: FID(real half A, real half B) is the
  floor a perfect generator would reach *at this n*, and FID(real half A, n synthetic images)
  the dataset at the same n; mean and spread over draws. The full-set FID (the headline) and
  this floor are not comparable; the matched pair is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthdata.evaluation import metrics
from synthdata.evaluation.bootstrap import (bootstrap_weights, disjoint_pairs, percentile_interval,
                                            resample_indices, subsample_groups)

FID_BOOTSTRAP = 200
FD_INF_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FD_INF_DRAWS = 3
FLOOR_DRAWS = 8


def fid_interval(real: np.ndarray, fake: np.ndarray, *, real_groups: Sequence[str] | None = None,
                 resamples: int = FID_BOOTSTRAP, seed: int = 0) -> dict:
    """{ci: [low, high], std, shift, resamples}: FID over bootstrap resamples (real side by
    group), re-centred on the estimate (`shift`: how far the resamples' median lay above it)."""
    rng = np.random.default_rng([seed, 17])
    wr = bootstrap_weights(real_groups, len(real), resamples, rng)
    wf = bootstrap_weights(None, len(fake), resamples, rng)
    values = np.array([metrics.fid(real[ir], fake[jf])
                       for ir, jf in zip(resample_indices(wr), resample_indices(wf))])
    shift = float(np.median(values) - metrics.fid(real, fake))
    lo, hi = percentile_interval(values - shift)
    return {"ci": [lo, hi], "std": float(np.std(values)), "shift": shift, "resamples": resamples}


def fd_infinity(real: np.ndarray, fake: np.ndarray, *, real_groups: Sequence[str] | None = None,
                fractions: Sequence[float] = FD_INF_FRACTIONS, draws: int = FD_INF_DRAWS,
                seed: int = 0) -> dict:
    """{value, slope, points: [{fraction, n_real, n_synthetic, fid}]}: the intercept of a line
    fitted to FID against 1/fraction (subsamples of both sides, real ones by group)."""
    groups = real_groups if real_groups is not None else [str(i) for i in range(len(real))]
    points = []
    for t in fractions:
        nr, nf = max(2, int(round(t * len(real)))), max(2, int(round(t * len(fake))))
        values = []
        for d in range(draws if t < 1 else 1):
            rng = np.random.default_rng([seed, 29, int(t * 1000), d])
            ir = subsample_groups(groups, nr, rng) if nr < len(real) else np.arange(len(real))
            jf = np.sort(rng.choice(len(fake), nf, replace=False)) if nf < len(fake) else np.arange(len(fake))
            values.append(metrics.fid(real[ir], fake[jf]))
        points.append({"fraction": float(t), "n_real": nr, "n_synthetic": nf,
                       "fid": float(np.mean(values))})
    x = np.array([1.0 / p["fraction"] for p in points])
    y = np.array([p["fid"] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    return {"value": float(intercept), "slope": float(slope), "points": points}


def _mean_blocks(blocks: list[dict]) -> dict:
    """Mean of each numeric figure over draws, with fid's spread and the draws' n."""
    out: dict = {}
    for key in blocks[0]:
        vals = [b.get(key) for b in blocks]
        if all(isinstance(v, (int, float)) and v is not None for v in vals):
            out[key] = float(np.mean(vals)) if isinstance(vals[0], float) else vals[0]
    fids = [b["fid"] for b in blocks if b.get("fid") is not None]
    out["fid_std"] = float(np.std(fids)) if fids else None
    out["fid_draws"] = [float(v) for v in fids]
    return out


def matched_floor(real: np.ndarray, fake: np.ndarray, *, real_groups: Sequence[str] | None = None,
                  draws: int = FLOOR_DRAWS, seed: int = 0, kid_subsets: int = 20) -> dict:
    """Real-vs-real and synthetic-vs-real at the same n per side, over several draws.

    n = min(synthetic images, half the real images). Returns {n, draws, real_vs_real {fid,
    fid_std, fid_draws, kid, precision, ...}, synthetic_vs_real {the same}}; raises ValueError
    when the real set cannot give two disjoint sets of at least 2 images.
    """
    groups = real_groups if real_groups is not None else [str(i) for i in range(len(real))]
    n = min(len(fake), len(real) // 2)
    if n < 2:
        raise ValueError(f"the floor needs 2 disjoint real sets of at least 2 images (real {len(real)}, "
                         f"synthetic {len(fake)})")
    floor, matched = [], []
    for d, (a, b) in enumerate(disjoint_pairs(groups, n, draws, seed)):
        rng = np.random.default_rng([seed, 31, d])
        jf = np.sort(rng.choice(len(fake), n, replace=False)) if n < len(fake) else np.arange(len(fake))
        floor.append(metrics.fidelity(real[a], real[b], seed=seed + d, kid_subsets=kid_subsets))
        matched.append(metrics.fidelity(real[a], fake[jf], seed=seed + d, kid_subsets=kid_subsets))
    return {"n": {"real_a": n, "real_b": n, "synthetic": n}, "draws": draws,
            "real_vs_real": _mean_blocks(floor), "synthetic_vs_real": _mean_blocks(matched)}
