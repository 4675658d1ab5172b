"""Aligned verification: how well a sample matches a candidate real image once aligned.

An embedder proposes candidates (its k nearest real images); this module scores each
candidate by the best normalised correlation between the sample and the real image over
every alignment a copy can have gone through, in two stages:
1. *Search*: the 8 flips, rotations and transposes (D4), inversion (the absolute
   correlation), each stored rendering of the real image (display window, min-max,
   percentile; see `decoders`), and crops to 76-100% of the real image at any position: the
   sample, shrunk to the crop's scale, slides over the real image's thumbnail (every offset,
   by FFT).
2. *Registration* (`registration.py`): from the best placement of each symmetry, and from the
   whole sample over the whole image, a homography is refined by Lucas-Kanade (shifts,
   rotations, zoom, crops to 60% of the area, aspect, slight perspective) and the sample is
   scored on the registered overlap only.
The score is the better of the two. Both sides are gray thumbnails (aspect ratio not kept)
filtered by a difference of Gaussians (`BAND`), so the score follows edges and texture and
not the silhouette or the brightness: two slices of one volume share their outline and would
correlate at 0.95 as plain thumbnails; band-passed and aligned they do not, while a JPEG'd,
blurred or down-up-scaled copy still does (measured: `benchmarks/bench_memorization.py`).

A sample inside a larger canvas (a screenshot: a constant border with burned-in text) is
also seen without its border: `content_box` finds the largest structured region, and its
thumbnail is a second *view* of the sample that both stages search.

The reference side is stored once per real image (`AlignedMatcher.reference_data`: uint8,
one `SIZE` x `SIZE` gray thumbnail per rendering); the synthetic side as `VIEWS` gray
`QUERY_SIZE` thumbnails per sample (`query_data`: the whole sample, and its content box when
it has a border), so re-screening needs no decoding. These are small pictures of the images:
the real ones live only in the private reference cache (0600 files, 0700 folders). Cost per
sample and candidate on one CPU core: see `benchmarks/RESULTS.md` (numpy FFTs and batched
Gauss-Newton).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property, lru_cache

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from synthdata.screening import registration
from synthdata.screening.thumbnails import band, thumbnail
from synthdata.screening.embedders import D4, d4_all, to_gray

SIZE = registration.SIZE
QUERY_SIZE = 96
RENDERINGS = 3
VIEWS = 2            # the whole sample; its content box (zeros when it has no border)
SCALES = (1.0, 0.88, 0.76, 0.64)
BAND = registration.BAND
ALIGN_VERSION = 2
BLANK_STD = 0.5      # grey levels: below this a thumbnail has no structure to align
BOX_AREA = 0.9       # a content box under this share of the sample makes a second view
BOX_SIDE = 256       # content boxes are found on a copy at most this large
ORIENTATIONS = 4     # registration starts from the best placements of this many of the D4
OUTSIDE = 74         # a start with the real image inside the sample: the sample spans this
BOXED = 4            # orientations tried laying the real content box onto the content view
FRAMED = 0.6         # share of a content box side that is content for a pasted-picture view


def content_box(image: np.ndarray, bounded: bool = True) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the image's structured content when it sits inside a
    constant border (a canvas, a screenshot), else None.

    The border value is the commonest value of the outermost pixels; pixels that differ from
    it are content, thin strokes (text, lines) are removed by a morphological opening, and the
    bounding box of the remaining regions (those of at least 5% of the largest) is the
    content. With `bounded`, None when that box keeps more than `BOX_AREA` of the image or
    less than a tenth of it; else None only when there is no content at all.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    f = max(1, int(np.ceil(max(h, w) / BOX_SIDE)))
    small = np.clip(np.rint(to_gray(img[::f, ::f])), 0, 255).astype(np.uint8)
    ring = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    level = int(np.bincount(ring, minlength=256).argmax())
    content = np.abs(small.astype(np.int16) - level) > 3
    width = max(3, min(5, round(5 * max(small.shape) / BOX_SIDE)))
    if width > 1:
        content = ndimage.binary_opening(content, structure=np.ones((width, width), bool))
    labels, n = ndimage.label(content)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= max(sizes.max() * 0.05, 0.002 * content.size)) + 1
    found = np.isin(labels, keep)
    rows = slice(*np.flatnonzero(found.any(axis=1))[[0, -1]] + [0, 1])
    cols = slice(*np.flatnonzero(found.any(axis=0))[[0, -1]] + [0, 1])
    top, bottom = rows.start * f, min(h, rows.stop * f)
    left, right = cols.start * f, min(w, cols.stop * f)
    share = (bottom - top) * (right - left) / float(h * w)
    return (top, bottom, left, right) if not bounded or 0.1 <= share <= BOX_AREA else None


@lru_cache(maxsize=50_000)
def _cached_box(data: bytes) -> tuple[int, int, int, int]:
    thumb = np.frombuffer(data, dtype=np.uint8).reshape(SIZE, SIZE)
    return content_box(thumb, bounded=False) or (0, SIZE, 0, SIZE)


def _real_box(thumb: np.ndarray) -> tuple[int, int, int, int]:
    """The content box of a real thumbnail (the whole thumbnail when it has none), cached."""
    return _cached_box(np.ascontiguousarray(thumb, dtype=np.uint8).tobytes())


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean, scaled to unit length (constant rows stay zero)."""
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 1e-6, x / np.maximum(norms, 1e-6), 0.0).astype(np.float32)


_CORNERS = np.array([[0, 0, 1], [0, SIZE - 1, 1], [SIZE - 1, 0, 1], [SIZE - 1, SIZE - 1, 1]],
                    dtype=np.float64).T


def _add(starts: list, start: tuple) -> None:
    """Append a registration start unless one of the same view maps the corners within 2 px."""
    view, _, h = start
    corners = h @ _CORNERS
    for v, _, other in starts:
        if v == view and np.abs(other @ _CORNERS - corners).max() < 2.0:
            return
    starts.append(start)


class AlignedMatcher:
    """Scores candidates by their best aligned band-pass correlation (see the module doc)."""

    name = "aligned"

    def identity(self) -> dict:
        """Everything that determines the stored data and the scores."""
        return {"name": self.name, "version": ALIGN_VERSION, "size": SIZE,
                "query_size": QUERY_SIZE, "renderings": RENDERINGS, "views": VIEWS,
                "scales": SCALES, "band": BAND, "schedule": registration.SCHEDULE,
                "min_overlap": registration.MIN_OVERLAP,
                "orientations": ORIENTATIONS, "outside": OUTSIDE, "boxed": BOXED,
                "box_area": BOX_AREA}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the identity: the cache key of what this matcher stored."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        """For reports."""
        return {**self.identity(), "fingerprint": self.fingerprint}

    def reference_data(self, renderings: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        """(n, RENDERINGS, SIZE, SIZE) uint8 gray thumbnails (missing renderings zero)."""
        out = np.zeros((len(renderings), RENDERINGS, SIZE, SIZE), dtype=np.uint8)
        for i, rends in enumerate(renderings):
            for r, image in enumerate(list(rends)[:RENDERINGS]):
                out[i, r] = np.clip(np.rint(thumbnail(image, SIZE)), 0, 255)
        return out

    def reference_rows(self, renderings: Sequence[Sequence[np.ndarray]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """`reference_data` and one row per image (see `cache.Store`)."""
        return self.reference_data(renderings), np.arange(len(renderings), dtype=np.int64)

    def query_data(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n, VIEWS, QUERY_SIZE, QUERY_SIZE) uint8 gray thumbnails of synthetic samples:
        the whole sample, then its content box (zeros when it has none)."""
        out = np.zeros((len(images), VIEWS, QUERY_SIZE, QUERY_SIZE), dtype=np.uint8)
        for i, image in enumerate(images):
            out[i, 0] = np.clip(np.rint(thumbnail(image, QUERY_SIZE)), 0, 255)
            box = content_box(image)
            if box is not None:
                top, bottom, left, right = box
                crop = np.asarray(image)[top:bottom, left:right]
                out[i, 1] = np.clip(np.rint(thumbnail(crop, QUERY_SIZE)), 0, 255)
        return out

    @staticmethod
    def is_blank(query: np.ndarray) -> bool:
        """True when a sample's thumbnail has no structure (constant): nothing to match."""
        return float(np.asarray(query, dtype=np.float32)[0].std()) < BLANK_STD

    @staticmethod
    def framed(query: np.ndarray) -> bool:
        """True when the sample's content view looks like a picture pasted on a canvas: one
        side of the content box runs along content for most of its length (a body on its
        own black background touches its box at a few points only)."""
        q = np.asarray(query)
        if len(q) < 2 or float(q[1].astype(np.float32).std()) < BLANK_STD:
            return False
        ring = np.concatenate([q[0][0], q[0][-1], q[0][:, 0], q[0][:, -1]])
        level = int(np.bincount(ring, minlength=256).argmax())
        view = q[1].astype(np.int16)
        sides = [view[0], view[-1], view[:, 0], view[:, -1]]
        return max(float(np.mean(np.abs(side - level) > 3)) for side in sides) >= FRAMED

    @staticmethod
    def views(query: np.ndarray) -> np.ndarray:
        """The sample's views that hold something: (V, QUERY_SIZE, QUERY_SIZE) float32."""
        q = np.asarray(query, dtype=np.float32)
        return q[[0] + [v for v in range(1, len(q)) if q[v].std() >= BLANK_STD]]

    @staticmethod
    def templates(view: np.ndarray) -> list[np.ndarray]:
        """Per scale, the view's band-passed thumbnail in the 8 D4 orientations: (8, h, h)."""
        out = []
        for scale in SCALES:
            h = max(8, int(round(SIZE * scale)))
            t = band(thumbnail(view, h))
            rows = _unit_rows(d4_all(t).reshape(len(D4), -1))
            out.append(rows.reshape(len(D4), h, h))
        return out

    @staticmethod
    def search(view: np.ndarray, bands: np.ndarray) -> tuple[np.ndarray, list]:
        """Stage 1 for one view: per (reference thumbnail, D4 orientation) the best |ncc| over
        scales and offsets, (n, 8), and its placement (scale side h, oy, ox)."""
        n = len(bands)
        spectrum = sfft.rfft2(bands.astype(np.float32))
        x64 = bands.astype(np.float64)
        ii = np.pad(x64.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        ii2 = np.pad((x64 * x64).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        best = np.full((n, len(D4)), -1.0)
        where = np.zeros((n, len(D4), 3), dtype=np.int64)
        for tmpl in AlignedMatcher.templates(view):
            h = tmpl.shape[-1]
            w = SIZE - h + 1
            if w == 1:  # the whole thumbnail: one offset, a plain dot product
                corr = np.einsum("rij,tij->rt", bands, tmpl)[:, :, None, None]
            else:
                kernel = np.conj(sfft.rfft2(tmpl, s=(SIZE, SIZE)))
                corr = sfft.irfft2(spectrum[:, None] * kernel[None],
                                   s=(SIZE, SIZE))[..., :w, :w]
            s1 = ii[:, h:, h:] - ii[:, :w, h:] - ii[:, h:, :w] + ii[:, :w, :w]
            s2 = ii2[:, h:, h:] - ii2[:, :w, h:] - ii2[:, h:, :w] + ii2[:, :w, :w]
            den = np.sqrt(np.maximum(s2 - s1 * s1 / (h * h), 0.0))[:, None]
            ratio = np.where(den > 1e-3, np.abs(corr) / np.maximum(den, 1e-3), 0.0)
            flat = ratio.reshape(n, len(D4), -1)
            arg = flat.argmax(axis=2)
            value = np.take_along_axis(flat, arg[..., None], 2)[..., 0]
            better = value > best
            best = np.where(better, value, best)
            oy, ox = np.divmod(arg, w)
            where = np.where(better[..., None], np.stack([np.full_like(oy, h), oy, ox], -1),
                             where)
        return np.clip(best, 0.0, 1.0), where

    def _plan(self, query: np.ndarray, cands: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list]]:
        """Stage 1 for one sample: (best score per candidate, the sample's views, rendering
        counts, registration starts per candidate)."""
        c = len(cands)
        present = cands.reshape(c, RENDERINGS, -1).any(axis=2)
        present[:, 0] = True
        pairs = np.argwhere(present)                        # (candidate, rendering) searched
        bands = band(cands[pairs[:, 0], pairs[:, 1]].astype(np.float32))
        views = self.views(query)
        found = np.zeros(c)
        starts: list[list] = [[] for _ in range(c)]
        for v, view in enumerate(views):
            flat, where = self.search(view, bands)         # (pairs, 8), (pairs, 8, 3)
            best = np.full((c, RENDERINGS, len(D4)), -1.0)
            best[pairs[:, 0], pairs[:, 1]] = flat
            at = np.zeros((c, RENDERINGS, len(D4), 3), dtype=np.int64)
            at[pairs[:, 0], pairs[:, 1]] = where
            found = np.maximum(found, best.max(axis=(1, 2)))
            top = best.max(axis=2).argmax(axis=1)          # each candidate's best rendering
            order = np.argsort(-best.max(axis=1), axis=1, kind="stable")[:, :ORIENTATIONS]
            shifted, offsets = registration.shifts(view, cands[np.arange(c), top],
                                                   ORIENTATIONS) if v == 0 else ([[]] * c, [[]] * c)
            for i in range(c):
                for gi in order[i]:
                    r = int(best[i, :, gi].argmax())
                    h, oy, ox = (int(x) for x in at[i, r, gi])
                    _add(starts[i], (v, r, registration.placement(D4[gi], h, oy, ox,
                                                                  QUERY_SIZE)))
                for j, (gi, (oy, ox)) in enumerate(zip(shifted[i], offsets[i])):
                    _add(starts[i], (v, int(top[i]), registration.placement(
                        D4[gi], SIZE, int(oy), int(ox), QUERY_SIZE)))
                    if j == 0:  # the real image inside the sample (zoomed out, a margin)
                        _add(starts[i], (v, int(top[i]), registration.placement(
                            D4[gi], OUTSIDE, int(oy) - (OUTSIDE - SIZE) // 2,
                            int(ox) - (OUTSIDE - SIZE) // 2, QUERY_SIZE)))
                if v == 1:  # the real image's content box onto the sample's content view
                    real_box = _real_box(cands[i, top[i]])
                    for gi in order[i][:BOXED]:
                        _add(starts[i], (v, int(top[i]), registration.box_placement(
                            D4[gi], real_box, (0, QUERY_SIZE, 0, QUERY_SIZE))))
        return found, views, present.sum(axis=1), starts

    def scores_many(self, queries: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
                    ) -> list[np.ndarray]:
        """`scores` of several samples, each against its own candidates, with one batched
        registration (numpy overheads shared)."""
        found, views, counts, starts, cands = [], [], [], [], []
        offset = 0
        for query, cand in zip(queries, candidates):
            cand = np.asarray(cand)
            if not len(cand):
                found.append(np.zeros(0))
                continue
            f, v, n, s = self._plan(query, cand)
            found.append(f)
            views.append(v)
            counts.append(n)
            cands.append(cand)
            starts += [[(view + offset, r, h) for view, r, h in row] for row in s]
            offset += len(v)
        registered = registration.register(np.concatenate(views), np.concatenate(cands),
                                           np.concatenate(counts), starts) if cands else []
        out, at = [], 0
        for f in found:
            reg = np.asarray(registered[at:at + len(f)])
            at += len(f)
            out.append(np.clip(np.maximum(f, reg) if len(f) else f, 0.0, 1.0)
                       .astype(np.float32))
        return out

    def scores(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Best aligned |ncc| of one sample with each candidate: (C,) in [0, 1].

        `query`: the sample's `query_data` row; `candidates`: (C, RENDERINGS, SIZE, SIZE)
        reference data. Stage 1 searches every view, rendering, D4 orientation, scale and
        offset; registration refines from each orientation's best placement and from the
        whole view over the whole image. Numpy only (single-threaded, deterministic).
        """
        return self.scores_many([query], [candidates])[0]
