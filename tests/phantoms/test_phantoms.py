"""`synthdata phantoms`: deterministic, labelled, separable, with real-reader-compatible DICOMs.

Data: procedural phantoms made here (never clinical data).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.errors import OutputError, SynthdataError
from synthdata.phantoms import (
    LABELS,
    nearest_centroid_accuracy,
    render_phantom,
    thumbnails,
    write_phantoms,
)
from synthdata.phantoms.writer import iter_phantoms
from synthdata.screening.decoders import decode_dicom

SEED = 11


def _rows(meta: Path) -> list[dict]:
    with open(meta, newline="") as f:
        return list(csv.DictReader(f))


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory) -> Path:
    """30 phantoms at 64 px with DICOMs."""
    out = tmp_path_factory.mktemp("phantoms") / "set"
    write_phantoms(out, count=30, seed=SEED, size=64, dicom=True)
    return out


def test_byte_identical_across_runs_and_equal_to_render_phantom(phantom_set, tmp_path):
    again = tmp_path / "again"
    write_phantoms(again, count=30, seed=SEED, size=64, dicom=True)
    assert _digests(again) == _digests(phantom_set)
    rows = _rows(phantom_set / "metadata.csv")
    for i in (0, 17, 29):
        ph = render_phantom(SEED, i, size=64)
        assert np.array_equal(np.asarray(Image.open(phantom_set / rows[i]["path"])), ph.image)
        assert ph.attrs["caption"] == rows[i]["caption"] and ph.attrs["label"] == rows[i]["label"]
    other_seed = render_phantom(SEED + 1, 0, size=64).image
    assert not np.array_equal(other_seed, render_phantom(SEED, 0, size=64).image)


def test_metadata_columns_patients_and_readme(phantom_set):
    rows = _rows(phantom_set / "metadata.csv")
    assert len(rows) == 30
    for column in ("path", "label", "patient_id", "study", "age", "sex", "view", "side", "size",
                   "caption", "dicom_path", "study_uid"):
        assert column in rows[0], column
    assert {r["label"] for r in rows} == set(LABELS)
    by_patient: dict[str, list[dict]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], []).append(r)
    follow_ups = [v for v in by_patient.values() if len(v) > 1]
    assert follow_ups, "some phantom patients have several studies"
    for studies in follow_ups:
        assert len({(s["label"], s["sex"], s["age"]) for s in studies}) == 1
        assert len({s["study_uid"] for s in studies}) == len(studies)
    effusion = next(r for r in rows if r["label"] == "effusion")
    assert effusion["side"] in ("left", "right") and f"{effusion['side']} pleural effusion" in effusion["caption"]
    assert {r["view"] for r in rows} <= {"AP", "PA"} and {r["sex"] for r in rows} <= {"female", "male"}
    assert "not clinical data" in (phantom_set / "README.md").read_text()


def test_dicom_needs_window_and_inversion_and_matches_the_png(phantom_set):
    rows = _rows(phantom_set / "metadata.csv")
    for r in rows[:4]:
        png = np.asarray(Image.open(phantom_set / r["path"]))
        frame, = list(decode_dicom(phantom_set / r["dicom_path"]))
        assert frame.suffix == "" and np.array_equal(frame.image, png)
        ds = pydicom.dcmread(phantom_set / r["dicom_path"])
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        assert ds.PatientID == r["patient_id"] and str(ds.PatientName).startswith("PHANTOM^")
        assert ds.StudyInstanceUID == r["study_uid"]
        assert "synthetic" in ds.ImageComments.lower() and "not clinical" in ds.ImageComments
        raw = ds.pixel_array.astype(np.float64)
        assert raw.max() > 255, "stored values need the VOI window"
        assert np.corrcoef(raw.ravel(), png.ravel())[0, 1] < -0.99, "stored inverted (MONOCHROME1)"


def test_labels_separable_by_nearest_centroid_on_16px_thumbnails():
    phantoms = list(iter_phantoms(SEED, 200, size=128))
    features = thumbnails([p.image for p in phantoms])
    labels = [p.attrs["label"] for p in phantoms]
    majority = max(labels.count(x) for x in LABELS) / len(labels)
    accuracy = nearest_centroid_accuracy(features, labels)
    assert majority < 0.3
    assert accuracy >= 0.85, accuracy  # chance is about 0.2


def test_folder_guards(phantom_set, tmp_path):
    write_phantoms(phantom_set, count=30, seed=SEED, size=64, dicom=True)  # same set: rewritten
    with pytest.raises(OutputError, match="different phantom set"):
        write_phantoms(phantom_set, count=31, seed=SEED, size=64, dicom=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_phantoms(tmp_path / "busy", count=3, seed=1)
    with pytest.raises(SynthdataError, match="labels must be"):
        write_phantoms(tmp_path / "x", count=3, seed=1, labels=("normal", "pneumothorax"))


def test_cli_writes_a_subset_of_labels(tmp_path):
    result = CliRunner().invoke(app, ["phantoms", str(tmp_path / "p"), "--count", "8", "--seed", "3",
                                      "--size", "48", "--labels", "normal,nodule"])
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "p" / "metadata.csv")
    assert {r["label"] for r in rows} == {"normal", "nodule"}
    assert Image.open(tmp_path / "p" / rows[0]["path"]).size == (48, 48)
    bad = CliRunner().invoke(app, ["phantoms", str(tmp_path / "q"), "--labels", "normal,fracture"])
    assert bad.exit_code == 2 and "labels must be" in bad.output
