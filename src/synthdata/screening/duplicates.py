"""Near-duplicates inside the reference, across patient groups, found before calibrating.

PACS exports often hold one study twice under two PatientIDs (a merge, a re-export, a test
patient). Counted as two patients, such a pair looks to calibration like "another patient's
image that scores like a copy": the threshold climbs above every copy and screening accepts
everything. So before the false-positive estimate:

- *same pixels*: reference images whose stored thumbnails are identical (the whole
  reference, by hash);
- *near-copies by the verifier*: a sampled real image whose best match among other
  patients' images scores at or above `bar`: what a typical copy scores (the median score
  of the synthesized copies, at least `DUPLICATE_MIN`). Look-alike images of distinct
  patients (phantoms, one protocol's slices) score below that and stay other patients:
  they are what makes a threshold hard to calibrate, not duplicates.

Each pair joins its two groups into one *cluster* (union-find): calibration then treats a
cluster as one patient (its images never count as other patients of each other), and the
report lists the pairs (by pseudonym), the clusters and how they were found.
`memorization.reference_duplicates: error` refuses such a reference instead.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

DUPLICATE_MIN = 0.95  # a cross-patient pair below this score is never called a duplicate
SHOWN = 20            # pairs listed in the report


@dataclass(frozen=True)
class Pair:
    """Two reference images of different groups that are (near-)copies of each other."""

    a: str
    b: str
    group_a: str
    group_b: str
    score: float
    how: str  # "same pixels" | "verifier"


class Clusters:
    """Union-find over patient groups: groups joined by a duplicate pair are one cluster."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, group: str) -> str:
        """The cluster (its representative group) a group belongs to."""
        self._parent.setdefault(group, group)
        root = group
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[group] != root:
            self._parent[group], group = root, self._parent[group]
        return root

    def union(self, a: str, b: str) -> bool:
        """Join two groups; True when they were in different clusters."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self._parent[max(ra, rb)] = min(ra, rb)
        return True

    def members(self, group: str) -> frozenset[str]:
        """Every group of the group's cluster (itself alone when it joined none)."""
        root = self.find(group)
        return frozenset(g for g in self._parent if self.find(g) == root) | {group}

    def merged(self) -> list[frozenset[str]]:
        """The clusters of two or more groups."""
        out: dict[str, set[str]] = defaultdict(set)
        for g in list(self._parent):
            out[self.find(g)].add(g)
        return sorted((frozenset(v) for v in out.values() if len(v) > 1), key=sorted)


def same_pixels(ids: np.ndarray, groups: np.ndarray, data: np.ndarray) -> list[Pair]:
    """Pairs of images of different groups whose stored rows are byte-identical.

    `data`: one row per image (the aligned matcher's thumbnails, or a vector store's first
    row of each image). Within a set of identical rows, each image pairs with the first one.
    """
    first: dict[bytes, int] = {}
    out = []
    for i in range(len(ids)):
        key = hashlib.sha256(np.ascontiguousarray(data[i]).tobytes()).digest()
        j = first.setdefault(key, i)
        if j != i and groups[i] != groups[j]:
            out.append(Pair(str(ids[j]), str(ids[i]), str(groups[j]), str(groups[i]), 1.0,
                            "same pixels"))
    return out


def summary(pairs: list[Pair], clusters: Clusters, bar: float, policy: str) -> dict:
    """What the report says about duplicates (real ids here; pseudonymized for output)."""
    merged = clusters.merged()
    return {
        "pairs": len(pairs), "same_pixels": sum(p.how == "same pixels" for p in pairs),
        "by_verifier": sum(p.how == "verifier" for p in pairs), "clusters": len(merged),
        "groups_in_clusters": sum(len(c) for c in merged), "verifier_bar": round(bar, 6),
        "policy": policy,
        "how": ("identical stored thumbnails over the whole reference, and each calibration "
                "image's best match among other patients scoring at or above the bar (the median "
                "score of synthesized copies); each cluster of groups joined by a pair counts as "
                "one patient for the false-positive estimate"),
        "examples": [{"a": p.a, "b": p.b, "group_a": p.group_a, "group_b": p.group_b,
                      "score": round(p.score, 6), "how": p.how}
                     for p in sorted(pairs, key=lambda p: (-p.score, p.a, p.b))[:SHOWN]],
        "cluster_sizes": sorted((len(c) for c in merged), reverse=True)[:SHOWN]}
