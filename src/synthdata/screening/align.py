"""Aligned verification: how well a sample matches a candidate real image once aligned.

An embedder proposes candidates (its k nearest real images); this module scores each
candidate by the best normalised correlation between the sample and the real image over
every alignment a copy can have gone through:
- the 8 flips, rotations and transposes (D4), and inversion (the absolute correlation);
- each stored rendering of the real image (display window, min-max, percentile; see
  `decoders`), so a copy exported under another convention still lines up;
- crops to 80-100% of the real image at any position: the sample, shrunk to the crop's scale,
  slides over the real image's thumbnail (every offset).
Both sides are gray `SIZE` x `SIZE` thumbnails (aspect ratio not kept) filtered by a
difference of Gaussians (`BAND`), so the score follows edges and texture and not the
silhouette or the brightness: two slices of one volume share their outline and would
correlate at 0.95 as plain thumbnails; band-passed and aligned they do not, while a JPEG'd,
blurred or down-up-scaled copy still does (measured: `benchmarks/bench_memorization.py`).

The reference side is stored once per real image (`AlignedMatcher.reference_data`: float16,
one `SIZE` x `SIZE` band-passed thumbnail per rendering); the synthetic side as one
`QUERY_SIZE` gray thumbnail per sample (`query_data`), so re-screening needs no decoding.
These are small pictures of the images: the real ones live only in the private reference
cache (0600 files, 0700 folders). Cost: ~10-15 ms per sample against 6 candidates x 3
renderings on one CPU core (numpy FFTs; `benchmarks/bench_memorization.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property, lru_cache

import numpy as np
from PIL import Image

from synthdata.screening.embedders import D4, d4, to_gray

SIZE = 64
QUERY_SIZE = 96
RENDERINGS = 3
SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)
BAND = (1.0, 4.0)
ALIGN_VERSION = 1
BLANK_STD = 0.5  # grey levels: below this a thumbnail has no structure to align


@lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """n x n matrix of a Gaussian blur with mirrored borders (apply as B @ X @ B.T)."""
    radius = max(1, int(3 * sigma + 0.5))
    k = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    k /= k.sum()
    m = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for t, w in zip(range(-radius, radius + 1), k):
            j = i + t
            while j < 0 or j >= n:  # mirror about the edge samples
                j = -j if j < 0 else 2 * (n - 1) - j
            m[i, j] += w
    return m.astype(np.float32)


def band(thumb: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (sigma BAND[0] minus sigma BAND[1]) of a square thumbnail."""
    n = thumb.shape[0]
    a, b = _blur_matrix(n, BAND[0]), _blur_matrix(n, BAND[1])
    x = np.asarray(thumb, dtype=np.float32)
    return a @ x @ a.T - b @ x @ b.T


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Gray float32 size x size thumbnail (bilinear, antialiased; aspect ratio not kept)."""
    img = np.asarray(image)
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] in (3, 4):
        pil = Image.fromarray(img[:, :, :3]).convert("L")  # ITU-R 601 luma, in C
    elif img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] == 1):
        pil = Image.fromarray(img.reshape(img.shape[:2]))
    else:
        pil = Image.fromarray(to_gray(img))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows minus their mean, scaled to unit length (constant rows stay zero)."""
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 1e-6, x / np.maximum(norms, 1e-6), 0.0).astype(np.float32)


class AlignedMatcher:
    """Scores candidates by their best aligned band-pass correlation (see the module doc)."""

    name = "aligned"

    def identity(self) -> dict:
        """Everything that determines the stored data and the scores."""
        return {"name": self.name, "version": ALIGN_VERSION, "size": SIZE,
                "query_size": QUERY_SIZE, "renderings": RENDERINGS, "scales": SCALES,
                "band": BAND}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the identity: the cache key of what this matcher stored."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        """For reports."""
        return {**self.identity(), "fingerprint": self.fingerprint}

    def reference_data(self, renderings: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        """(n, RENDERINGS, SIZE, SIZE) float16 band-passed thumbnails (missing ones zero)."""
        out = np.zeros((len(renderings), RENDERINGS, SIZE, SIZE), dtype=np.float16)
        for i, rends in enumerate(renderings):
            for r, image in enumerate(list(rends)[:RENDERINGS]):
                out[i, r] = band(thumbnail(image, SIZE))
        return out

    def reference_rows(self, renderings: Sequence[Sequence[np.ndarray]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """`reference_data` and one row per image (see `cache.Store`)."""
        return self.reference_data(renderings), np.arange(len(renderings), dtype=np.int64)

    def query_data(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n, QUERY_SIZE, QUERY_SIZE) uint8 gray thumbnails of synthetic samples."""
        out = np.zeros((len(images), QUERY_SIZE, QUERY_SIZE), dtype=np.uint8)
        for i, image in enumerate(images):
            out[i] = np.clip(np.rint(thumbnail(image, QUERY_SIZE)), 0, 255)
        return out

    @staticmethod
    def is_blank(query: np.ndarray) -> bool:
        """True when a sample's thumbnail has no structure (constant): nothing to match."""
        return float(np.asarray(query, dtype=np.float32).std()) < BLANK_STD

    @staticmethod
    def templates(query: np.ndarray) -> list[np.ndarray]:
        """Per scale, the sample's band-passed thumbnail in the 8 D4 orientations: (8, h, h)."""
        out = []
        for scale in SCALES:
            h = max(8, int(round(SIZE * scale)))
            t = band(thumbnail(np.asarray(query, dtype=np.float32), h))
            rows = _unit_rows(np.stack([d4(t, g).ravel() for g in D4]))
            out.append(rows.reshape(len(D4), h, h))
        return out

    def scores(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Best |normalised correlation| of one sample with each candidate: (C,) in [0, 1].

        `candidates`: (C, RENDERINGS, SIZE, SIZE) reference data. Every rendering, D4
        orientation, scale and offset is tried; the best counts. Correlations by FFT, window
        norms by integral images; numpy only (single-threaded, deterministic).
        """
        c = len(candidates)
        if c == 0:
            return np.zeros(0, dtype=np.float32)
        every = np.asarray(candidates, dtype=np.float32).reshape(c * RENDERINGS, SIZE, SIZE)
        present = np.flatnonzero(np.any(every != 0, axis=(1, 2)))  # missing renderings: skip
        x = every[present]
        spectrum = np.fft.rfft2(x)
        x64 = x.astype(np.float64)
        ii = np.pad(x64.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        ii2 = np.pad((x64 * x64).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        best = np.zeros(len(x), dtype=np.float64)
        for tmpl in self.templates(query):
            h = tmpl.shape[-1]
            w = SIZE - h + 1
            if w == 1:  # the whole thumbnail: one offset, a plain dot product
                num = np.abs(np.einsum("rij,tij->rt", x, tmpl)).max(axis=1)[:, None, None]
            else:
                kernel = np.conj(np.fft.rfft2(tmpl, s=(SIZE, SIZE)))
                corr = np.fft.irfft2(spectrum[:, None] * kernel[None],
                                     s=(SIZE, SIZE))[..., :w, :w]
                num = np.abs(corr).max(axis=1)                              # (r, w, w)
            s1 = ii[:, h:, h:] - ii[:, :w, h:] - ii[:, h:, :w] + ii[:, :w, :w]
            s2 = ii2[:, h:, h:] - ii2[:, :w, h:] - ii2[:, h:, :w] + ii2[:, :w, :w]
            den = np.sqrt(np.maximum(s2 - s1 * s1 / (h * h), 0.0))
            ratio = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)
            best = np.maximum(best, ratio.reshape(len(ratio), -1).max(axis=1))
        out = np.zeros(c * RENDERINGS, dtype=np.float64)
        out[present] = best
        return np.clip(out, 0.0, 1.0).reshape(c, RENDERINGS).max(axis=1).astype(np.float32)
