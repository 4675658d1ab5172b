"""Which matchers screen, against which prepared references, with which thresholds.

    setup, context = prepare_matchers(cfg)        # once: references built, thresholds settled
    screener = setup.screener()                   # in each task: embedders and indexes loaded
    result = screener.match(screener.query_data(images))
    decisions = decide.decide_all(result, setup)

`MatcherSetup` is small and picklable, the same for every task. `context` holds what the
report needs: the reference (counts, groups and where they came from, near-duplicates found,
skipped files), each matcher's threshold and how it was set (the calibration's recall on
synthesized copies and false-positive estimate on other-patient trials, with its interval;
for a number set by hand, the same figures measured), its standing (`failed`: accepts
nothing, with what to fix; `review_from`), and the matchers' descriptions. Calibrations are
cached by everything that decides them (reference content and groups, matchers, k, targets,
sample sizes, configured thresholds).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthdata.errors import SynthdataError
from synthdata.progress import phase_timing
from synthdata.screening import calibrate, duplicates
from synthdata.screening.align import AlignedMatcher
from synthdata.screening.cache import PreparedReference, ReferenceHandle, prepare_references
from synthdata.screening.loaded import load_reference
from synthdata.screening.private_cache import private_lock, save_json, screening_cache
from synthdata.screening.embedders import Embedder
from synthdata.screening.embedder_factory import get_embedder
from synthdata.screening.match import Screener
from synthdata.screening.reference import (
    ReaderOptions,
    iter_files,
    reference_groups,
    scan_reference,
)
from synthdata.spec.models import Memorization
from synthdata.spec.checks import memorization_problems

CALIBRATION_VERSION = 2
CALIBRATION_SEED = 20261123


@dataclass(frozen=True)
class MatcherSetup:
    """Everything a task needs to screen: matcher names, handles, thresholds (picklable)."""

    deciding: tuple[str, ...]                 # matcher names that vote, in order
    embedders: tuple[tuple[str, str], ...]    # (name, config entry) of searching embedders
    aligned: bool
    handles: tuple[tuple[str, ReferenceHandle], ...]
    thresholds: tuple[tuple[str, float], ...]
    review_band: float
    k: int
    device: str
    batch_size: int | None
    base_dir: str | None
    fingerprints: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str], ...] = ()          # matchers that accept nothing, and why
    review_from: tuple[tuple[str, float], ...] = ()   # score from which a matcher reviews

    def threshold(self, name: str) -> float:
        """The threshold of a deciding matcher."""
        return dict(self.thresholds)[name]

    @property
    def names(self) -> list[str]:
        """Every matcher that scores, in order: searching embedders, then aligned."""
        return [n for n, _ in self.embedders] + (["aligned"] if self.aligned else [])

    def load_embedders(self) -> list[Embedder]:
        """The searching embedders, loaded once per process; refuses changed models."""
        out = []
        for name, entry in self.embedders:
            emb = get_embedder(entry, device=self.device, batch_size=self.batch_size,
                               base_dir=self.base_dir)
            if emb.fingerprint != dict(self.fingerprints)[name]:
                raise RuntimeError(f"embedder {entry!r} changed since screening was prepared")
            out.append(emb)
        return out

    def screener(self) -> Screener:
        """A Screener over the prepared references (requires a reference)."""
        refs = {name: load_reference(h) for name, h in self.handles}
        return Screener(self.load_embedders(), AlignedMatcher() if self.aligned else None,
                        refs, self.k, dict(self.failed), dict(self.review_from))


def _reader_options(cfg: Memorization) -> ReaderOptions:
    return ReaderOptions(cfg.slice_axis, cfg.image_column, cfg.group_column, cfg.group_pattern)


def _reference_info(prepared: list[PreparedReference]) -> dict:
    first = prepared[0]
    meta = first.meta
    return {"images": meta["count"], "files": len(meta["files"]), "groups": meta["groups"],
            "group_sources": meta["group_sources"], "group_tables": meta.get("group_tables", []),
            "content_fingerprint": meta["content"],
            "indexes": {p.handle.store: p.meta["index"] for p in prepared},
            "rows": {p.handle.store: p.meta["rows"] for p in prepared},
            "skipped": [{"id": s.id, "reason": s.reason} for s in first.skipped]}


def _calibration_key(cfg: Memorization, setup: MatcherSetup) -> str:
    """Everything the calibration scores depend on (thresholds and targets are settled on
    them afterwards, so they are not part of it)."""
    blob = json.dumps({"v": CALIBRATION_VERSION, "refs": sorted(h.key for _, h in setup.handles),
                       "deciding": setup.deciding, "embedders": setup.fingerprints,
                       "aligned": AlignedMatcher().fingerprint if setup.aligned else None,
                       "k": cfg.k, "images": cfg.calibration_images,
                       "copies": cfg.calibration_copies, "negatives": cfg.calibration_negatives,
                       "duplicates": cfg.reference_duplicates, "seed": CALIBRATION_SEED},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def calibration_sample(cfg: Memorization, base_dir: str | None, n: int) -> list:
    """Up to n real images, a few per file, files in a keyed order (stable, spread out)."""
    files, _ = scan_reference(cfg.reference, base_dir)
    meta = reference_groups(cfg.reference, _reader_options(cfg), base_dir)
    files = sorted(files, key=lambda f: calibrate._rank(f.id, CALIBRATION_SEED))
    per_file = max(1, -(-n // max(1, len(files))))
    out = []
    for ref in files:
        images = list(iter_files([ref], _reader_options(cfg), meta=meta))
        out += calibrate.sample_images(images, per_file, CALIBRATION_SEED)
        if len(out) >= n:
            break
    return out[:n]


def same_pixel_pairs(screener: Screener) -> list:
    """Reference images of different groups with identical stored data (`duplicates.py`):
    the aligned thumbnails when aligned screens, else the first embedder's display rows."""
    if screener.aligned is not None:
        ref = screener.refs[screener.aligned.name]
        rows = np.asarray(ref.data)
    else:
        ref = screener.refs[screener.embedders[0].name]
        first = np.unique(np.asarray(ref.owners), return_index=True)[1]
        rows = np.round(np.asarray(ref.data)[first], 5)
    return duplicates.same_pixels(ref.ids, ref.groups, rows)


def calibration_scores(cfg: Memorization, setup: MatcherSetup) -> dict:
    """The scores calibration rests on (`calibrate.run`), computed once per reference and
    matchers and cached privately (they name real images)."""
    path = screening_cache() / "calibration" / f"{_calibration_key(cfg, setup)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    with private_lock(path):
        if path.is_file():
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        screener = setup.screener()
        sample = calibration_sample(cfg, setup.base_dir, cfg.calibration_images)
        out = calibrate.run(screener, sample, setup.deciding, copies=cfg.calibration_copies,
                            negatives=cfg.calibration_negatives, seed=CALIBRATION_SEED,
                            same_pixels=same_pixel_pairs(screener),
                            policy=cfg.reference_duplicates)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        save_json(path, out)
        return out


def calibrate_setup(cfg: Memorization, setup: MatcherSetup, configured: dict) -> dict:
    """Each deciding matcher's (threshold, info), calibrated or measured on the cached
    scores: {name: [threshold, info], "_duplicates": {...}}."""
    scores = calibration_scores(cfg, setup)
    budget = cfg.max_false_positive / len(setup.deciding)
    out: dict = {"_duplicates": scores["duplicates"]}
    for name in setup.deciding:
        threshold, info = calibrate.settle(scores["scores"][name], configured[name],
                                           target_recall=cfg.target_recall, max_fp=budget,
                                           min_recall=cfg.min_recall)
        sample = scores["sample"]
        info.update({"sample_images": sample["images"], "sample_groups": sample["groups"],
                     "trials_real": sample["trials_real"],
                     "trials_hard_negatives": sample["trials_hard_negatives"]})
        out[name] = [threshold, info]
    return out


def failure(name: str, info: dict, reference: dict) -> str:
    """What a failed calibration means and what to fix (the note of every reviewed sample)."""
    sources = ", ".join(f"{k} {v}" for k, v in sorted(reference["group_sources"].items()))
    dups = reference.get("duplicates") or {}
    why = (f"at the false-positive budget ({info['max_fp']:.2%} of other-patient trials) its "
           f"threshold {info['threshold']:.4f} catches {info['recall']:.1%} of synthesized "
           f"copies, under the floor {info['min_recall']:.0%}"
           if info["recall"] < info["min_recall"] else info.get("warning", ""))
    return (f"calibration of {name!r} failed: {why}; nothing is accepted on its word "
            f"(review). To fix: check "
            f"the patient groups (now {reference['groups']} groups: {sources}; name the patient "
            f"column, DICOM PatientID or memorization.group_pattern so each patient is one "
            f"group), near-duplicates across patients ({dups.get('pairs', 0)} pairs found and "
            f"merged), or set memorization.threshold to a number (its measured recall and false "
            f"positives are reported beside it)")


def prepare_matchers(cfg: Memorization, *, threshold: float | None = None,
                     base_dir: str | Path | None = None,
                     phases: dict | None = None) -> tuple[MatcherSetup, dict]:
    """Load the embedders, build or reuse the references, settle every threshold.

    `threshold` overrides every configured one (`synthdata screen --threshold`).
    Without a reference nothing is searched: the setup has no handles. `phases`, when given,
    receives the timings of `reference_ingestion` and `calibration` (`progress.phase_timing`;
    a cached reference or calibration is fast, not skipped); they never enter the context.
    """
    phases = {} if phases is None else phases
    problems = memorization_problems(cfg)
    if problems:
        raise SynthdataError("; ".join(f"{'.'.join(map(str, path))}: {message}"
                                       for path, message in problems))
    base = str(base_dir) if base_dir is not None else None
    names, entries, embedders = [], [], []
    for entry in cfg.candidate_embedders:
        emb = get_embedder(entry, device=cfg.device, batch_size=cfg.batch_size, base_dir=base)
        names.append(emb.name)
        entries.append(entry)
        embedders.append(emb)
    name_of = dict(zip(entries, names))
    deciding = tuple(name_of.get(m, m) for m in cfg.matchers)
    aligned = "aligned" in cfg.matchers
    handles: tuple = ()
    reference = None
    if cfg.reference:
        stores = [*embedders, *([AlignedMatcher()] if aligned else [])]
        started = time.perf_counter()
        prepared = prepare_references(cfg.reference, stores, options=_reader_options(cfg),
                                      exact_limit=cfg.exact_limit,
                                      memory_gb=cfg.index_memory_gb, base_dir=base)
        handles = tuple((p.handle.store, p.handle) for p in prepared)
        reference = _reference_info(prepared)
        phases["reference_ingestion"] = phase_timing(time.perf_counter() - started,
                                                     reference["images"])
    setup = MatcherSetup(deciding, tuple(zip(names, entries)), aligned, handles, (),
                         cfg.review_band, cfg.k, cfg.device, cfg.batch_size, base,
                         tuple((e.name, e.fingerprint) for e in embedders))
    thresholds, how, failed, review_from = {}, {}, {}, {}
    configured = {d: (float(threshold) if threshold is not None else cfg.threshold_for(m))
                  for d, m in zip(deciding, cfg.matchers)}
    calibration: dict = {}
    if reference is not None:
        auto = [d for d, v in configured.items() if v == "auto"]
        if auto:
            calibrate.check_calibratable(reference["images"], reference["groups"],
                                         ", ".join(auto))
        if auto or (reference["images"] >= calibrate.MIN_IMAGES
                    and reference["groups"] >= calibrate.MIN_GROUPS):
            started = time.perf_counter()
            calibration = calibrate_setup(cfg, setup, configured)
            reference["duplicates"] = calibration["_duplicates"]
            sampled = next((v[1].get("sample_images") for k, v in calibration.items()
                            if k != "_duplicates"), None)
            phases["calibration"] = phase_timing(time.perf_counter() - started,
                                                 int(sampled or reference["images"]))
    for d in deciding:
        given = configured[d]
        if reference is None:
            thresholds[d], how[d] = 1.0, {"method": "no reference configured: nothing to "
                                                    "compare with", "threshold": 1.0}
            continue
        if given == "auto":
            value, info = calibration[d]
            thresholds[d], how[d] = float(value), info
            if info["status"] == "failed":
                failed[d] = failure(d, info, reference)
                info["failed"] = failed[d]
            elif info["status"] == "review band":
                review_from[d] = float(info["review_from"])
            continue
        method = "given on the command line" if threshold is not None else "configured"
        thresholds[d] = float(given)
        how[d] = {**(calibration[d][1] if d in calibration else {"note": (
            f"not measured: the reference has {reference['images']} image(s) in "
            f"{reference['groups']} group(s); measuring needs {calibrate.MIN_IMAGES} images in "
            f"{calibrate.MIN_GROUPS} groups")}), "method": method, "threshold": float(given)}
    setup = MatcherSetup(setup.deciding, setup.embedders, setup.aligned, setup.handles,
                         tuple(thresholds.items()), setup.review_band, setup.k, setup.device,
                         setup.batch_size, setup.base_dir, setup.fingerprints,
                         tuple(failed.items()), tuple(review_from.items()))
    context = {"matchers": {e.name: {k: v for k, v in e.describe().items() if k != "device"}
                            for e in embedders},
               "deciding": list(deciding), "matchers_scoring": setup.names,
               "thresholds": thresholds, "threshold_info": how,
               "review_band": cfg.review_band, "k": cfg.k, "reference": reference,
               "failed": failed, "review_from": review_from,
               "rule": "reject if any deciding matcher says reject; review if any says review "
                       "(a matcher whose calibration failed says review for every sample); "
                       "blank images and samples without a score go to review"}
    if aligned:
        context["matchers"]["aligned"] = AlignedMatcher().describe()
    return setup, context


def describe_thresholds(setup: MatcherSetup) -> dict[str, float]:
    """{matcher: threshold} rounded for printing."""
    return {n: round(float(t), 6) for n, t in setup.thresholds}
