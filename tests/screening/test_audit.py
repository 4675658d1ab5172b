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
from synthdata.shards import encode_png


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
    args = ["audit", str(synthetic), str(tar_path), "--reference", str(dicom), "--reference",
            str(nifti), "--retriever", "pixel", "--out", str(out)]
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
    assert all(rows[s]["decision"] == "accept" for s in distinct)
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
