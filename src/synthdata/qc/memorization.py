"""Memorization screening as a QC check, for `qc.top_up`: near-copies are regenerated.

With `qc.top_up: true` and a `memorization.reference`, the generation worker screens each
shard's images with the same matchers, reference and thresholds as the screening step
(`screening.matchers.prepare_matchers`, cached on disk, so the worker and the step agree) and
treats a reject or review as a failed check. The sample is regenerated with its next attempt
seed like any QC failure, so the accepted shards keep the planned per-label counts; the real
image it resembled is named by pseudonym only.

What decided the regeneration is part of the shard's identity: `setup_identity` digests the
screening setup (matchers and their fingerprints, the prepared references' content keys, the
calibrated thresholds, review band, k); the check carries it as `params["setup"]`, every
shard marker records it, and a resume under another setup is refused (`synthdata.dataset.prepare`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np

from synthdata.qc.checks import CheckResult
from synthdata import privacy
from synthdata.folder.shards import to_uint8
from synthdata.qc import Check
from synthdata.screening.kinds import REAL_KIND

CHECK = "memorization"


def setup_identity(setup) -> str:
    """sha256 of what decides which samples top-up regenerates (a `MatcherSetup`)."""
    from synthdata.screening.align import AlignedMatcher  # deferred: loads scipy

    blob = json.dumps({"deciding": list(setup.deciding),
                       "fingerprints": sorted([n, f] for n, f in setup.fingerprints),
                       "aligned": AlignedMatcher().fingerprint if setup.aligned else None,
                       "references": sorted(h.key for _, h in setup.handles),
                       "thresholds": {n: repr(float(t)) for n, t in setup.thresholds},
                       "review_band": setup.review_band, "k": setup.k}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def memorization_check(memorization):
    """A group check (`qc.Check`) screening images against the spec's real reference
    (`memorization` with `from-training` already resolved: `generation.trained`)."""
    from synthdata.screening.decide import ACCEPT, decide_all  # deferred: loads faiss
    from synthdata.screening.matchers import prepare_matchers  # deferred: loads faiss, scipy

    setup, _ = prepare_matchers(memorization)
    screener = setup.screener()
    thresholds = dict(setup.thresholds)

    def run(images: Sequence[np.ndarray], rows: Sequence[Mapping]) -> list[CheckResult]:
        result = screener.match(screener.query_data([to_uint8(im) for im in images]))
        out = []
        for d in decide_all(result, thresholds, setup.review_band, list(setup.deciding)):
            if d.decision == ACCEPT:
                out.append(CheckResult(CHECK, True, "", d.similarity))
                continue
            real = privacy.remember([d.nearest_real_id], REAL_KIND)[d.nearest_real_id] \
                if d.nearest_real_id else "-"
            score = "no score" if d.similarity is None else \
                f"{d.matcher} {d.similarity:.4f} >= {thresholds[d.matcher] - setup.review_band:.4f}"
            out.append(CheckResult(CHECK, False, f"{d.decision}: near real image {real} ({score})"
                                   + (f", {d.note}" if d.note else ""), d.similarity))
        return out

    return Check(CHECK, {"thresholds": {k: round(float(v), 6) for k, v in thresholds.items()},
                         "matchers": list(setup.deciding), "setup": setup_identity(setup)}, run)
