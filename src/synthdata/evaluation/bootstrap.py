"""Resampling by patient: bootstrap weights, percentile intervals, equal-size subsample draws.

Images of one patient are not independent draws: follow-up studies share anatomy and finding. A
bootstrap that resamples images treats 5 studies of one patient as 5 independent pieces of
evidence and gives intervals that are too narrow; resampling *patients* (all of a drawn
patient's images come along, as often as the patient was drawn) is the cluster bootstrap
(Davison and Hinkley 1997, section 3.8). Here a resample is a vector of integer weights per
image (how often it was drawn), so statistics that accept weights (AUC, means) are computed for
all resamples at once, and the others (`resample_indices`) get the repeated indices.

Every draw comes from a `numpy.random.Generator` the caller seeds: the same seed gives the same
resamples, so conditions evaluated on the same test set compare paired.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95


def group_codes(groups: Sequence[str] | None, n: int) -> np.ndarray:
    """Integer code of each item's group (every item its own group when `groups` is None)."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} items")
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return codes.astype(np.int64)


def bootstrap_weights(groups: Sequence[str] | None, n: int, resamples: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) integer weights: each resample draws as many groups as there are, with
    replacement, and every image of a drawn group gets one count per draw."""
    codes = group_codes(groups, n)
    n_groups = int(codes.max()) + 1 if n else 0
    if n_groups == 0:
        return np.zeros((resamples, 0), np.int64)
    drawn = rng.integers(0, n_groups, size=(resamples, n_groups))
    counts = np.zeros((resamples, n_groups), np.int64)
    np.add.at(counts, (np.repeat(np.arange(resamples), n_groups), drawn.ravel()), 1)
    return counts[:, codes]


def resample_indices(weights: np.ndarray) -> list[np.ndarray]:
    """Each row of bootstrap weights as an index array (an image repeated by its weight)."""
    return [np.repeat(np.arange(weights.shape[1]), row) for row in weights]


def percentile_interval(values: Sequence[float], confidence: float = CONFIDENCE
                        ) -> tuple[float | None, float | None]:
    """The (low, high) percentile interval of bootstrap values (finite ones); None when none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None, None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one score vector under many weightings of its items (ties count one half).

    scores, positive: (n,); weights: (B, n) non-negative. Row b equals sklearn's
    `roc_auc_score` on the sample where item i appears weights[b, i] times; NaN where a row has
    no positive or no negative weight.
    """
    order = np.argsort(scores, kind="stable")
    s = np.asarray(scores)[order]
    pos = np.asarray(positive, bool)[order]
    w = np.atleast_2d(np.asarray(weights, np.float64))[:, order]
    w_pos = w * pos
    w_neg = w * ~pos
    # tie blocks: items with equal scores share the block's negative weight as one half
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    block = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    neg_block = np.add.reduceat(w_neg, starts, axis=1)
    neg_below = np.cumsum(neg_block, axis=1) - neg_block
    credit = neg_below[:, block] + 0.5 * neg_block[:, block]
    total_pos = w_pos.sum(axis=1)
    total_neg = w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (w_pos * credit).sum(axis=1) / (total_pos * total_neg)
    auc[(total_pos == 0) | (total_neg == 0)] = np.nan
    return auc


def subsample_groups(groups: Sequence[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `size` items drawn without replacement, whole groups first (in random order)
    and the last group cut to fit, so subsamples keep a patient's images together."""
    codes = group_codes(groups, len(groups))
    order = rng.permutation(int(codes.max()) + 1 if len(codes) else 0)
    by_group = [np.flatnonzero(codes == g) for g in order]
    picked = np.concatenate(by_group) if by_group else np.zeros(0, np.int64)
    return np.sort(picked[:size])


def disjoint_pairs(groups: Sequence[str], size: int, draws: int, seed: int
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """`draws` pairs of disjoint index sets of `size` items each, never sharing a group.

    Each draw shuffles the groups, takes groups until `size` items are reached for the first
    set, then for the second from the remaining groups (the last group of each set cut to fit).
    Raises ValueError when the set is too small for two disjoint sets of that size.
    """
    codes = group_codes(groups, len(groups))
    if 2 * size > len(codes):
        raise ValueError(f"two disjoint sets of {size} need {2 * size} items; the set has {len(codes)}")
    members = [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1)]
    out = []
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        order = [members[g] for g in rng.permutation(len(members))]
        flat = np.concatenate(order)
        ends = np.cumsum([len(m) for m in order])
        first_end = int(np.searchsorted(ends, size))          # the group that completes set 1
        second_start = int(ends[first_end])                    # set 2 starts at the next group
        if second_start + size > len(flat):
            raise ValueError(f"groups too large for two disjoint sets of {size} items")
        out.append((np.sort(flat[:size]), np.sort(flat[second_start:second_start + size])))
    return out
