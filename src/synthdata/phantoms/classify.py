"""A deliberately simple separability check: nearest centroid on tiny gray thumbnails.

Used to show that phantom labels (and images generated from a model trained on them) are
tellable apart: leave-one-out accuracy of a nearest-centroid classifier on 16x16 gray
thumbnails scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def thumbnails(images: Sequence[np.ndarray], size: int = 16) -> np.ndarray:
    """N x size*size float array: each image to gray, box-resized to size x size, in [0, 1]."""
    out = np.empty((len(images), size * size), dtype=np.float64)
    for i, img in enumerate(images):
        pil = Image.fromarray(np.asarray(img, dtype=np.uint8))
        small = pil.convert("L").resize((size, size), Image.Resampling.BOX)
        out[i] = np.asarray(small, dtype=np.float64).ravel() / 255.0
    return out


def nearest_centroid_accuracy(features: np.ndarray, labels: Sequence[str]) -> float:
    """Leave-one-out accuracy of a nearest-centroid classifier (Euclidean).

    Each sample is classified against centroids computed without it; a label with a single
    sample cannot be predicted for that sample (its centroid would be empty) and counts as a miss.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    classes = sorted(set(y.tolist()))
    sums = {c: x[y == c].sum(axis=0) for c in classes}
    counts = {c: int((y == c).sum()) for c in classes}
    correct = 0
    for i in range(len(x)):
        best, best_d = None, np.inf
        for c in classes:
            n = counts[c] - (1 if y[i] == c else 0)
            if n == 0:
                continue
            centroid = (sums[c] - (x[i] if y[i] == c else 0)) / n
            d = float(((x[i] - centroid) ** 2).sum())
            if d < best_d:
                best, best_d = c, d
        correct += int(best == y[i])
    return correct / max(len(x), 1)
