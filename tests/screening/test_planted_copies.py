"""Planted copies of real medical images among synthetic samples must be caught.

Reference: DICOM and NIfTI files bundled with pydicom and nibabel. Synthetic shards mix
near-exact copies (exact, resized, light noise, brighter, JPEG q90), stronger augmentations
(crop, 5 degree rotation, contrast, noise, JPEG q50, half size) and distinct images (real
images held out of the reference, and random phantoms).
"""

from __future__ import annotations

import json

import pytest
import numpy as np
import pyarrow.parquet as pq
from screening_helpers import (
    augmented_copies,
    figures,
    held_out_images,
    near_exact_copies,
    phantom,
    planted_images,
    real_images,
    write_raw_dataset,
)

from synthdata.privacy import reveal
from synthdata.screening.pipeline import screen_dataset
from synthdata.spec.models import Memorization


def _rate(stats: dict, prefix: str, field: str) -> tuple[float, int]:
    rows = [s for k, s in stats.items() if k.startswith(prefix)]
    n = sum(s["n"] for s in rows)
    return sum(s[field] for s in rows) / n, n


@pytest.fixture(scope="module")
def pixel_run(reference_dir, tmp_path_factory):
    reference = real_images([str(reference_dir)])
    images = planted_images(reference, list(range(len(reference))), n_phantoms=120)
    out = tmp_path_factory.mktemp("planted-pixel")
    tags = write_raw_dataset(out, images, shard_size=250)
    cfg = Memorization(reference=[str(reference_dir)], matchers="pixel")
    summary = screen_dataset(out, cfg)
    return out, tags, summary


def test_pixel_alone_rejects_near_exact_copies_and_fails_closed_on_geometry(pixel_run):
    """32 x 32 thumbnails cannot catch shifted, rotated, cropped or screenshot copies: on
    copies synthesized like that, calibration fails, so pixel alone accepts nothing (every
    distinct image goes to review, saying why) while near-exact copies are still rejected."""
    out, tags, summary = pixel_run
    stats = figures(out, tags)
    info = summary.threshold_info["pixel"]
    print("\npixel threshold", json.dumps({k: v for k, v in info.items()
                                          if not k.startswith("histogram")}, sort_keys=True))
    for k in sorted(stats):
        print(f"pixel {k:18s} {stats[k]}")
    recall, n_copies = _rate(stats, "copy:", "rejected")
    flagged, n_distinct = _rate(stats, "distinct:", "flagged")
    assert n_copies >= 400 and n_distinct >= 200
    assert recall >= 0.99
    assert info["method"].startswith("target recall on synthesized")
    assert info["status"] == "failed" and info["recall"] < info["min_recall"]
    assert flagged == 1.0  # nothing accepted on a failed matcher's word
    notes = {r["note"] for r in pq.read_table(out / "screening.parquet").to_pylist()
             if r["decision"] == "review"}
    assert notes == {info["failed"]} and "To fix" in info["failed"]


def test_report_lists_skipped_reference_files_by_pseudonym(pixel_run):
    out, _, summary = pixel_run
    report = json.loads((out / "screening_report.json").read_text())
    skipped = {reveal(s["id"])[1]: s["reason"] for s in report["reference"]["skipped"]}
    assert set(skipped) == {"cohort/broken.png", "cohort/dicom/MR_truncated.dcm",
                            "cohort/dicom/rtplan.dcm", "cohort/notes.txt", "cohort/report.pdf",
                            "cohort/scan.nii.gz"}
    assert skipped["cohort/notes.txt"] == "unsupported file type"
    assert "no pixel data" in skipped["cohort/dicom/rtplan.dcm"]
    assert "cohort/" not in (out / "screening_report.json").read_text()
    assert summary.skipped_reference == report["reference"]["skipped"]
    assert report["decisions"]["reject"] == summary.decisions["reject"] > 0
    assert report["nearest_pairs"][0]["similarity"] >= report["nearest_pairs"][-1]["similarity"]
    # Patient level: near-copies counted per (pseudonymous) patient group.
    top = report["patients"]["top"]
    assert top and all(g["group"].startswith("p-") for g in top)
    assert sum(g["near_copies"] for g in top) <= report["decisions"]["reject"] + \
        report["decisions"]["review"]
    assert (out / "screening_report.png").stat().st_size > 1000


def test_default_matchers_catch_rotated_inverted_and_cropped_copies(reference_dir,
                                                                    tmp_path_factory):
    """The default: efficientnet-lite0 proposes candidates, `aligned` decides (auto threshold)."""
    dicom = reference_dir / "dicom"
    reference = real_images([str(dicom)])
    gray = [(rid, img) for rid, img in reference if img.ndim == 2][:6]
    images = []
    for i, (rid, img) in enumerate(gray):
        images += [(f"copy:{name}:{rid}", c) for name, c in near_exact_copies(img, i).items()]
        images += [(f"aug:{name}:{rid}", c) for name, c in augmented_copies(img, i).items()]
        images += [(f"hard:rot90:{rid}", np.rot90(img).copy()), (f"hard:invert:{rid}", 255 - img),
                   (f"hard:flip_lr:{rid}", img[:, ::-1].copy())]
    images += [(f"distinct:held:{rid}", img) for rid, img in held_out_images()[::6]]
    images += [(f"distinct:phantom:{s}", phantom(s)) for s in range(12)]
    out = tmp_path_factory.mktemp("planted-default")
    tags = write_raw_dataset(out, images, shard_size=100)
    cfg = Memorization(reference=[str(dicom)], calibration_images=30, calibration_copies=100,
                       calibration_negatives=100)
    assert cfg.matchers == ["aligned"] and cfg.candidate_embedders == ["efficientnet-lite0"]
    summary = screen_dataset(out, cfg)
    stats = figures(out, tags)
    for k in sorted(stats):
        print(f"default {k:18s} {stats[k]}")
    for kind in ("copy:", "hard:"):
        recall, n = _rate(stats, kind, "rejected")
        assert recall == 1.0, (kind, recall, n)
    info = summary.threshold_info["aligned"]
    print("aligned calibration", {k: v for k, v in info.items() if not k.startswith("histogram")})
    rejected, _ = _rate(stats, "distinct:", "rejected")
    assert rejected == 0.0  # no distinct image is ever rejected
    assert info["status"] in ("ok", "review band") and info["recall"] >= info["min_recall"]
    flagged, _ = _rate(stats, "distinct:", "flagged")
    if info["status"] == "ok":
        assert flagged == 0.0
    else:  # what calibration cannot tell from copies goes to review, saying so
        rows = pq.read_table(out / "screening.parquet").to_pylist()
        assert all("calibration" in (r["note"] or "") for r in rows
                   if r["decision"] == "review" and r["similarity"] is not None
                   and r["similarity"] < info["threshold"])
