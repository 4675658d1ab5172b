"""Fixtures of the screening tests: a private cache and a real medical reference folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from screening_helpers import NIBABEL_FILES, PYDICOM_FILES, nibabel_dir, pydicom_dir


@pytest.fixture(scope="session", autouse=True)
def _screening_env(tmp_path_factory):
    """Offline, and a temporary cache unless the session already set one (tests/conftest.py)."""
    with pytest.MonkeyPatch.context() as mp:
        if "SYNTHDATA_CACHE" not in os.environ:
            mp.setenv("SYNTHDATA_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """A reference folder of real DICOM and NIfTI files, plus corrupt and unsupported files."""
    ref = tmp_path_factory.mktemp("real") / "cohort"
    (ref / "dicom" / "nested").mkdir(parents=True)
    (ref / "nifti").mkdir()
    for name in PYDICOM_FILES:
        shutil.copy(pydicom_dir() / name, ref / "dicom" / name)
    shutil.copy(pydicom_dir() / "CT_small.dcm", ref / "dicom" / "nested" / "ct_noext")
    for name in NIBABEL_FILES:
        shutil.copy(nibabel_dir() / name, ref / "nifti" / name)
    # Corrupt and unsupported: reported and skipped.
    shutil.copy(pydicom_dir() / "MR_truncated.dcm", ref / "dicom" / "MR_truncated.dcm")
    shutil.copy(pydicom_dir() / "rtplan.dcm", ref / "dicom" / "rtplan.dcm")
    (ref / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (ref / "scan.nii.gz").write_bytes(b"\x1f\x8b corrupt gzip")
    (ref / "notes.txt").write_text("not an image")
    (ref / "report.pdf").write_bytes(b"%PDF-1.4")
    return ref
