"""`synthdata audit`: a folder of PNGs and a WebDataset tar against raw DICOM and NIfTI
references, through the real Prefect flow; `--fail-on`; `synthdata screen --reveal`.

Real images: pydicom's and nibabel's test files (the session's reference folder).
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from screening_helpers import phantom, real_images
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.folder.shards import encode_png


@pytest.mark.e2e
def test_audit_pngs_against_dicom_and_nifti(prefect_server, reference_dir, tmp_path):
    dicom, nifti = reference_dir / "dicom", reference_dir / "nifti"
    real = dict(real_images([str(dicom), str(nifti)]))
    ct, slice10 = real["dicom/CT_small.dcm"], real["nifti/anatomical.nii#slice=10"]
    synthetic = tmp_path / "synthetic"
    (synthetic / "batch").mkdir(parents=True)
    pngs = {"batch/ct_rot90.png": np.rot90(ct), "batch/slice_flipped.png": slice10[:, ::-1],
            "batch/ct_inverted.png": 255 - ct, "blank.png": np.full((64, 64), 9, np.uint8),
            **{f"batch/phantom{i}.png": phantom(40 + i) for i in range(6)}}
    for name, img in pngs.items():
        (synthetic / name).write_bytes(encode_png(np.ascontiguousarray(img)))
    tar_path = tmp_path / "samples.tar"
    with tarfile.open(tar_path, "w") as tar:
        for key, img in (("s0", ct[8:120, 8:120]), ("s1", phantom(7))):
            data = encode_png(np.ascontiguousarray(img))
            info = tarfile.TarInfo(f"{key}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "audit"
    # A threshold set by hand: calibration on a reference of a few test files cannot bound
    # false positives (it fails closed or reviews: test_planted_copies.py, docs/screening.md);
    # this test is about the audit's inputs, outputs and gate.
    args = ["audit", str(synthetic), str(tar_path), "--reference", str(dicom), "--reference",
            str(nifti), "--retriever", "pixel", "--threshold", "0.9", "--out", str(out)]
    runner = CliRunner()
    failed = runner.invoke(app, [*args, "--fail-on", "reject"])
    assert failed.exit_code == 1, failed.output
    assert "audited 12 images" in failed.output

    table = pq.read_table(out / "audit.parquet")
    assert table.column_names == ["source", "decision", "similarity", "decided_by",
                                  "similarity_pixel", "similarity_aligned", "nearest_real_id",
                                  "nearest_group", "nearest_real_ids", "similarities", "note"]
    rows = {r["source"]: r for r in table.to_pylist()}
    assert len(rows) == 12
    copies = [str(synthetic / n) for n in ("batch/ct_rot90.png", "batch/slice_flipped.png",
                                           "batch/ct_inverted.png")] + [f"{tar_path}#s0"]
    assert all(rows[s]["decision"] == "reject" for s in copies)
    assert rows[str(synthetic / "blank.png")]["decision"] == "review"
    distinct = [s for s in rows if "phantom" in s] + [f"{tar_path}#s1"]
    assert all(rows[s]["decision"] == "accept" for s in distinct), \
        {s: (rows[s]["decision"], rows[s]["similarity"], rows[s]["note"]) for s in distinct}
    assert all(r["similarity"] == r["similarity_aligned"] for r in rows.values()
               if r["note"] is None)
    assert rows[copies[0]]["nearest_group"] == rows[copies[2]]["nearest_group"]  # one patient
    # Pseudonymous ids only: no real id, file name or root name is written.
    for name in ("audit.parquet", "audit_report.json"):
        data = (out / name).read_bytes()
        assert b"CT_small" not in data and b"anatomical" not in data and b"cohort" not in data
    report = json.loads((out / "audit_report.json").read_text())
    assert report["decisions"] == {"accept": 7, "review": 1, "reject": 4}
    assert report["patients"]["groups_with_near_copies"] == 2
    assert (out / "audit_report.png").stat().st_size > 1000

    # On the machine holding the cache, the pseudonyms map back.
    shown = runner.invoke(app, ["screen", str(out), "--reveal", copies[1], "--json"])
    assert shown.exit_code == 0, shown.output
    revealed = json.loads(shown.output)
    assert revealed["nearest_real_id"]["value"] == "nifti/anatomical.nii#slice=10"
    assert revealed["nearest_group"]["value"] == "file:nifti/anatomical.nii"
    passed = runner.invoke(app, [*args, "--fail-on", "review", "--threshold", "0.9999"])
    assert passed.exit_code == 1  # the blank image is reviewed whatever the threshold
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output


def _inputs_with_unjudgeable_files(folder):
    """Distinct phantoms (accepted) interleaved with inputs that cannot be judged, named so
    every chunk of two holds one of each: a corrupt and an empty PNG, a truncated DICOM and
    one without pixel data (pydicom's test files), a float TIFF and a float DICOM holding NaN."""
    import shutil

    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from screening_helpers import pydicom_dir

    folder.mkdir(parents=True)
    bad = {"01-corrupt.png": b"\x89PNG\r\n\x1a\n not really a png", "03-empty.png": b""}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    shutil.copy(pydicom_dir() / "MR_truncated.dcm", folder / "05-truncated.dcm")
    shutil.copy(pydicom_dir() / "rtplan.dcm", folder / "07-no-pixels.dcm")
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    values[5, 5] = np.nan
    Image.fromarray(values).save(folder / "09-nan.tif")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # parametric map
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = values.tobytes()
    ds.save_as(folder / "11-nan.dcm", enforce_file_format=True)
    for i in (0, 2, 4, 6, 8, 10):
        (folder / f"{i:02d}-phantom.png").write_bytes(encode_png(phantom(100 + i)))
    return ["01-corrupt.png", "03-empty.png", "05-truncated.dcm", "07-no-pixels.dcm", "09-nan.tif",
            "11-nan.dcm"]


@pytest.mark.e2e
def test_unjudgeable_inputs_are_review_rows_and_fail_the_gate_after_a_resume(
        prefect_server, reference_dir, tmp_path):
    """A kill after the first staged chunk, then a rerun: the reused chunks still carry their
    unreadable inputs as review rows with a reason, and --fail-on review exits 1."""
    import os
    import subprocess
    import sys

    synthetic = tmp_path / "synthetic"
    unjudgeable = _inputs_with_unjudgeable_files(synthetic)
    out = tmp_path / "audit"
    args = ["audit", str(synthetic), "--reference", str(reference_dir / "dicom"), "--reference",
            str(reference_dir / "nifti"), "--retriever", "pixel", "--threshold", "0.9",
            "--out", str(out), "--chunk-size", "2", "--fail-on", "review"]
    env = {**os.environ, "PREFECT_API_URL": prefect_server,
           "SYNTHDATA_FAULT": "audit.chunk_staged:kill"}
    killed = subprocess.run([sys.executable, "-m", "synthdata.cli", *args], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert killed.returncode == 137, killed.stdout + killed.stderr  # faults: os._exit(137)
    staged = list((out / ".audit").glob("*/chunk-*.parquet"))
    assert 1 <= len(staged) <= 6 and not (out / "audit.parquet").exists()

    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 1, resumed.output
    assert "of 6 chunks were already screened" in resumed.output
    assert "6 unreadable (review)" in resumed.output
    rows = {r["source"]: r for r in pq.read_table(out / "audit.parquet").to_pylist()}
    assert len(rows) == 12
    for name in unjudgeable:
        row = rows[str(synthetic / name)]
        assert row["decision"] == "review" and row["note"].startswith("unreadable input: ")
        assert row["similarity"] is None and row["nearest_real_id"] is None
    assert "NaN or infinite" in rows[str(synthetic / "09-nan.tif")]["note"]
    assert rows[str(synthetic / "11-nan.dcm")]["note"] == "unreadable input: 1 stored values are NaN or infinite"
    assert "no pixel data" in rows[str(synthetic / "07-no-pixels.dcm")]["note"]
    assert all(r["decision"] == "accept" for s, r in rows.items() if "phantom" in s)
    report = json.loads((out / "audit_report.json").read_text())
    assert report["decisions"]["review"] == 6
    assert sum(n.startswith("review: ") for n in report["notes"]) == 6
    assert not (out / ".audit").exists()
