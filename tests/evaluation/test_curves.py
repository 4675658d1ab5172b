"""Data-limited utility curves: the linear probe (CPU path), L2-SP pre-training, patient-bootstrap
intervals; and the CNN trainer's protocol run on the CPU for a few steps. Features are seeded
Gaussian draws; the CNN's images are constructed pictures (helpers.py), not clinical data."""

from __future__ import annotations

import numpy as np
from helpers import labelled_images
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from synthdata.evaluation.cnn import CnnTrainer, preprocess_images
from synthdata.evaluation.curves import subset_by_patient, utility_curve
from synthdata.evaluation.probe import fit_probe


def _world(n_patients: int, seed: int, shift: float = 0.0):
    """3 labels, 2 images per patient, 10-d features with the label in 2 dimensions."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.integers(0, 3, n_patients), 2)
    x = rng.normal(size=(len(y), 10))
    x[:, 0] += 1.5 * (y == 1) + shift
    x[:, 1] += 1.5 * (y == 2)
    groups = [f"s{seed}p{i // 2}" for i in range(len(y))]
    return x, y, groups


def test_probe_without_prior_is_sklearns_logistic_regression():
    x, y, _ = _world(150, 0)
    probe = fit_probe(x, y, 3)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(StandardScaler().fit_transform(x), y)
    assert np.abs(probe.weights.T - ref.coef_).max() < 0.02
    assert np.abs(probe.predict_proba(x) - ref.predict_proba(StandardScaler().fit_transform(x))).max() < 0.01


def test_fine_tuning_stays_near_the_pretrained_weights_when_real_data_is_scarce():
    xs, ys, _ = _world(200, 1)
    xr, yr, _ = _world(3, 2)                       # 6 real images
    prior = fit_probe(xs, ys, 3)
    tuned = fit_probe(xr, yr, 3, prior=prior)
    scratch = fit_probe(xr, yr, 3)
    assert np.abs(tuned.weights - prior.weights).sum() < np.abs(scratch.weights - prior.weights).sum()
    assert (tuned.mean == prior.mean).all()        # the pre-training's standardisation is kept


def test_subsets_take_whole_patients_of_every_label():
    _, y, groups = _world(100, 3)
    keep = subset_by_patient(y, groups, 0.1, np.random.default_rng(0))
    kept = {groups[i] for i in keep}
    assert all(g in kept for g in groups if g in kept)
    assert set(y[keep]) == {0, 1, 2}
    assert sum(1 for g in groups if g in kept) == len(keep)


def test_curve_has_every_fraction_protocol_and_condition_and_is_deterministic():
    xt, yt, gt = _world(120, 4)
    xe, ye, ge = _world(60, 5)
    xs, ys, _ = _world(100, 6)
    kwargs = dict(fractions=(0.1, 1.0), draws=2, bootstrap=200, seed=3)
    points, gains = utility_curve(xt, yt, gt, xe, ye, ge, xs, ys, 3, **kwargs)
    again, _ = utility_curve(xt, yt, gt, xe, ye, ge, xs, ys, 3, **kwargs)
    assert points == again
    keys = {(p["real_fraction"], p["protocol"], p["condition"]) for p in points}
    assert keys == {(f, p, c) for f in (0.1, 1.0) for p in ("mixing", "pretrain")
                    for c in ("real_only", "with_synthetic")}
    for p in points:
        assert p["ci_low"] <= p["auc"] <= p["ci_high"] and p["n_test"] == len(ye)
    real_only = [p for p in points if p["condition"] == "real_only" and p["real_fraction"] == 0.1]
    assert real_only[0]["auc"] == real_only[1]["auc"]          # the same runs under both protocols
    assert {p["draws"] for p in points if p["real_fraction"] == 0.1} == {2}
    assert len(gains) == 4 and all(g["ci_low"] <= g["gain"] <= g["ci_high"] for g in gains)
    # same-distribution synthetic data helps a 10% real set under both protocols
    assert all(g["gain"] > 0 for g in gains if g["real_fraction"] == 0.1)


def test_cnn_trainer_runs_the_pretrain_protocol_on_cpu():
    """The GPU classifier's code path, run on the CPU for a few steps (not a GPU test)."""
    items = labelled_images(8, seed=1)
    labels = sorted({lab for _, lab, _ in items})
    x = preprocess_images([im for _, _, im in items], size=32)
    y = np.array([labels.index(lab) for _, lab, _ in items])
    trainer = CnnTrainer(device="cpu", steps=5, batch=8, seed=0)
    probs = trainer(x[:12], y[:12], x[12:], 3, pretrain=(x, y))
    again = trainer(x[:12], y[:12], x[12:], 3, pretrain=(x, y))     # pre-trained once, reused
    assert probs.shape == (12, 3) and np.allclose(probs.sum(1), 1)
    assert np.array_equal(probs, again) and len(trainer._pretrained) == 1
    assert trainer.describe()["classifier"] == "cnn"
    mixed = trainer(x[:12], y[:12], x[12:], 3, mix=(x, y))
    assert mixed.shape == (12, 3) and not np.array_equal(mixed, probs)
