"""Calibration that cannot be silently disabled: a duplicated study in the reference, a
reference whose images look alike (calibration fails closed), a threshold set by hand.

Real images: the pydicom-data wheel's clinical DICOMs and pydicom's test files (the
reference and the copies); `synthdata phantoms` output (procedural phantoms, not clinical
data: every phantom looks like every other, which is what makes them hard to calibrate on).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.phantoms import render_phantom, write_phantoms
from synthdata.screening import edits as E
from synthdata.screening.calibrate import CalibrationError
from synthdata.screening.decide import decide_all
from synthdata.screening.matchers import prepare_matchers
from synthdata.screening.reference import iter_reference
from synthdata.screening.report import glance
from synthdata.folder.shards import encode_png
from synthdata.spec.models import Memorization

CLINICAL = ["RG1_UNCR.dcm", "RG3_UNCR.dcm", "MR2_UNCR.dcm", "693_UNCR.dcm", "US1_UNCR.dcm",
            "CT_small.dcm", "MR_small.dcm", "OBXXXX1A.dcm", "JPEG2000_UNC.dcm", "image_dfl.dcm",
            "emri_small.dcm"]
SMALL = {"retrievers": ["pixel"], "calibration_copies": 80, "calibration_negatives": 100}


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """Clinical DICOMs, one MR study twice: re-exported under another PatientID."""
    root = tmp_path_factory.mktemp("dup") / "pacs"
    root.mkdir()
    for name in CLINICAL:
        shutil.copy(get_testdata_file(name), root / name)
    ds = pydicom.dcmread(root / "MR2_UNCR.dcm")
    ds.PatientID = "REEXPORT-0001"
    ds.save_as(root / "MR2_reexport.dcm")
    return root


def test_a_duplicated_study_does_not_disable_screening(duplicated):
    setup, context = prepare_matchers(Memorization(reference=[str(duplicated)], **SMALL))
    dups = context["reference"]["duplicates"]
    assert dups["pairs"] == dups["same_pixels"] == 1 and dups["clusters"] == 1
    pair = dups["examples"][0]
    assert {pair["a"], pair["b"]} == {"pacs/MR2_UNCR.dcm", "pacs/MR2_reexport.dcm"}
    info = context["threshold_info"]["aligned"]
    assert info["status"] == "ok" and setup.threshold("aligned") < 0.99
    assert not setup.failed and info["recall"] >= 0.97
    assert "1 near-duplicate pair" in glance(context)["reference_duplicates"]
    # Copies of the duplicated study under the auditor's edits are rejected.
    mr = next(iter_reference([str(duplicated / "MR2_UNCR.dcm")])).pixels
    d = E.export(mr)
    rng = np.random.default_rng(1)
    copies = [E.shift(d, 0.06, 0.0), E.rotate(d, 5.0), E.rotate(d, 4.0, 0.92),
              E.screenshot(d, rng), E.rotate(E.dihedral(d, "flip_lr"), 3.0),
              E.resize(d, 64, 64)]
    screener = setup.screener()
    decided = decide_all(screener.match(screener.query_data(copies)), dict(setup.thresholds),
                         setup.review_band, list(setup.deciding))
    assert [x.decision for x in decided] == ["reject"] * len(copies)


def test_duplicates_can_be_refused(duplicated):
    with pytest.raises(CalibrationError, match="reference_duplicates is 'error'") as err:
        prepare_matchers(Memorization(reference=[str(duplicated)], reference_duplicates="error",
                                      **SMALL))
    assert "MR2" not in str(err.value) and "p-" in str(err.value)  # pseudonyms only


@pytest.fixture(scope="module")
def look_alike(tmp_path_factory):
    """A phantom set: patients grouped by metadata.csv, images that all look alike."""
    out = tmp_path_factory.mktemp("phantoms") / "phantoms"
    write_phantoms(out, count=40, seed=5, size=64)
    return out


def test_a_failed_calibration_sends_every_sample_to_review(look_alike):
    setup, context = prepare_matchers(Memorization(reference=[str(look_alike)], **SMALL))
    info = context["threshold_info"]["aligned"]
    assert context["reference"]["group_sources"] == {"metadata": context["reference"]["groups"]}
    assert info["status"] == "failed" and info["recall"] < 0.9
    reason = dict(setup.failed)["aligned"]
    assert "To fix" in reason and "memorization.threshold" in reason and "groups" in reason
    # Distinct phantoms (another seed) and exact copies: nothing is accepted.
    distinct = [render_phantom(99, i, 64).image for i in range(4)]
    copy = next(iter_reference([str(look_alike)])).pixels
    screener = setup.screener()
    decided = decide_all(screener.match(screener.query_data(distinct + [copy])),
                         dict(setup.thresholds), setup.review_band, list(setup.deciding))
    assert [d.decision for d in decided] == ["review"] * 4 + ["reject"]
    assert all(d.note == reason for d in decided[:4])


def test_a_threshold_set_by_hand_is_kept_and_measured(look_alike):
    setup, context = prepare_matchers(Memorization(reference=[str(look_alike)], threshold=0.985,
                                                   **SMALL))
    info = context["threshold_info"]["aligned"]
    assert setup.threshold("aligned") == 0.985 and not setup.failed
    assert info["method"] == "configured" and "measured" in info
    assert 0 <= info["recall"] <= 1 and info["trials"] > 100
    lo, hi = info["false_positive_interval"]
    assert lo <= info["false_positive_estimate"] <= hi
    assert "set by hand, measured" in glance(context)["calibration_status"]


@pytest.mark.e2e
def test_audit_fails_on_review_when_calibration_fails(prefect_server, look_alike, tmp_path):
    """`synthdata audit` on a `synthdata phantoms` folder: grouped by its patient column,
    calibration fails closed, `--fail-on review` exits 1 and says what to fix."""
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    for i in range(3):
        (synthetic / f"s{i}.png").write_bytes(encode_png(render_phantom(123, i, 64).image))
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["audit", str(synthetic), "--reference", str(look_alike),
                                      "--retriever", "pixel", "--out", str(out),
                                      "--fail-on", "review"])
    assert result.exit_code == 1, result.output
    assert "calibration failed" in result.output and "To fix" in result.output
    report = json.loads((out / "audit_report.json").read_text())
    assert report["decisions"] == {"accept": 0, "review": 3, "reject": 0}
    assert report["reference"]["group_sources"] == {"metadata": report["reference"]["groups"]}
    assert "column 'patient_id'" in report["patient_groups"]
    assert "FAILED" in report["calibration_status"]
