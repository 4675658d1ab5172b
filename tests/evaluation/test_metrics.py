"""Fidelity and diversity metrics against reference implementations and constructed answers.

References: FID with scipy.linalg.sqrtm on numpy means/covariances (the formula of Heusel et
al.), KID as the unbiased MMD^2 with the cubic polynomial kernel written out in numpy
(Bińkowski et al.), on the same features. PRDC on sets whose answers are known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from synthdata.evaluation import diversity, metrics


def _features(seed: int, n: int, dim: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)          # correlated features
    return (rng.normal(shift, scale, size=(n, dim)) @ mix).astype(np.float32)


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def reference_kid(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    d, m = a.shape[1], len(a)

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.sum() / m ** 2)


def torchmetrics_fid(a: np.ndarray, b: np.ndarray) -> float:
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Given(torch.nn.Module):
        num_features = a.shape[1]

        def forward(self, x):
            return x

    metric = FrechetInceptionDistance(feature=Given())
    metric.update(torch.from_numpy(a.astype(np.float64)), real=True)
    metric.update(torch.from_numpy(b.astype(np.float64)), real=False)
    return float(metric.compute())


# (n_real, n_fake, dim): more samples than dimensions, and fewer (the low-rank branch)
@pytest.mark.parametrize("n_real,n_fake,dim,shift,scale", [
    (400, 300, 16, 0.0, 1.0), (400, 300, 64, 0.3, 1.2), (300, 200, 128, 1.0, 0.7),
    (60, 90, 128, 0.2, 1.0), (150, 40, 256, 0.5, 1.5)])
def test_fid_matches_torchmetrics_and_scipy(n_real, n_fake, dim, shift, scale):
    real, fake = _features(1, n_real, dim), _features(2, n_fake, dim, shift, scale)
    ours = metrics.fid(real, fake)
    assert ours == pytest.approx(reference_fid(real, fake), rel=1e-3)
    assert ours == pytest.approx(torchmetrics_fid(real, fake), rel=1e-3)
    assert ours > 0


def test_fid_of_a_set_with_itself_is_zero():
    real = _features(3, 300, 32)
    assert abs(metrics.fid(real, real)) < 1e-6


@pytest.mark.parametrize("dim,shift", [(16, 0.0), (64, 0.5)])
def test_kid_matches_numpy_reference(dim, shift):
    real, fake = _features(4, 200, dim), _features(5, 200, dim, shift)
    # One subset of the whole set: the permutation cannot change the MMD, so it is exact.
    mean, std = metrics.kid(real, fake, subsets=1, subset_size=200)
    assert mean == pytest.approx(reference_kid(real, fake), rel=1e-3)
    assert std == 0.0


def test_kid_subsets_are_seeded():
    real, fake = _features(6, 300, 32), _features(7, 250, 32, 0.4)
    first = metrics.kid(real, fake, subsets=20, subset_size=100, seed=3)
    assert metrics.kid(real, fake, subsets=20, subset_size=100, seed=3) == first
    assert metrics.kid(real, fake, subsets=20, subset_size=100, seed=4) != first
    assert first[0] > 0 and first[1] > 0


def test_prdc_identical_sets_score_one():
    real = _features(8, 200, 16)
    out = metrics.prdc(real, real.copy())
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    assert out["density"] > 0.9


def test_prdc_disjoint_sets_score_zero():
    real = _features(9, 200, 16)
    out = metrics.prdc(real, real + 1000.0)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_half_copies_half_far_has_precision_one_half():
    real = _features(10, 200, 16)
    fake = np.concatenate([real[:100], real[100:] + 1000.0])
    out = metrics.prdc(real, fake)
    assert out["precision"] == 0.5
    assert 0.5 <= out["coverage"] < 1.0                  # copied points are covered, far ones cover none


def test_fidelity_reports_too_small_sets_as_none():
    out = metrics.fidelity(_features(11, 4, 8), _features(12, 3, 8))
    assert out["precision"] is None and out["recall"] is None
    assert any("prdc" in n for n in out["notes"])
    assert out["n_real"] == 4 and out["n_synthetic"] == 3


def test_nn_similarity_finds_duplicates():
    x = _features(13, 50, 8)
    x[7] = x[3] * 2.0                                      # same direction: cosine 1
    sims = metrics.nn_similarity(x)
    assert sims[7] == pytest.approx(1.0, abs=1e-5) and sims[3] == pytest.approx(1.0, abs=1e-5)
    assert np.all(sims <= 1.0 + 1e-5)
    sorted_other = np.sort(np.delete(sims, [3, 7]))
    assert sorted_other[-1] < 0.999


def test_msssim_window_fits_the_image_size():
    assert diversity.msssim_window(512) == 11
    assert diversity.msssim_window(161) == 11
    assert diversity.msssim_window(160) == 9
    assert diversity.msssim_window(64) == 3
    assert diversity.msssim_window(32) is None


def test_intra_prompt_msssim_groups_by_prompt_and_scores_copies_as_one():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    other = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    images = {0: base, 1: base.copy(), 2: other, 3: rng.integers(0, 256, (64, 64), dtype=np.uint8)}
    same = diversity.intra_prompt_msssim(["a", "a", "b", "c"], ["x"] * 4,
                                         lambda idx: {i: images[i] for i in idx})
    assert same["grouping"] == "prompt" and same["pairs"] == 1 and same["window"] == 3
    assert same["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    spread = diversity.intra_prompt_msssim(["a", "b", "c", "d"], ["x", "y", "x", "y"],
                                           lambda idx: {i: images[i] for i in idx})
    assert spread["grouping"] == "label" and spread["pairs"] == 2
    assert spread["ms_ssim"] < 0.2                        # independent noise images
