"""Per-sample decisions from every matcher's score, and near-duplicates among synthetics.

Each deciding matcher compares its score with its own threshold:
- `reject`: at or above the threshold (a likely copy);
- `review`: in the band [threshold - review_band, threshold) (DeepSSIM's "similar": a person
  should look);
- `accept`: below that.
The rule combining them: **reject if any matcher says reject; review if any says review;
else accept.** The deciding similarity is the score of the first matcher (in configuration
order) that gave the combined decision, and the nearest real image is that matcher's.

Fail closed: a sample goes to `review` (with a note) when it cannot be judged: a blank or
constant image (nothing to match: its embedding is a zero vector), a non-finite score, or no
neighbour at all. Such samples are never silently accepted. Calibration can narrow what a
matcher may accept (`MatchResult.review_from`: scores it cannot tell from copies within the
false-positive budget go to review) or take it away (`MatchResult.failed`: a matcher whose
calibrated recall is under the floor says review for everything below its threshold, with
the reason as the note).

Near-duplicates among the synthetic samples themselves (mode collapse) are flagged, not
removed: `near_duplicate_of` names the nearest other synthetic sample when its similarity is
at or above the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthdata.screening import index as ix

ACCEPT, REVIEW, REJECT = "accept", "review", "reject"
DECISIONS = (ACCEPT, REVIEW, REJECT)
# Without a real reference nothing is compared with real images: samples that pass QC go to
# the accepted shards with this decision, never `accept` (docs/screening.md, "No reference").
NOT_SCREENED = "not-screened"
BLANK, NO_SCORE = "blank or constant image", "no finite score"


def decide(top1: np.ndarray, threshold: float, review_band: float = 0.0,
           review_from: float | None = None, failed: bool = False) -> list[str]:
    """One matcher's decision for each score; a non-finite score gives `review`.

    Review from `min(threshold - review_band, review_from)`; a failed matcher never accepts.
    """
    top1 = np.asarray(top1, dtype=np.float64)
    finite = np.isfinite(top1)
    safe = np.where(finite, top1, -np.inf)
    low = threshold - review_band if review_from is None else min(threshold - review_band,
                                                                  review_from)
    out = np.where(safe >= threshold, REJECT,
                   np.where((safe >= low) | failed, REVIEW, ACCEPT))
    return np.where(finite, out, REVIEW).tolist()


@dataclass
class SampleDecision:
    """The combined decision of one sample and what decided it."""

    decision: str
    matcher: str | None
    similarity: float | None
    nearest_real_id: str | None
    nearest_group: str | None
    note: str | None


def decide_all(result, thresholds: dict[str, float], review_band: float,
               deciding: list[str]) -> list[SampleDecision]:
    """Combine the deciding matchers' decisions of a `match.MatchResult` (see module doc)."""
    n = len(result.blank)
    failed = getattr(result, "failed", {}) or {}
    review_from = getattr(result, "review_from", {}) or {}
    votes = {m: decide(result.results[m].score, thresholds[m], review_band,
                       review_from.get(m), m in failed) for m in deciding}
    out = []
    for i in range(n):
        scores = {m: float(result.results[m].score[i]) for m in deciding}
        note = BLANK if result.blank[i] else (
            NO_SCORE if not all(np.isfinite(s) for s in scores.values()) else None)
        if note is not None:
            decision = REVIEW
            by = deciding[0]
        else:
            mine = [votes[m][i] for m in deciding]
            decision = REJECT if REJECT in mine else REVIEW if REVIEW in mine else ACCEPT
            by = deciding[mine.index(decision)]
            if decision == REVIEW and by in failed:
                note = failed[by]
            elif decision == REVIEW and scores[by] < thresholds[by] - review_band:
                note = (f"{by} {scores[by]:.4f} is at or above {review_from[by]:.4f}, where "
                        "calibration cannot tell copies from other patients within the "
                        "false-positive budget")
        r = result.results[by]
        sim = scores[by]
        matched = note not in (BLANK, NO_SCORE)  # a blank sample matched nothing: no image to name
        out.append(SampleDecision(
            decision, by, sim if np.isfinite(sim) else None,
            r.ids[i][0] if matched and r.ids[i] else None,
            r.groups[i][0] if matched and r.groups and r.groups[i] else None, note))
    return out


def near_duplicates(vectors: np.ndarray, keys: list[str], threshold: float,
                    exact_limit: int = 100_000) -> tuple[list[str | None], np.ndarray]:
    """(near_duplicate_of, similarity to the nearest other synthetic sample) for each sample."""
    n = len(vectors)
    nearest = np.full(n, np.nan, dtype=np.float32)
    dup_of: list[str | None] = [None] * n
    if n < 2:
        return dup_of, nearest
    plan = ix.choose_index(n, vectors.shape[1], exact_limit=exact_limit, memory_gb=1e9)
    index, order, _ = ix.build_tuned(vectors, plan)
    sims, ids = index.search(vectors, min(n, 4))
    ids = np.where(ids >= 0, order[np.maximum(ids, 0)], -1)  # index rows -> sample rows
    for i in range(n):
        for s, j in zip(sims[i], ids[i]):
            if j >= 0 and j != i:
                nearest[i] = min(s, 1.0)
                if s >= threshold:
                    dup_of[i] = keys[j]
                break
    return dup_of, nearest
