"""Data-limited utility curves: how much do synthetic images help when real labels are scarce?

Real training sets of 5, 10, 25, 50 and 100% of the real training split (whole patients,
stratified by label, seeded; `draws` different subsets below 100%), each trained without and
with the synthetic images under two protocols, all scored on the same held-out real test split:

- `mixing`: one classifier on the real subset plus all synthetic images;
- `pretrain`: RoentGen-v2's protocol (Moroianu et al. 2025 report +6.5% for it against +2.7%
  for mixing): pre-train on the synthetic images, then fine-tune on the real subset. For the
  linear probe that is L2-SP toward the synthetic solution (`probe.py`); for the CNN
  (`cnn.py`, on a GPU) the network is pre-trained, then all its weights fine-tuned.

`condition` is `real_only` (the same numbers under both protocols) or `with_synthetic`. Each
point is the macro one-vs-rest AUC averaged over the subset draws, with a 95% percentile interval
over bootstrap resamples of the test set *by patient* (the same resamples for every point, so
two points compare paired), and `auc_draw_std`, the spread over subset draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from synthdata.evaluation.bootstrap import bootstrap_weights, percentile_interval, weighted_auc
from synthdata.evaluation.probe import probabilities

FRACTIONS = (0.05, 0.10, 0.25, 0.50, 1.00)
PROTOCOLS = ("mixing", "pretrain")
DRAWS = 5

# (x_train, y_train, x_test, n_labels, pretrain (x, y) | None, mix (x, y) | None) -> probs
Trainer = Callable[..., np.ndarray]


def linear_trainer(x_train, y_train, x_test, n_labels, pretrain=None, mix=None) -> np.ndarray:
    """The CPU protocol: the linear probe on frozen features (`probe.py`)."""

    if mix is not None:
        x_train = np.concatenate([x_train, mix[0]])
        y_train = np.concatenate([y_train, mix[1]])
    return probabilities(x_train, y_train, x_test, n_labels, pretrain=pretrain)


def subset_by_patient(y: np.ndarray, groups: Sequence[str], fraction: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Indices of round(fraction x patients) patients per label (at least 1), all their images."""
    if fraction >= 1:
        return np.arange(len(y))
    first_label: dict[str, int] = {}
    for g, lab in zip(groups, y):
        first_label.setdefault(g, int(lab))
    keep: set[str] = set()
    for lab in sorted(set(first_label.values())):
        pats = sorted(g for g, v in first_label.items() if v == lab)
        n = max(1, int(round(fraction * len(pats))))
        keep.update(pats[i] for i in rng.choice(len(pats), n, replace=False))
    return np.array([i for i, g in enumerate(groups) if g in keep], np.int64)


def macro_auc(probs: np.ndarray, y_test: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """Macro AUC (mean over labels present) at the point and under each bootstrap weighting."""
    ones = np.ones((1, len(y_test)))
    point, boot = [], []
    for j in range(probs.shape[1]):
        pos = y_test == j
        if pos.all() or not pos.any():
            continue
        point.append(weighted_auc(probs[:, j], pos, ones)[0])
        boot.append(weighted_auc(probs[:, j], pos, weights))
    return float(np.mean(point)), np.nanmean(np.stack(boot), axis=0)


def _num(x) -> float | None:
    return round(float(x), 6) if x is not None and np.isfinite(x) else None


def utility_curve(x_train: np.ndarray, y_train: np.ndarray, groups_train: Sequence[str],
                  x_test: np.ndarray, y_test: np.ndarray, groups_test: Sequence[str],
                  x_synth: np.ndarray, y_synth: np.ndarray, n_labels: int, *,
                  fractions: Sequence[float] = FRACTIONS, protocols: Sequence[str] = PROTOCOLS,
                  draws: int = DRAWS, bootstrap: int = 1000, seed: int = 0,
                  trainer: Trainer = linear_trainer) -> tuple[list[dict], list[dict]]:
    """(points, gains). points: [{real_fraction, protocol, condition, auc, ci_low, ci_high,
    auc_draw_std, n_train_real, n_train_synthetic, n_test, draws}]; gains: with_synthetic minus
    real_only per (fraction, protocol) with its paired bootstrap interval."""
    boots: dict[tuple, np.ndarray] = {}
    weights = bootstrap_weights(groups_test, len(y_test), bootstrap, np.random.default_rng([seed, 41]))
    points = []
    for fraction in fractions:
        n_draws = draws if fraction < 1 else 1
        subsets = [subset_by_patient(y_train, groups_train, fraction,
                                     np.random.default_rng([seed, 43, int(fraction * 1000), d]))
                   for d in range(n_draws)]
        runs: dict[tuple[str, str], list] = {}
        for keep in subsets:
            xr, yr = x_train[keep], y_train[keep]
            real_only = trainer(xr, yr, x_test, n_labels)
            runs.setdefault(("*", "real_only"), []).append((real_only, len(keep), 0))
            for protocol in protocols:
                kw = {"mix": (x_synth, y_synth)} if protocol == "mixing" else {"pretrain": (x_synth, y_synth)}
                probs = trainer(xr, yr, x_test, n_labels, **kw)
                runs.setdefault((protocol, "with_synthetic"), []).append((probs, len(keep), len(y_synth)))
        for protocol in protocols:
            for condition in ("real_only", "with_synthetic"):
                got = runs[("*" if condition == "real_only" else protocol, condition)]
                scored = [macro_auc(p, y_test, weights) for p, _, _ in got]
                auc = float(np.mean([s[0] for s in scored]))
                boot = np.mean([s[1] for s in scored], axis=0)
                boots[(fraction, protocol, condition)] = boot
                lo, hi = percentile_interval(boot)
                points.append({"real_fraction": float(fraction), "protocol": protocol,
                               "condition": condition, "auc": _num(auc), "ci_low": _num(lo),
                               "ci_high": _num(hi),
                               "auc_draw_std": _num(np.std([s[0] for s in scored])),
                               "n_train_real": int(np.mean([n for _, n, _ in got])),
                               "n_train_synthetic": got[0][2], "n_test": int(len(y_test)),
                               "draws": len(got)})
    return points, gains(points, boots)


def gains(points: list[dict], boots: dict[tuple, np.ndarray]) -> list[dict]:
    """with_synthetic minus real_only at each (fraction, protocol), with the 95% interval of the
    paired difference (same test resamples) and whether the two points' intervals overlap."""
    by = {(p["real_fraction"], p["protocol"], p["condition"]): p for p in points}
    out = []
    for (fraction, protocol, condition), p in by.items():
        base = by.get((fraction, protocol, "real_only"))
        if condition != "with_synthetic" or base is None or None in (p["auc"], base["auc"]):
            continue
        lo, hi = percentile_interval(boots[(fraction, protocol, condition)]
                                     - boots[(fraction, protocol, "real_only")])
        out.append({"real_fraction": fraction, "protocol": protocol,
                    "gain": _num(p["auc"] - base["auc"]), "ci_low": _num(lo), "ci_high": _num(hi),
                    "intervals_overlap": not (p["ci_low"] is not None and base["ci_high"] is not None
                                              and p["ci_low"] > base["ci_high"])})
    return out
