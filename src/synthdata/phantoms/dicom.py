"""Phantoms as DICOM files, so that the real-data readers are exercised.

A phantom DICOM is a CR image stored MONOCHROME1 (high values dark) in 12 bits, with a VOI
window that maps exactly back to the PNG: a reader must apply the window and the inversion to
see what the PNG shows. Stored value = OFFSET + STEP * (255 - png); the window covers
[OFFSET, OFFSET + 255 * STEP] (DICOM PS3.3 C.11.2.1.2.1 linear function). UIDs are derived from
(seed, patient, study), so files are byte-identical on every run; nothing holds a timestamp.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
OFFSET, STEP = 1024, 8
WINDOW_WIDTH = 255 * STEP + 1
WINDOW_CENTER = OFFSET + 0.5 + 255 * STEP / 2
COMMENT = "Synthetic procedural phantom made by `synthdata phantoms`; not clinical data."
_BASE_DATE = dt.date(2020, 1, 6)


def stored_values(image: np.ndarray) -> np.ndarray:
    """The uint16 pixel values stored for a uint8 display image (MONOCHROME1, windowed)."""
    return (OFFSET + STEP * (255 - image.astype(np.uint16))).astype(np.uint16)


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://synthdata/phantoms")


def _uid(*parts: object) -> str:
    """A stable UID: '2.25.' + a name-based (v5) UUID of the parts (PS3.5 B.2)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, '/'.join(map(str, parts))).int}"


def phantom_dataset(image: np.ndarray, attrs: dict, seed: int) -> Dataset:
    """The DICOM dataset of one phantom (image: uint8 HxW; attrs: its metadata row)."""
    patient, study = attrs["patient_number"], attrs["study"]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = _uid(seed, attrs["index"], "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid("synthdata-implementation")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = attrs["study_uid"]
    ds.SeriesInstanceUID = _uid(seed, patient, study, "series")
    ds.PatientID = attrs["patient_id"]
    ds.PatientName = f"PHANTOM^{attrs['patient_id']}"
    ds.PatientSex = "F" if attrs["sex"] == "female" else "M"
    ds.PatientAge = f"{int(attrs['age']):03d}Y"
    ds.StudyDate = (_BASE_DATE + dt.timedelta(days=91 * int(study))).strftime("%Y%m%d")
    ds.StudyID = str(study + 1)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = attrs["view"]
    ds.ImageComments = COMMENT
    ds.PatientComments = COMMENT
    ds.Manufacturer = "synthdata"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.WindowCenter = f"{WINDOW_CENTER:g}"
    ds.WindowWidth = str(WINDOW_WIDTH)
    ds.PixelData = stored_values(image).astype("<u2").tobytes()
    return ds


def study_uid(seed: int, patient: int, study: int) -> str:
    """StudyInstanceUID of a phantom study (derived, stable)."""
    return _uid(seed, patient, study, "study")


def dicom_bytes(image: np.ndarray, attrs: dict, seed: int) -> bytes:
    """One phantom as the bytes of a DICOM Part-10 file."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, phantom_dataset(image, attrs, seed), enforce_file_format=True)
    return buf.getvalue()
