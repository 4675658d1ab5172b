"""`threshold: auto`: each voting matcher's threshold, calibrated on the reference itself.

1. Copies. A sample of the real images (`sample` images, spread over files by a keyed
   order) is exported again the ways copies leave a training pipeline: a random rendering,
   then 1-3 random edits of `edits.py` (flips, rotations, transposes, inversion, gamma,
   re-windowing, crops, down-up scaling, square resizing, JPEG, blur, noise). Each matcher
   scores these `copies` exactly as it scores synthetic samples (top-1 over the whole
   reference). The threshold is the score `target_recall` (default 0.99) of the copies reach.
2. Other patients. For the same sample of real images, the best score against images of
   *other* patient groups (`reference.group_of`: DICOM PatientID/StudyInstanceUID, a
   column, a path pattern, else the file) estimates how near a distinct image comes: the
   share at or above the threshold is the estimated false-positive rate. Adjacent slices of
   one patient never count, so they cannot set the bar.
3. If that estimate exceeds the false-positive budget (`max_fp`, split evenly between the
   voting matchers), the threshold is raised to the budget's quantile of the other-patient
   scores, and the recall then reached on the copies is reported with a warning: this
   matcher cannot reach the target recall on this reference within the budget.
Both figures, with their counts, go into the report. A reference with fewer than
`MIN_IMAGES` images or `MIN_GROUPS` patient groups cannot be calibrated: `CalibrationError`
(configure a number instead). Nothing falls back silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from synthdata.errors import SynthdataError
from synthdata.screening import edits
from synthdata.screening import index as ix
from synthdata.screening.reference import RealImage

MIN_IMAGES = 10
MIN_GROUPS = 3
HISTOGRAM_BINS = 50
NN_SAMPLE = 5000


class CalibrationError(SynthdataError):
    """A threshold that cannot be calibrated on this reference (and none was configured)."""


def real_nn_similarities(index: ix.NNIndex, queries: np.ndarray, query_groups: np.ndarray,
                         row_groups: np.ndarray, signed: bool = False,
                         sample: int = NN_SAMPLE, seed: int = 0) -> np.ndarray:
    """For (a sample of) the queries, the similarity of the nearest row of another group.

    `queries` are real images' display rows, `query_groups` their groups, `row_groups` the
    group of every indexed row. Signed: absolute cosines.
    """
    n = len(queries)
    if n == 0 or len(np.unique(row_groups)) < 2:
        return np.zeros(0, dtype=np.float32)
    rows = np.arange(n) if n <= sample else np.sort(
        np.random.default_rng(seed).choice(n, sample, replace=False))
    result = np.full(len(rows), np.nan, dtype=np.float32)
    todo = np.arange(len(rows))
    total = index.ntotal
    k = min(total, 16)
    while len(todo):
        q = queries[rows[todo]]
        sims, ids = index.search(q, k)
        if signed:
            s2, i2 = index.search(-q, k)
            sims, ids = np.concatenate([sims, s2], axis=1), np.concatenate([ids, i2], axis=1)
        unresolved = []
        for t, srow, irow in zip(todo, sims, ids):
            own = query_groups[rows[t]]
            hits = [s for s, j in zip(srow, irow) if j >= 0 and row_groups[j] != own]
            if hits:
                result[t] = max(hits)
            else:
                unresolved.append(t)
        if k >= total:
            break
        todo, k = np.array(unresolved, dtype=np.int64), min(total, k * 8)
    return result[~np.isnan(result)]


def histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    """Counts of values in equal bins over [-1, 1] (cosine range), for reports."""
    counts, edges = np.histogram(np.clip(values, -1, 1), bins=bins, range=(-1.0, 1.0))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def _rank(value: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{value}".encode()).hexdigest()


def sample_images(images: Sequence[RealImage], n: int, seed: int = 0) -> list[RealImage]:
    """Up to n images, chosen by a keyed hash of their ids (stable, spread over files)."""
    return sorted(images, key=lambda im: _rank(im.id, seed))[:n]


def synthesize(images: Sequence[RealImage], copies: int, seed: int = 0
               ) -> tuple[list[np.ndarray], list[str], list[str]]:
    """`copies` edited exports of the images: (images, source ids, edit names)."""
    rng = np.random.default_rng(seed)
    out, sources, names = [], [], []
    for c in range(copies):
        real = images[c % len(images)]
        rends = real.renderings
        start = edits.export(rends[int(rng.integers(len(rends)))])
        chain = edits.random_edit(rng)
        out.append(edits.apply(start, chain, rng))
        sources.append(real.id)
        names.append("+".join(chain))
    return out, sources, names


def _quantiles(values: np.ndarray) -> dict:
    if not len(values):
        return {}
    return {name: round(float(v), 6) for name, v in zip(
        ("min", "p01", "p10", "p50", "p90", "p99", "max"),
        np.quantile(values, [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0]))}


def choose_threshold(copy_scores: np.ndarray, other_scores: np.ndarray, target_recall: float,
                     max_fp: float) -> tuple[float, dict]:
    """(threshold, how): for the target recall on copies, within the false-positive budget."""
    copies = np.asarray(copy_scores, dtype=np.float64)
    other = np.asarray(other_scores, dtype=np.float64)
    bad = int(np.sum(~np.isfinite(copies)))
    copies = np.where(np.isfinite(copies), copies, -1.0)  # a copy not found counts as missed
    other = other[np.isfinite(other)]
    threshold = float(np.quantile(copies, 1.0 - target_recall, method="lower"))
    info: dict = {"method": "target recall on synthesized copies, false positives estimated on "
                            "other-patient pairs", "target_recall": target_recall,
                  "max_fp": round(max_fp, 6), "copies": len(copies),
                  "copies_not_found": bad, "other_patient_pairs": len(other)}
    fp = float(np.mean(other >= threshold)) if len(other) else 0.0
    if fp > max_fp and len(other):
        raised = float(np.quantile(other, 1.0 - max_fp, method="higher"))
        threshold = float(np.nextafter(raised, np.inf)) if raised >= threshold else threshold
        info["warning"] = (f"the target recall {target_recall} would flag {fp:.1%} of "
                           f"other-patient pairs; threshold raised to the false-positive "
                           f"budget {max_fp:.2%}")
        fp = float(np.mean(other >= threshold))
    info.update({"threshold": round(threshold, 6),
                 "recall": round(float(np.mean(copies >= threshold)), 6),
                 "false_positive_estimate": round(fp, 6),
                 "copy_scores": _quantiles(copies), "other_patient_scores": _quantiles(other)})
    if len(copies) < 100 or len(other) < 100:
        info["note"] = (f"{len(copies)} copies and {len(other)} other-patient pairs: "
                        "the quantiles are coarse")
    return threshold, info


def check_calibratable(images: int, groups: int, what: str) -> None:
    """Raise CalibrationError when the reference is too small to calibrate on."""
    if images < MIN_IMAGES or groups < MIN_GROUPS:
        raise CalibrationError(
            f"memorization.threshold: auto cannot be calibrated for {what}: the reference has "
            f"{images} image(s) in {groups} patient group(s); calibration needs at least "
            f"{MIN_IMAGES} images in {MIN_GROUPS} groups (groups come from DICOM PatientID, "
            "memorization.group_column or memorization.group_pattern, else each file). "
            "Add reference images, name the patient column or pattern, or configure a number.")


ScoreFn = Callable[[list[np.ndarray], list[str] | None], dict[str, np.ndarray]]
