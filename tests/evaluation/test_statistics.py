"""Honest statistics: patient bootstrap, FD at infinite n, unbiased KID and CMMD, the floor at
equal n. Data are seeded Gaussian draws (no images)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthdata.evaluation import metrics
from synthdata.evaluation.bootstrap import (bootstrap_weights, disjoint_pairs, percentile_interval,
                                            weighted_auc)
from synthdata.evaluation.fidstats import fd_infinity, fid_interval, matched_floor
from synthdata.evaluation.mmd import cmmd, kid_unbiased


def _patients(n_patients: int, per_patient: int, seed: int = 0):
    """Scores with a strong patient effect: 5 studies of a patient move together."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n_patients)
    effect = rng.normal(0, 1.5, n_patients)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    y = np.repeat(label, per_patient).astype(bool)
    scores = np.repeat(label * 1.0 + effect, per_patient) + rng.normal(0, 0.3, n_patients * per_patient)
    return scores, y, list(groups)


def test_weighted_auc_equals_sklearn_on_the_repeated_sample():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=40), 1)           # ties on purpose
    y = rng.integers(0, 2, 40).astype(bool)
    weights = bootstrap_weights(None, 40, 5, rng)
    ours = weighted_auc(scores, y, weights)
    for w, got in zip(weights, ours):
        idx = np.repeat(np.arange(40), w)
        assert got == pytest.approx(roc_auc_score(y[idx], scores[idx]), abs=1e-12)


def test_patient_bootstrap_gives_wider_intervals_than_image_bootstrap():
    """5 images per patient: resampling images pretends there are 5x more independent cases."""
    scores, y, groups = _patients(60, 5)
    widths = {}
    for name, g in (("images", None), ("patients", groups)):
        w = bootstrap_weights(g, len(y), 1000, np.random.default_rng(7))
        lo, hi = percentile_interval(weighted_auc(scores, y, w))
        widths[name] = hi - lo
    assert widths["patients"] > 1.5 * widths["images"], widths
    # a patient's images are drawn together: equal weights within each patient
    w = bootstrap_weights(groups, len(y), 3, np.random.default_rng(0)).reshape(3, 60, 5)
    assert (w == w[:, :, :1]).all()


def test_fd_infinity_recovers_a_known_gaussian_fd():
    d = 32
    shift = np.full(d, 0.2)
    var = np.linspace(0.5, 2.0, d)
    true = float((shift ** 2).sum() + (1 + var - 2 * np.sqrt(var)).sum())   # diagonal covariances
    est, plain = [], []
    for s in range(3):
        rng = np.random.default_rng(100 + s)
        a = rng.normal(size=(400, d))
        b = shift + rng.normal(size=(400, d)) * np.sqrt(var)
        est.append(fd_infinity(a, b, seed=s)["value"])
        plain.append(metrics.fid(a, b))
    assert abs(np.mean(est) - true) < 0.1 * true, (est, true)
    assert abs(np.mean(plain) - true) > 3 * abs(np.mean(est) - true)   # FID's bias at n=400


def test_cmmd_is_zero_in_expectation_for_one_distribution():
    same, se = [], []
    for s in range(30):
        rng = np.random.default_rng(s)
        out = cmmd(rng.normal(size=(120, 8)), rng.normal(size=(100, 8)), seed=s)
        same.append(out["value"])
        se.append(out["se"])
    mean, spread = np.mean(same), np.std(same) / np.sqrt(len(same))
    assert abs(mean) < 3 * spread, (mean, spread)
    assert min(same) < 0 < max(same)                    # unbiased: negative values happen
    assert 0.5 < np.mean(se) / np.std(same) < 2         # the jackknife SE is about right
    rng = np.random.default_rng(99)
    shifted = cmmd(rng.normal(size=(120, 8)), 0.5 + rng.normal(size=(100, 8)))
    assert shifted["value"] > 5 * shifted["se"]


def test_kid_unbiased_matches_torchmetrics_on_full_subsets_and_is_centred():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(150, 16)), 0.3 + rng.normal(size=(150, 16))
    ours = kid_unbiased(a, b)
    tm_mean, _ = metrics.kid(a, b, subsets=3, subset_size=150)   # a subset of all = the whole set
    assert ours["value"] == pytest.approx(tm_mean, rel=1e-6)
    assert ours["n_real"] == 150 and ours["n_synthetic"] == 150 and ours["se"] > 0
    null = [kid_unbiased(r.normal(size=(100, 8)), r.normal(size=(100, 8)))["value"]
            for r in (np.random.default_rng(s) for s in range(20))]
    assert abs(np.mean(null)) < 3 * np.std(null) / np.sqrt(20)


def test_disjoint_pairs_never_share_a_patient_and_have_equal_size():
    groups = [f"p{i // 3}" for i in range(90)]        # 3 images per patient
    for a, b in disjoint_pairs(groups, 40, 4, seed=1):
        assert len(a) == len(b) == 40
        assert not {groups[i] for i in a} & {groups[i] for i in b}
    with pytest.raises(ValueError):
        disjoint_pairs(groups, 46, 1, seed=1)


def test_floor_and_matched_figures_use_the_same_n_per_side():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(300, 8))
    fake = 0.4 + rng.normal(size=(80, 8))
    groups = [f"p{i // 2}" for i in range(300)]
    out = matched_floor(real, fake, real_groups=groups, draws=4, seed=0)
    assert out["n"] == {"real_a": 80, "real_b": 80, "synthetic": 80}
    rvr, syn = out["real_vs_real"], out["synthetic_vs_real"]
    assert rvr["n_real"] == rvr["n_synthetic"] == syn["n_real"] == syn["n_synthetic"] == 80
    assert len(rvr["fid_draws"]) == 4 and rvr["fid_std"] > 0
    assert rvr["fid"] < syn["fid"]
    ci = fid_interval(real, fake, real_groups=groups, resamples=50)["ci"]
    assert ci[0] < metrics.fid(real, fake) < ci[1]


def test_fid_interval_holds_the_estimate_when_the_distance_is_small():
    """Resampling repeats images and raises FID; re-centring keeps the estimate inside."""
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(200, 16)), rng.normal(size=(120, 16))
    out = fid_interval(real, fake, resamples=100)
    assert out["shift"] > 0                              # the duplication artefact, measured
    assert out["ci"][0] < metrics.fid(real, fake) < out["ci"][1]
