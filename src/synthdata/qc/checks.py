"""Built-in quality checks: pure functions over images (and plan rows), each with a reason.

Images are uint8 arrays (H x W gray, or H x W x C), as the generator returns them; `non_finite`
also takes the pipeline's float output (values in [0, 1]), the only place NaN can still be seen
(the uint8 conversion hides it). Gray levels are ITU-R 601 luma on the 0-255 scale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from synthdata.screening.embedder_factory import get_embedder


@dataclass(frozen=True)
class CheckResult:
    """One check on one sample: passed or not, why (or what was measured), and the value."""

    check: str
    passed: bool
    reason: str
    value: float | None = None

    def as_dict(self) -> dict:
        """JSON-able form (for lineage and reports)."""
        return asdict(self)


def gray(image: np.ndarray) -> np.ndarray:
    """An image as float64 gray levels on the 0-255 scale (float input in [0, 1] is scaled)."""
    img = np.asarray(image)
    scale = 255.0 if img.dtype.kind == "f" else 1.0
    img = img.astype(np.float64) * scale
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            img = img[:, :, :3] @ np.array([0.299, 0.587, 0.114])
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D gray or 3-D colour image, got shape {np.shape(image)}")
    return img


def blank(image: np.ndarray, *, min_std: float = 2.0) -> CheckResult:
    """Fail a blank or constant image: gray-level standard deviation below `min_std`."""
    std = float(np.nanstd(gray(image)))
    if std < min_std:
        return CheckResult("blank", False, f"blank or constant image: gray-level std {std:.2f} "
                           f"< {min_std:g}", std)
    return CheckResult("blank", True, f"gray-level std {std:.2f}", std)


def saturated(image: np.ndarray, *, max_fraction: float = 0.5, low: int = 0,
              high: int = 255) -> CheckResult:
    """Fail when more than `max_fraction` of the pixels are at or below `low` or at or above
    `high` (every channel of a colour pixel)."""
    img = np.asarray(image)
    if img.dtype.kind == "f":
        img = np.clip(np.nan_to_num(img) * 255.0, 0, 255)
    pix = img.reshape(img.shape[0], img.shape[1], -1)
    clipped = np.all(pix <= low, axis=2) | np.all(pix >= high, axis=2)
    frac = float(clipped.mean())
    if frac > max_fraction:
        return CheckResult("saturated", False, f"{frac:.1%} of pixels saturated (<= {low} or >= "
                           f"{high}) > {max_fraction:.0%}", frac)
    return CheckResult("saturated", True, f"{frac:.1%} of pixels saturated", frac)


def non_finite(image: np.ndarray) -> CheckResult:
    """Fail a float image holding NaN or infinite values (a uint8 image always passes)."""
    img = np.asarray(image)
    if img.dtype.kind != "f":
        return CheckResult("non_finite", True, f"{img.dtype} image (finite by type)", 0.0)
    bad = int(np.count_nonzero(~np.isfinite(img)))
    if bad:
        return CheckResult("non_finite", False, f"{bad} of {img.size} values are NaN or infinite",
                           float(bad))
    return CheckResult("non_finite", True, "all values finite", 0.0)


def dynamic_range(image: np.ndarray, *, min_range: float = 32.0, low_percentile: float = 1.0,
                  high_percentile: float = 99.0) -> CheckResult:
    """Fail when the gray levels between two percentiles span less than `min_range`."""
    g = gray(image)
    lo, hi = np.nanpercentile(g, [low_percentile, high_percentile])
    span = float(hi - lo)
    where = f"p{low_percentile:g}-p{high_percentile:g}"
    if span < min_range:
        return CheckResult("dynamic_range", False, f"low dynamic range: {where} spans {span:.1f} "
                           f"gray levels < {min_range:g}", span)
    return CheckResult("dynamic_range", True, f"{where} spans {span:.1f} gray levels", span)


def row_vars(row: Mapping) -> dict:
    """A plan row's variables (plan.parquet keeps them as JSON text)."""
    values = row.get("vars") or {}
    return json.loads(values) if isinstance(values, str) else dict(values)


def near_duplicates(images: Sequence[np.ndarray], rows: Sequence[Mapping], *, threshold: float = 0.95,
                    scope: str = "shard", embedder: str = "pixel") -> list[CheckResult]:
    """Fail each sample whose embedding has cosine >= threshold with an earlier sample (lower
    plan index) of the same label in the same group: the batch (`scope: batch`, by the rows'
    `batch`) or everything passed in (`scope: shard`). The earliest of a set of duplicates passes.
    """

    if len(images) != len(rows):
        raise ValueError(f"{len(images)} images but {len(rows)} rows")
    vectors = get_embedder(embedder).embed([np.asarray(i) for i in images])
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        key = (row["label"], row.get("batch") if scope == "batch" else None)
        groups.setdefault(key, []).append(i)
    out: list[CheckResult | None] = [None] * len(rows)
    for members in groups.values():
        members = sorted(members, key=lambda i: rows[i]["index"])
        for pos, i in enumerate(members):
            if pos == 0:
                out[i] = CheckResult("near_duplicate", True, f"first sample of its label in the {scope}")
                continue
            earlier = members[:pos]
            sims = vectors[earlier] @ vectors[i]
            j = int(np.argmax(sims))
            best = float(sims[j])
            if best >= threshold:
                out[i] = CheckResult("near_duplicate", False, f"near-duplicate of "
                                     f"{rows[earlier[j]]['key']} (cosine {best:.4f} >= {threshold:g}, "
                                     f"{embedder} embedding)", best)
            else:
                out[i] = CheckResult("near_duplicate", True, f"max cosine {best:.4f} to earlier "
                                     f"samples of its label in the {scope}", best)
    return out  # type: ignore[return-value]
