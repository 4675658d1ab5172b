"""Reference ingestion: stable ids, formats, rendering, and skipping what cannot be read."""

from __future__ import annotations

import io
import shutil
import tarfile

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image
from screening_helpers import nibabel_dir, pydicom_dir

from synthdata.screening.decoders import decode_dicom, decode_nifti
from synthdata.screening.reference import (
    ReaderOptions,
    ReferenceSetError,
    iter_reference,
    scan_reference,
)
from synthdata.folder.shards import encode_png


def test_ids_are_stable_sorted_and_name_frames_and_slices(reference_dir):
    files, skipped = scan_reference([str(reference_dir)])
    ids = [f.id for f in files]
    assert ids == sorted(ids) and all(i.startswith("cohort/") for i in ids)
    kinds = {f.id: f.kind for f in files}
    assert kinds["cohort/dicom/nested/ct_noext"] == "dicom"  # found by its DICM magic
    assert kinds["cohort/nifti/example4d.nii.gz"] == "nifti"
    assert {s.id for s in skipped} == {"cohort/notes.txt", "cohort/report.pdf"}
    bad: list = []
    images = list(iter_reference([str(reference_dir)], skipped=bad))
    image_ids = [im.id for im in images]
    assert len(image_ids) == len(set(image_ids))
    assert "cohort/dicom/SC_rgb_rle_2frame.dcm#frame=1" in image_ids
    assert "cohort/dicom/CT_small.dcm" in image_ids
    assert sum(i.startswith("cohort/nifti/anatomical.nii#slice=") for i in image_ids) == 25
    assert "cohort/nifti/example4d.nii.gz#vol=1,slice=23" in image_ids
    assert all(im.pixels.dtype == np.uint8 and im.pixels.ndim in (2, 3) for im in images)
    # Same reference, same ids and pixels in the same order.
    again = list(iter_reference([str(reference_dir)]))
    assert [im.id for im in again] == image_ids
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, again))
    # Corrupt, pixel-less and unsupported files are listed and skipped, never raised.
    assert {s.id for s in bad} == {"cohort/broken.png", "cohort/dicom/MR_truncated.dcm",
                                   "cohort/dicom/rtplan.dcm", "cohort/notes.txt",
                                   "cohort/report.pdf", "cohort/scan.nii.gz"}


def test_missing_reference_path_is_a_clear_error(tmp_path):
    with pytest.raises(ReferenceSetError, match="not found: nowhere"):
        scan_reference(["nowhere"], base_dir=tmp_path)


def test_dicom_window_rescale_and_monochrome1(tmp_path):
    ds = pydicom.dcmread(pydicom_dir() / "CT_small.dcm")
    raw = ds.pixel_array.astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.WindowCenter, ds.WindowWidth = 0, 400
    ds.save_as(tmp_path / "ct.dcm")
    frame, = decode_dicom(tmp_path / "ct.dcm")
    windowed = frame.image
    hu = raw * 2 - 1000
    assert np.all(windowed[hu <= -200.5] == 0) and np.all(windowed[hu >= 199] == 255)
    inside = (hu > -190) & (hu < 190)
    assert inside.any()
    expected = np.rint((hu[inside] + 0.5 + 199.5) / 399 * 255)
    assert np.abs(windowed[inside].astype(float) - expected).max() <= 1
    # The other renderings exporters use: min-max of the values (no VOI window), percentile.
    minmax, percentile = frame.alternates
    assert minmax.min() == 0 and minmax.max() == 255 and not np.array_equal(minmax, windowed)
    assert np.abs(minmax.astype(float) - np.rint((hu - hu.min()) / np.ptp(hu) * 255)).max() <= 1
    assert frame.group == "patient:1CT1"  # CT_small's PatientID
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "ct_m1.dcm")
    inverted, = decode_dicom(tmp_path / "ct_m1.dcm")
    assert np.array_equal(inverted.image, 255 - windowed)
    assert np.array_equal(inverted.alternates[0], 255 - minmax)  # displayed alike


def test_multiframe_dicom_gives_one_image_per_frame():
    frames = list(decode_dicom(pydicom_dir() / "examples_ybr_color.dcm"))
    assert [f.suffix for f in frames] == [f"#frame={i}" for i in range(30)]
    assert frames[0].image.shape == (240, 320, 3) and frames[0].alternates == ()  # colour


def test_nifti_slices_along_the_configured_axis():
    path = nibabel_dir() / "anatomical.nii"
    shape = nib.as_closest_canonical(nib.load(path)).shape
    for axis in (0, 1, 2, -1):
        slices = list(decode_nifti(path, axis))
        assert len(slices) == shape[axis]
    with pytest.raises(ValueError):
        list(decode_nifti(path, 5))


def _png(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8))


def test_webdataset_tar_and_parquet_references(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    with tarfile.open(ref / "shard.tar", "w") as tar:
        for name, data in [("a.png", _png(1)), ("a.json", b"{}"), ("b.png", _png(2)),
                           ("c.png", b"corrupt"),
                           ("d.dcm", (pydicom_dir() / "MR_small.dcm").read_bytes())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"id": [1, 2, 3], "image": [_png(3), None, b"junk"]}),
                   ref / "plain.parquet")
    struct = pa.array([{"bytes": _png(4), "path": "x.png"}],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"label": [0], "picture": struct}), ref / "hf.parquet")
    pq.write_table(pa.table({"a": [1]}), ref / "noimage.parquet")
    skipped: list = []
    images = {im.id: im.pixels for im in iter_reference([str(ref)], skipped=skipped)}
    assert sorted(images) == ["ref/hf.parquet#row=0", "ref/plain.parquet#row=0",
                              "ref/shard.tar#member=a.png", "ref/shard.tar#member=b.png",
                              "ref/shard.tar#member=d.dcm"]
    assert np.array_equal(images["ref/shard.tar#member=a.png"],
                          np.asarray(Image.open(io.BytesIO(_png(1)))))
    reasons = {s.id: s.reason for s in skipped}
    assert set(reasons) == {"ref/shard.tar#member=c.png", "ref/plain.parquet#row=1",
                            "ref/plain.parquet#row=2", "ref/noimage.parquet"}
    assert "no image column" in reasons["ref/noimage.parquet"]
    # An explicit column name is used as given.
    opts = ReaderOptions(image_column="picture")
    only = [im.id for im in iter_reference([str(ref / "hf.parquet")], opts)]
    assert only == ["hf.parquet#row=0"]


def test_root_names_are_disambiguated(tmp_path):
    for parent in ("x", "y"):
        (tmp_path / parent / "scans").mkdir(parents=True)
        shutil.copy(pydicom_dir() / "MR_small.dcm", tmp_path / parent / "scans" / "mr.dcm")
    files, _ = scan_reference(["x/scans", "y/scans"], base_dir=tmp_path)
    assert [f.id for f in files] == ["scans/mr.dcm", "scans~2/mr.dcm"]
