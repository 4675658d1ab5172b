"""Square gray thumbnails and their band-pass (difference of Gaussians) filter: what the
aligned matcher stores and what registration compares, written once for both."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from synthdata.screening.embedders import to_gray

BAND = (1.0, 4.0)    # sigmas of the difference of Gaussians, in thumbnail pixels


def gaussian_kernel(sigma: float) -> tuple[int, np.ndarray]:
    """(radius, weights summing to 1) of a sampled Gaussian of `sigma` pixels, 3 sigma wide."""
    radius = max(1, int(3 * sigma + 0.5))
    k = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    return radius, k / k.sum()


@lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """n x n matrix of a Gaussian blur with mirrored borders (apply as B @ X @ B.T)."""
    radius, k = gaussian_kernel(sigma)
    m = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for t, w in zip(range(-radius, radius + 1), k):
            j = i + t
            while j < 0 or j >= n:  # mirror about the edge samples
                j = -j if j < 0 else 2 * (n - 1) - j
            m[i, j] += w
    return m.astype(np.float32)


def band(thumb: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (sigma BAND[0] minus sigma BAND[1]) of square thumbnails
    (..., n, n), with mirrored borders."""
    n = thumb.shape[-1]
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
