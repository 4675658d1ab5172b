"""Diversity: intra-prompt MS-SSIM and synthetic-synthetic nearest-neighbour similarity.

*Intra-prompt MS-SSIM* (RoentGen's diversity measure): samples that share a prompt differ only
by their seed; the mean MS-SSIM over pairs of them says how much the seed changes the image
(lower = more diverse; 1 = every seed gives the same picture). Samples are grouped by their
exact prompt; when no prompt was drawn twice (templates with many variables), they are grouped
by label instead, and `grouping` says which. At most `max_pairs` pairs, chosen with a seeded
generator, so the cost stays small on large datasets.

MS-SSIM is `pytorch_msssim.ms_ssim` on gray images in 0..255 with its five standard scales and
weights. Its five scales need the smaller image side to exceed (window - 1) * 16, so the
Gaussian window is the largest odd size <= 11 that fits: 11 from 161 px up, 3 at 64 px (the
built-in models' size). Figures are comparable between datasets of the same image size only.
Images smaller than 33 px are not scored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from synthdata.evaluation.metrics import nn_similarity, summary
from synthdata.screening.embedders import to_gray

MAX_PAIRS = 500
STANDARD_WINDOW = 11


def msssim_window(side: int) -> int | None:
    """Largest odd Gaussian window <= 11 with which 5-scale MS-SSIM fits `side` pixels."""
    for win in range(STANDARD_WINDOW, 1, -2):
        if side > (win - 1) * 16:
            return win
    return None


def _gray(image: np.ndarray) -> np.ndarray:

    return to_gray(image)


def ms_ssim_pairs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """MS-SSIM of each pair of uint8 images (same size within a pair)."""
    import torch
    from pytorch_msssim import ms_ssim

    out = np.full(len(pairs), np.nan, np.float64)
    for i, (a, b) in enumerate(pairs):
        ga, gb = _gray(a), _gray(b)
        if ga.shape != gb.shape:
            continue
        win = msssim_window(min(ga.shape))
        if win is None:
            continue
        x = torch.from_numpy(ga)[None, None].double()
        y = torch.from_numpy(gb)[None, None].double()
        out[i] = float(ms_ssim(x, y, data_range=255, win_size=win))
    return out


def choose_pairs(groups: dict[str, list[int]], max_pairs: int, seed: int) -> list[tuple[int, int]]:
    """Up to max_pairs (i, j) pairs within groups, spread over groups, seeded."""
    rng = np.random.default_rng(seed)
    candidates: list[tuple[int, int]] = []
    for name in sorted(groups):
        members = groups[name]
        candidates += [(members[a], members[b]) for a in range(len(members))
                       for b in range(a + 1, len(members))]
    if len(candidates) <= max_pairs:
        return candidates
    pick = np.sort(rng.choice(len(candidates), size=max_pairs, replace=False))
    return [candidates[i] for i in pick]


def intra_prompt_msssim(prompts: list[str], labels: list[str],
                        load: Callable[[list[int]], dict[int, np.ndarray]], *,
                        max_pairs: int = MAX_PAIRS, seed: int = 0) -> dict:
    """Mean MS-SSIM over pairs of samples sharing a prompt (else a label); see module doc.

    `load(indices)` returns the uint8 images of those sample indices.
    """
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    groups = {p: m for p, m in by_prompt.items() if len(m) >= 2}
    grouping = "prompt"
    if not groups:
        grouping = "label"
        by_label: dict[str, list[int]] = {}
        for i, lab in enumerate(labels):
            by_label.setdefault(lab, []).append(i)
        groups = {lab: m for lab, m in by_label.items() if len(m) >= 2}
    pairs = choose_pairs(groups, max_pairs, seed)
    needed = sorted({i for pair in pairs for i in pair})
    images = load(needed) if needed else {}
    scores = ms_ssim_pairs([(images[a], images[b]) for a, b in pairs])
    sizes = sorted({images[i].shape[:2] for i in needed})
    side = min(min(s) for s in sizes) if sizes else None
    valid = scores[np.isfinite(scores)]
    return {"ms_ssim": float(valid.mean()) if len(valid) else None,
            "ms_ssim_std": float(valid.std()) if len(valid) else None,
            "grouping": grouping, "groups": len(groups), "pairs": int(len(valid)),
            "window": msssim_window(side) if side else None}


def nn_diversity(synthetic: np.ndarray, real: np.ndarray | None = None) -> dict:
    """Nearest-neighbour cosine similarity within the synthetic set (and within real, for scale)."""
    out = {"synthetic": summary(nn_similarity(synthetic))}
    if real is not None:
        out["real"] = summary(nn_similarity(real))
    return out
