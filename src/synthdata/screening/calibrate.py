"""`threshold: auto`: each voting matcher's threshold, calibrated on the reference itself.

1. Copies. A sample of the real images (`sample` images, spread over files by a keyed
   order) is exported again the ways copies leave a training pipeline: a random rendering,
   then 1-3 random edits of `edits.py` (flips, rotations, shifts, zooms, crops, aspect,
   perspective, screenshots, inversion, gamma, re-windowing, JPEG, blur, noise). Each
   matcher scores these `copies` exactly as it scores synthetic samples (over the whole
   reference). The threshold is the score `target_recall` (default 0.99) of the copies reach.
2. Other patients. Each sampled real image, and as many *hard negatives* (sampled images
   edited exactly like the copies), are screened against the images of *other* patients
   only (`reference.group_of`; clusters of near-duplicates count as one patient,
   `duplicates.py`): each is a trial, and its best score estimates how near a distinct image
   comes. The share of trials at or above the threshold is the estimated false-positive
   rate, reported with its 95% Clopper-Pearson interval, the trials and the (trial,
   candidate) pairs verified. "Coarse" means the interval is wider than the budget.
3. If that estimate exceeds the false-positive budget (`max_fp`, split evenly between the
   voting matchers), the threshold is raised to the budget's quantile of the trials. Scores
   between the target-recall threshold and the raised one then go to *review*
   (`review_from`): the matcher cannot tell them from copies within the budget. If the
   recall at the raised threshold is under `min_recall`, calibration has **failed**: that
   matcher accepts nothing (every sample goes to review, `decide.py`) and the report says why
   and what to fix.
A threshold set by hand is kept; its recall and false-positive rate are measured the same
way (`measure`) and reported beside it. A reference with fewer than `MIN_IMAGES` images or
`MIN_GROUPS` patient groups cannot be calibrated: `CalibrationError` (configure a number
instead). Nothing falls back silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from scipy import stats

from synthdata.errors import SynthdataError
from synthdata.screening.kinds import REAL_KIND
from synthdata.screening import duplicates as dup
from synthdata.screening import edits
from synthdata.screening import index as ix
from synthdata.screening.reference import RealImage
from synthdata import privacy

MIN_IMAGES = 10
MIN_GROUPS = 3
MIN_TRIALS = 30  # other-patient trials needed to estimate false positives at all
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


def fp_interval(hits: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a rate from `hits` of `trials`."""
    if trials == 0:
        return 0.0, 1.0
    alpha = 1 - level
    lo = 0.0 if hits == 0 else float(stats.beta.ppf(alpha / 2, hits, trials - hits + 1))
    hi = 1.0 if hits == trials else float(stats.beta.ppf(1 - alpha / 2, hits + 1, trials - hits))
    return lo, hi


def _clean(copy_scores: np.ndarray, other_scores: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, int]:
    copies = np.asarray(copy_scores, dtype=np.float64)
    other = np.asarray(other_scores, dtype=np.float64)
    bad = int(np.sum(~np.isfinite(copies)))
    copies = np.where(np.isfinite(copies), copies, -1.0)  # a copy not found counts as missed
    return copies, other[np.isfinite(other)], bad


def measure(copy_scores: np.ndarray, other_scores: np.ndarray, threshold: float,
            max_fp: float) -> dict:
    """Recall on copies and false positives on trials at a threshold, with the interval."""
    copies, other, bad = _clean(copy_scores, other_scores)
    hits = int(np.sum(other >= threshold))
    lo, hi = fp_interval(hits, len(other))
    info = {"threshold": round(float(threshold), 6), "copies": len(copies),
            "copies_not_found": bad, "trials": len(other),
            "recall": round(float(np.mean(copies >= threshold)) if len(copies) else 0.0, 6),
            "false_positive_estimate": round(hits / len(other), 6) if len(other) else None,
            "false_positive_interval": [round(lo, 6), round(hi, 6)],
            "coarse": bool(hi - lo > max_fp),
            "copy_scores": _quantiles(copies), "other_patient_scores": _quantiles(other)}
    if info["coarse"]:
        info["note"] = (f"coarse: the 95% interval of the false-positive rate "
                        f"({lo:.2%}-{hi:.2%}, from {len(other)} trials) is wider than the "
                        f"budget {max_fp:.2%}; add reference images or calibration_negatives")
    return info


def choose_threshold(copy_scores: np.ndarray, other_scores: np.ndarray, target_recall: float,
                     max_fp: float, min_recall: float = 0.9) -> tuple[float, dict]:
    """(threshold, how): for the target recall on copies, within the false-positive budget;
    `status` ok, `review band` (raised to the budget: scores from `review_from` go to
    review) or `failed` (recall at the budget under `min_recall`)."""
    copies, other, _ = _clean(copy_scores, other_scores)
    target = float(np.quantile(copies, 1.0 - target_recall, method="lower"))
    threshold, status = target, "ok"
    fp = float(np.mean(other >= target)) if len(other) else 0.0
    if fp > max_fp and len(other):
        raised = float(np.quantile(other, 1.0 - max_fp, method="higher"))
        threshold = float(np.nextafter(raised, np.inf)) if raised >= target else target
        status = "review band"
    info = {"method": "target recall on synthesized copies, false positives estimated on "
                      "other-patient trials (real images and hard negatives)",
            "target_recall": target_recall, "min_recall": min_recall, "max_fp": round(max_fp, 6),
            **measure(copy_scores, other_scores, threshold, max_fp)}
    if status != "ok":
        info["review_from"] = round(target, 6)
        info["false_positive_at_target"] = round(fp, 6)
        if info["recall"] < min_recall:
            status = "failed"
            info["warning"] = (f"at the false-positive budget {max_fp:.2%} the threshold is "
                               f"{threshold:.4f} and catches {info['recall']:.1%} of synthesized "
                               f"copies, under the floor {min_recall:.0%}: this matcher accepts "
                               "nothing (every sample goes to review)")
        else:
            info["warning"] = (f"the target recall {target_recall} would flag {fp:.1%} of "
                               f"other-patient trials; threshold raised to the false-positive "
                               f"budget {max_fp:.2%} (recall {info['recall']:.1%}); scores from "
                               f"{target:.4f} to the threshold go to review")
    info["status"] = status
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


def run(screener, sample: Sequence[RealImage], deciding: Sequence[str], *, copies: int,
        negatives: int, seed: int, same_pixels: list, policy: str) -> dict:
    """The scores calibration rests on (see the module doc); no threshold is chosen here.

    `screener`: a `match.Screener` over the reference; `same_pixels`: duplicate pairs found
    over the whole reference. Returns {"scores": {matcher: {"copies": [...], "trials":
    [...], "pairs": n}}, "sample": {...}, "duplicates": {...}} (plain data: cached as JSON,
    so settling other thresholds on it costs nothing).
    """

    first = deciding[0]
    made, _, _ = synthesize(sample, copies, seed)
    copy_result = screener.match(screener.query_data(made))
    first_copies, _, _ = _clean(copy_result.results[first].score, np.zeros(0))
    bar = max(dup.DUPLICATE_MIN, float(np.median(first_copies)))
    clusters, pairs = dup.Clusters(), list(same_pixels)
    for p in pairs:
        clusters.union(p.group_a, p.group_b)
    real = screener.query_data([im.pixels for im in sample])
    for _ in range(4):  # a merge can uncover the next duplicate of the same image
        other = screener.match(real, exclude_groups=[clusters.members(im.group)
                                                     for im in sample])
        r, new = other.results[first], False
        for i, im in enumerate(sample):
            if np.isfinite(r.score[i]) and r.score[i] >= bar and r.groups[i] and \
                    clusters.union(im.group, r.groups[i][0]):
                pairs.append(dup.Pair(im.id, r.ids[i][0], im.group, r.groups[i][0],
                                      float(r.score[i]), "verifier"))
                new = True
        if not new:
            break
    if pairs and policy == "error":
        raise CalibrationError(_duplicates_message(pairs))
    hard, hard_sources, _ = synthesize(sample, negatives, seed + 1)
    group = {im.id: im.group for im in sample}
    hard_result = screener.match(screener.query_data(hard), exclude_groups=[
        clusters.members(group[s]) for s in hard_sources])

    def listed(x: np.ndarray) -> list:
        return [None if not np.isfinite(v) else round(float(v), 7) for v in x]

    return {"scores": {name: {
                "copies": listed(copy_result.results[name].score),
                "trials": listed(np.concatenate([other.results[name].score,
                                                 hard_result.results[name].score])),
                "pairs": sum(len(x) for x in other.results[name].ids)
                + sum(len(x) for x in hard_result.results[name].ids)} for name in deciding},
            "sample": {"images": len(sample), "groups": len({im.group for im in sample}),
                       "trials_real": len(sample), "trials_hard_negatives": len(hard)},
            "duplicates": dup.summary(pairs, clusters, bar, policy)}


def settle(scores: dict, configured: float | str, *, target_recall: float, max_fp: float,
           min_recall: float) -> tuple[float, dict]:
    """(threshold, info) of one matcher from `run`'s scores: calibrated when `configured` is
    'auto', else the configured number, measured."""
    copies = np.array([np.nan if v is None else v for v in scores["copies"]], dtype=np.float64)
    trials = np.array([np.nan if v is None else v for v in scores["trials"]], dtype=np.float64)
    if configured == "auto":
        threshold, info = choose_threshold(copies, trials, target_recall, max_fp, min_recall)
        usable = int(np.isfinite(trials).sum())
        if usable < MIN_TRIALS:
            info["status"] = "failed"
            info["warning"] = (f"only {usable} other-patient trials found a candidate of "
                               f"another patient (at least {MIN_TRIALS} are needed to estimate "
                               "false positives): this matcher accepts nothing")
    else:
        threshold = float(configured)
        info = {"method": "configured", "measured": "recall and false positives of the "
                "configured threshold, measured as calibration would",
                **measure(copies, trials, threshold, max_fp)}
    info.update({"pairs": scores["pairs"], "histogram_copies": histogram(copies[
        np.isfinite(copies)]), "histogram_other_patients": histogram(trials[np.isfinite(trials)])})
    return threshold, info


def _duplicates_message(pairs: list) -> str:

    names = privacy.remember(sorted({x for p in pairs for x in (p.a, p.b)}), REAL_KIND)
    shown = ", ".join(f"{names[p.a]} ~ {names[p.b]} ({p.how}, {p.score:.4f})"
                      for p in pairs[:5])
    return (f"memorization.reference holds {len(pairs)} near-duplicate pair(s) across patient "
            f"groups ({shown}{', ...' if len(pairs) > 5 else ''}; `synthdata screen --reveal "
            "PSEUDONYM` names them) and memorization.reference_duplicates is 'error': remove "
            "the duplicates, give both copies the same patient, or set it to 'merge'")
