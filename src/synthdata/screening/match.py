"""Matching samples against prepared references: embedders retrieve, `aligned` verifies.

    screener = Screener(embedders, aligned, references, k)
    data = screener.query_data(images)     # what a sample needs: vectors, a thumbnail
    result = screener.match(data)          # per matcher: score and nearest real images

Each embedder searches its reference rows (every view of every real image, `embedders.py`)
and keeps the k nearest distinct real images; its score is the top-1 cosine (absolute for
signed embedders). The aligned matcher (`align.py`) re-scores the union of the embedders'
candidates and keeps its own ranking. `exclude_groups` leaves out each query's own patient
group (or cluster of groups): calibration uses it to measure how near *other* patients'
images come. A sample inside a larger canvas (the aligned matcher found a content box) is
also searched by its content alone when that looks like a pasted picture (query-side
augmentation: a screenshot's border and text otherwise steer the embedders). The screener
also carries each matcher's standing from calibration (`failed`, `review_from`) into its
results, so `decide.py` never accepts on a failed matcher's word.
Query data is what the dataset folder keeps per raw shard (`shardio`), so re-screening with
another threshold is a search, with no image decoded again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from synthdata.screening.align import AlignedMatcher
from synthdata.screening.loaded import LoadedReference
from synthdata.screening.embedders import Embedder, blank_rows

VERIFY_BATCH = 32  # samples whose candidates are registered together
AUGMENT_K = 3      # candidates each embedder adds from a sample's content view


@dataclass
class MatcherResult:
    """One matcher's answer for n samples."""

    name: str
    score: np.ndarray                 # (n,) top-1 similarity; NaN when nothing was found
    ids: list[list[str]]              # per sample, nearest real ids, best first
    sims: list[list[float]]
    groups: list[list[str]] = field(default_factory=list)


@dataclass
class MatchResult:
    """Every matcher's answer, in configuration order, and which samples are blank.

    `failed`: matchers whose calibration failed, with why (they accept nothing);
    `review_from`: per matcher, the score from which a sample goes at least to review.
    """

    results: dict[str, MatcherResult]
    blank: np.ndarray
    failed: dict[str, str] = field(default_factory=dict)
    review_from: dict[str, float] = field(default_factory=dict)


Exclude = Sequence[str | frozenset[str] | set[str] | None]


def _as_sets(exclude: Exclude | None, n: int) -> list[frozenset[str]] | None:
    if exclude is None:
        return None
    return [frozenset() if e is None else frozenset([e]) if isinstance(e, str)
            else frozenset(e) for e in exclude]


def nearest_images(ref: LoadedReference, queries: np.ndarray, k: int, signed: bool = False,
                   exclude: Exclude | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sims, image indices), (n, k) best first, of the k nearest distinct real images.

    Rows are views of images: a row's similarity counts for its image, the best view wins.
    Signed: the absolute cosine. `exclude[i]`: a group (or set of groups) whose images
    query i must not get. Missing neighbours: index -1, similarity -inf.
    """
    n = len(queries)
    excluded = _as_sets(exclude, n)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_i = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or ref.index is None or ref.index.ntotal == 0:
        return out_s, out_i
    total = ref.index.ntotal
    per_image = max(1, int(ref.meta.get("max_rows_per_image", 1)))
    todo = np.arange(n)
    rows_k = min(total, k * per_image)
    while len(todo):
        q = np.ascontiguousarray(queries[todo], dtype=np.float32)
        sims, rows = ref.index.search(q, rows_k)
        if signed:
            s2, r2 = ref.index.search(-q, rows_k)
            sims, rows = np.concatenate([sims, s2], axis=1), np.concatenate([rows, r2], axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")
        unresolved = []
        for t, qi in enumerate(todo):
            seen: list[int] = []
            got: list[float] = []
            for j in order[t]:
                row = rows[t, j]
                if row < 0:
                    break
                img = int(ref.owners[row])
                if img in seen or (excluded is not None and ref.groups[img] in excluded[qi]):
                    continue
                seen.append(img)
                got.append(float(sims[t, j]))
                if len(seen) == k:
                    break
            if len(seen) < k and rows_k < total:
                unresolved.append(qi)
                continue
            out_i[qi, :len(seen)], out_s[qi, :len(got)] = seen, got
        if rows_k >= total:
            break
        todo, rows_k = np.array(unresolved, dtype=np.int64), min(total, rows_k * 8)
    return np.where(np.isfinite(out_s), np.clip(out_s, -1.0, 1.0), out_s), out_i


class Screener:
    """Embedders and an optional aligned matcher over their prepared references."""

    def __init__(self, embedders: Sequence[Embedder], aligned: AlignedMatcher | None,
                 references: dict[str, LoadedReference], k: int,
                 failed: dict[str, str] | None = None,
                 review_from: dict[str, float] | None = None):
        self.embedders, self.aligned, self.refs, self.k = list(embedders), aligned, references, k
        self.failed, self.review_from = dict(failed or {}), dict(review_from or {})
        self._aligned_index: dict[str, int] | None = None

    @property
    def names(self) -> list[str]:
        """Matcher names in configuration order (embedders, then aligned)."""
        return [e.name for e in self.embedders] + ([self.aligned.name] if self.aligned else [])

    def query_data(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Per matcher, what each sample needs: embedder vectors; the aligned thumbnail."""
        out = {e.name: e.embed(images) for e in self.embedders}
        if self.aligned is not None:
            out[self.aligned.name] = self.aligned.query_data(images)
        return out

    def blank(self, data: dict[str, np.ndarray]) -> np.ndarray:
        """True for samples with no structure at all (constant images)."""
        if self.aligned is not None:
            return np.array([self.aligned.is_blank(t) for t in data[self.aligned.name]], bool)
        return blank_rows(data[self.embedders[0].name])

    def match(self, data: dict[str, np.ndarray],
              exclude_groups: Exclude | None = None) -> MatchResult:
        """Every matcher's nearest real images and score for each sample."""
        results: dict[str, MatcherResult] = {}
        candidates: list[set[str]] | None = None
        for emb in self.embedders:
            ref = self.refs[emb.name]
            sims, idx = nearest_images(ref, data[emb.name], self.k, emb.signed, exclude_groups)
            ids = [[str(ref.ids[j]) for j in row if j >= 0] for row in idx]
            results[emb.name] = MatcherResult(
                emb.name, np.where(idx[:, 0] >= 0, sims[:, 0], np.nan).astype(np.float32)
                if len(idx) else np.zeros(0, np.float32), ids,
                [[float(s) for s, j in zip(srow, irow) if j >= 0] for srow, irow in zip(sims, idx)],
                [[str(ref.groups[j]) for j in row if j >= 0] for row in idx])
            candidates = [set(i) for i in ids] if candidates is None else \
                [c | set(i) for c, i in zip(candidates, ids)]
        if self.aligned is not None:
            thumbs = data[self.aligned.name]
            self._augment(thumbs, candidates or [], exclude_groups)
            results[self.aligned.name] = self._verify(thumbs, candidates or [])
        return MatchResult(results, self.blank(data), self.failed, self.review_from)

    def _augment(self, thumbs: np.ndarray, candidates: list[set[str]],
                 exclude_groups: Exclude | None) -> None:
        """Query-side augmentation: a sample pasted on a canvas (`AlignedMatcher.framed`) is
        also searched by its content alone, and those neighbours verified too."""
        aligned = self.aligned
        assert aligned is not None
        boxed = [q for q in range(len(thumbs)) if aligned.framed(thumbs[q])]
        if not boxed or not candidates:
            return
        views = [np.asarray(thumbs[q][1]) for q in boxed]
        excl = None if exclude_groups is None else [exclude_groups[q] for q in boxed]
        for emb in self.embedders:
            ref = self.refs[emb.name]
            _, idx = nearest_images(ref, emb.embed(views), min(self.k, AUGMENT_K), emb.signed,
                                    excl)
            for q, row in zip(boxed, idx):
                candidates[q] |= {str(ref.ids[j]) for j in row if j >= 0}

    def _verify(self, thumbs: np.ndarray, candidates: list[set[str]]) -> MatcherResult:
        """Aligned scores of each sample's candidates, best first (in batches of samples)."""
        ref = self.refs[self.aligned.name]  # type: ignore[union-attr]
        if self._aligned_index is None:
            self._aligned_index = {str(i): j for j, i in enumerate(ref.ids)}
        score = np.full(len(thumbs), np.nan, dtype=np.float32)
        ids: list[list[str]] = []
        sims: list[list[float]] = []
        groups: list[list[str]] = []
        rows = [sorted(self._aligned_index[c] for c in cands if c in self._aligned_index)
                for cands in candidates]
        for start in range(0, len(rows), VERIFY_BATCH):
            batch = range(start, min(start + VERIFY_BATCH, len(rows)))
            scored = self.aligned.scores_many(  # type: ignore[union-attr]
                [thumbs[q] for q in batch],
                [np.asarray(ref.data[rows[q]]) for q in batch])
            for q, s in zip(batch, scored):
                order = np.argsort(-s, kind="stable")[:self.k]
                ids.append([str(ref.ids[rows[q][o]]) for o in order])
                sims.append([float(s[o]) for o in order])
                groups.append([str(ref.groups[rows[q][o]]) for o in order])
                if len(order):
                    score[q] = s[order[0]]
        return MatcherResult("aligned", score, ids, sims, groups)
