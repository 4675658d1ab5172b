"""Decisions, threshold calibration and near-duplicate flags."""

from __future__ import annotations

import numpy as np
import pytest

from synthdata.screening import calibrate
from synthdata.screening import index as ix
from synthdata.screening.decide import decide, near_duplicates
from synthdata.screening.embedders import l2_normalise


def test_reject_at_threshold_review_in_band_accept_below():
    sims = np.array([0.95, 0.9, 0.89, 0.85, 0.84, 0.1])
    assert decide(sims, 0.9, 0.05) == ["reject", "reject", "review", "review", "accept",
                                       "accept"]
    assert decide(sims, 0.9) == ["reject", "reject", "accept", "accept", "accept", "accept"]


def test_auto_threshold_method_and_numbers():
    sims = np.concatenate([np.linspace(0.2, 0.8, 99), [0.99995]])  # one in-reference duplicate
    threshold, info = calibrate.auto_threshold(sims, quantile=0.99, margin=0.5)
    q = np.quantile(np.linspace(0.2, 0.8, 99), 0.99)
    assert threshold == pytest.approx(q + 0.5 * (1 - q))
    assert info["duplicates_excluded"] == 1 and info["pairs"] == 99
    assert info["real_nn"]["max"] == pytest.approx(0.8)
    assert calibrate.auto_threshold(np.zeros(0))[0] is None


def test_threshold_precedence():
    sims = np.linspace(0.1, 0.5, 200)
    assert calibrate.resolve_threshold(0.7, 0.3, sims, 0.99, 0.5, 0.95)[0] == 0.3
    assert calibrate.resolve_threshold(0.7, None, sims, 0.99, 0.5, 0.95)[0] == 0.7
    auto, how = calibrate.resolve_threshold("auto", None, sims, 0.99, 0.5, 0.95)
    assert how["method"].startswith("real-vs-real") and 0.5 < auto < 0.8
    fallback, how = calibrate.resolve_threshold("auto", None, np.zeros(0), 0.99, 0.5, 0.95)
    assert fallback == 0.95 and "default" in how["method"]


def test_calibration_excludes_the_same_source_file():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 16))
    # Two "volumes" of near-identical slices each, plus one unrelated file.
    x = l2_normalise(np.concatenate([base[0] + 0.01 * rng.standard_normal((5, 16)),
                                     base[1] + 0.01 * rng.standard_normal((5, 16)),
                                     base[2:3]]).astype(np.float32))
    groups = np.array([0] * 5 + [1] * 5 + [2], dtype=np.int32)
    index = ix.build_index(x, ix.IndexChoice("flat", 16))
    sims = calibrate.real_nn_similarities(index, x, groups)
    assert len(sims) == 11 and sims.max() < 0.9  # never a slice of its own volume
    assert len(calibrate.real_nn_similarities(index, x, np.zeros(11, np.int32))) == 0


def test_near_duplicates_among_synthetic_samples():
    rng = np.random.default_rng(1)
    x = l2_normalise(rng.standard_normal((6, 64)).astype(np.float32))
    x[4] = x[1]  # mode collapse: sample 4 repeats sample 1
    keys = [f"k{i}" for i in range(6)]
    dup_of, sims = near_duplicates(x, keys, threshold=0.95)
    assert dup_of[1] == "k4" and dup_of[4] == "k1"
    assert [d for i, d in enumerate(dup_of) if i not in (1, 4)] == [None] * 4
    assert sims[1] == pytest.approx(1.0, abs=1e-5)
