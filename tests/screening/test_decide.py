"""Decisions (one matcher, several, failing closed), threshold calibration, near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from synthdata.screening import calibrate
from synthdata.screening import index as ix
from synthdata.screening.decide import decide, decide_all, near_duplicates
from synthdata.screening.embedders import l2_normalise
from synthdata.screening.match import MatcherResult, MatchResult


def test_reject_at_threshold_review_in_band_accept_below():
    sims = np.array([0.95, 0.9, 0.89, 0.85, 0.84, 0.1])
    assert decide(sims, 0.9, 0.05) == ["reject", "reject", "review", "review", "accept",
                                       "accept"]
    assert decide(sims, 0.9) == ["reject", "reject", "accept", "accept", "accept", "accept"]


def test_non_finite_scores_go_to_review():
    sims = np.array([np.nan, np.inf, -np.inf, 0.95, 0.1])
    assert decide(sims, 0.9) == ["review", "review", "review", "reject", "accept"]


def _result(scores: dict[str, list[float]], blank: list[bool]) -> MatchResult:
    n = len(blank)
    return MatchResult({m: MatcherResult(m, np.array(s, np.float32),
                                         [[f"{m}-real-{i}"] if np.isfinite(s[i]) else []
                                          for i in range(n)],
                                         [[float(x)] if np.isfinite(x) else [] for x in s],
                                         [[f"group-{i}"] if np.isfinite(s[i]) else []
                                          for i in range(n)])
                        for m, s in scores.items()}, np.array(blank))


def test_any_matcher_rejects_any_reviews_and_blank_or_missing_fails_closed():
    result = _result({"aligned": [0.99, 0.50, 0.50, 0.86, 0.10, 0.99, np.nan],
                      "pixel": [0.10, 0.97, 0.50, 0.10, 0.10, 0.99, 0.5]},
                     [False, False, False, False, False, True, False])
    thresholds = {"aligned": 0.9, "pixel": 0.95}
    out = decide_all(result, thresholds, 0.05, ["aligned", "pixel"])
    assert [d.decision for d in out] == ["reject", "reject", "accept", "review", "accept",
                                         "review", "review"]
    assert [d.matcher for d in out[:2]] == ["aligned", "pixel"]  # who decided, and its score
    assert out[1].similarity == pytest.approx(0.97) and out[1].nearest_real_id == "pixel-real-1"
    assert out[1].nearest_group == "group-1"
    assert out[5].note == "blank or constant image"  # never accepted, whatever the scores
    assert out[5].nearest_real_id is None and out[5].nearest_group is None
    assert out[6].note == "no finite score" and out[6].decision == "review"
    assert out[2].note is None and out[2].matcher == "aligned"


def test_threshold_for_target_recall_with_false_positives_estimated():
    copies = np.linspace(0.80, 1.0, 1000)
    other = np.linspace(0.10, 0.60, 500)
    threshold, info = calibrate.choose_threshold(copies, other, 0.99, 0.01)
    assert threshold == pytest.approx(np.quantile(copies, 0.01, method="lower"))
    assert info["recall"] >= 0.99 and info["false_positive_estimate"] == 0.0
    assert info["copies"] == 1000 and info["trials"] == 500 and info["status"] == "ok"
    lo, hi = info["false_positive_interval"]
    assert lo == 0.0 and 0 < hi < 0.01  # 0 of 500 trials: 95% interval up to 0.74%
    assert not info["coarse"] and "warning" not in info


def test_threshold_raised_to_the_false_positive_budget_reviews_the_gap_or_fails_closed():
    other = np.linspace(0.10, 0.70, 1000)
    # 3% of the copies look like other patients' images: raised to the budget, recall 0.97.
    copies = np.concatenate([np.linspace(0.30, 0.60, 30), np.linspace(0.75, 1.0, 970)])
    threshold, info = calibrate.choose_threshold(copies, other, 0.99, 0.01, min_recall=0.9)
    assert info["false_positive_estimate"] <= 0.01 and threshold > 0.69
    assert info["status"] == "review band" and info["recall"] == pytest.approx(0.97)
    assert "raised to the false-positive budget" in info["warning"]
    # ... and scores from the target-recall threshold up go to review, not accept:
    assert info["review_from"] == pytest.approx(np.quantile(copies, 0.01, method="lower"), abs=1e-6)
    assert decide(np.array([0.5, 0.2]), threshold, 0.0, info["review_from"]) == ["review",
                                                                                 "accept"]
    # Most copies look like other patients: the recall at the budget is under the floor.
    threshold, info = calibrate.choose_threshold(np.linspace(0.30, 1.0, 1000), other, 0.99,
                                                 0.01, min_recall=0.9)
    assert info["status"] == "failed" and info["recall"] < 0.9
    assert "accepts nothing" in info["warning"]
    assert decide(np.array([0.99, 0.2]), threshold, failed=True) == ["reject", "review"]
    nan_copies = np.array([np.nan] * 10 + [0.9] * 990)  # a copy never found counts as missed
    _, info = calibrate.choose_threshold(nan_copies, other, 0.99, 0.01)
    assert info["copies_not_found"] == 10


def test_too_small_a_reference_to_calibrate_is_an_error():
    with pytest.raises(calibrate.CalibrationError, match="2 patient group"):
        calibrate.check_calibratable(40, 2, "aligned")
    with pytest.raises(calibrate.CalibrationError, match="configure a number"):
        calibrate.check_calibratable(5, 5, "aligned")
    calibrate.check_calibratable(10, 3, "aligned")


def test_calibration_pairs_come_from_other_patient_groups_only():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 16))
    # Two "patients" of near-identical slices each, plus one unrelated patient.
    x = l2_normalise(np.concatenate([base[0] + 0.01 * rng.standard_normal((5, 16)),
                                     base[1] + 0.01 * rng.standard_normal((5, 16)),
                                     base[2:3]]).astype(np.float32))
    groups = np.array([0] * 5 + [1] * 5 + [2], dtype=np.int64)
    index = ix.build_index(x, ix.IndexChoice("flat", 16))
    sims = calibrate.real_nn_similarities(index, x, groups, groups)
    assert len(sims) == 11 and sims.max() < 0.9  # never a slice of its own patient
    assert len(calibrate.real_nn_similarities(index, x, groups * 0, groups * 0)) == 0
    # Signed (pixel): an inverted image of another patient counts by its |cosine|.
    y = np.concatenate([x, -x[:1]])
    g = np.append(groups, 9)
    signed = calibrate.real_nn_similarities(ix.build_index(y, ix.IndexChoice("flat", 16)), y,
                                            g, g, signed=True)
    assert signed[0] == pytest.approx(1.0, abs=1e-5)


def test_near_duplicates_among_synthetic_samples():
    rng = np.random.default_rng(1)
    x = l2_normalise(rng.standard_normal((6, 64)).astype(np.float32))
    x[4] = x[1]  # mode collapse: sample 4 repeats sample 1
    keys = [f"k{i}" for i in range(6)]
    dup_of, sims = near_duplicates(x, keys, threshold=0.95)
    assert dup_of[1] == "k4" and dup_of[4] == "k1"
    assert [d for i, d in enumerate(dup_of) if i not in (1, 4)] == [None] * 4
    assert sims[1] == pytest.approx(1.0, abs=1e-5)
