"""Decoding of real reference images into 8-bit arrays, one function per format.

Every decoder yields `Frame`s: `image` is a uint8 array (H x W gray or H x W x 3 RGB)
rendered as a viewer would show it, `suffix` tells frames, slices or pages of one file apart
("" for a file holding one image, else e.g. "#frame=3", 0-based), `alternates` are the same
picture rendered the other ways exporters render it (min-max without the VOI window, a
0.5-99.5 percentile stretch; gray images only, duplicates dropped), and `group` names the
patient where the file says (DICOM PatientID, else StudyInstanceUID). Screening indexes every
rendering, so a copy exported under another convention still matches. Decoders raise on a
file they cannot read; the caller (`reference.py`) records and skips it.

- Raster (PNG/JPEG/TIFF/BMP) through Pillow; a multi-page TIFF gives one image per page.
- DICOM through pydicom: modality LUT (rescale slope/intercept), then the first VOI window
  (linear, DICOM PS3.3 C.11.2.1.2) or the VOI LUT where present, else the full range;
  MONOCHROME1 inverted; multi-frame gives one image per frame; alternates: min-max and
  percentile of the modality values (MONOCHROME1 inverted alike).
- NIfTI through nibabel: reoriented to the closest canonical (RAS) orientation, 2-D slices
  along a configured spatial axis (default the last), displayed with the first in-plane axis
  left to right and the second bottom to top; 4-D volumes give "#vol=V,slice=S".
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageSequence

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Frame:
    """One image of a file: its suffix, display rendering, other renderings, patient group."""

    suffix: str
    image: np.ndarray
    alternates: tuple[np.ndarray, ...] = ()
    group: str | None = None

    @property
    def renderings(self) -> list[np.ndarray]:
        """The display rendering first, then the alternates."""
        return [self.image, *self.alternates]


Decoded = Iterator[Frame]


def to_uint8(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map values linearly from [lo, hi] (default: their finite min and max) onto 0..255."""
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        arr = np.where(finite, arr, 0.0)
    if lo is None or hi is None:
        if not finite.any():
            return np.zeros(arr.shape, dtype=np.uint8)
        lo = float(arr[finite].min()) if lo is None else lo
        hi = float(arr[finite].max()) if hi is None else hi
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (np.clip(arr, lo, hi) - lo) * (255.0 / (hi - lo))
    return np.rint(scaled).astype(np.uint8)


def percentile_uint8(values: np.ndarray, low: float = PERCENTILES[0],
                     high: float = PERCENTILES[1]) -> np.ndarray:
    """Map values linearly from their [low, high] percentiles onto 0..255 (clipping outside)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    return to_uint8(arr, float(lo), float(hi))


def alternates(values: np.ndarray, display: np.ndarray, invert: bool = False
               ) -> tuple[np.ndarray, ...]:
    """Min-max and percentile renderings of gray values that differ from the display one."""
    if np.asarray(values).ndim != 2:
        return ()
    out: list[np.ndarray] = []
    for img in (to_uint8(values), percentile_uint8(values)):
        img = 255 - img if invert else img
        if not any(np.array_equal(img, seen) for seen in (display, *out)):
            out.append(img)
    return tuple(out)


def is_dicom_bytes(head: bytes) -> bool:
    """True when bytes start like a DICOM Part-10 file (preamble then 'DICM')."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _pil_frame(frame: Image.Image) -> np.ndarray:
    """A Pillow frame as uint8 gray or RGB, high bit depths scaled by their range."""
    mode = frame.mode
    if mode in ("L", "RGB"):
        return np.asarray(frame).copy()
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return to_uint8(np.asarray(frame))
    if mode in ("1", "LA", "La"):
        return np.asarray(frame.convert("L")).copy()
    return np.asarray(frame.convert("RGB")).copy()


def decode_raster(src: str | Path | BinaryIO) -> Decoded:
    """PNG, JPEG, TIFF or BMP; one image per page of a multi-page file."""
    with Image.open(src) as img:
        pages = getattr(img, "n_frames", 1)
        for i, frame in enumerate(ImageSequence.Iterator(img)):
            frame.load()
            image = _pil_frame(frame)
            values = np.asarray(frame) if frame.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N",
                                                         "F", "L") else None
            extra = alternates(values, image) if values is not None else ()
            yield Frame("" if pages == 1 else f"#page={i}", image, extra)


def _first(value) -> float | None:
    """First value of a possibly multi-valued DICOM element, as float."""
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) \
            else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def dicom_group(ds) -> str | None:
    """The patient of a DICOM dataset: 'patient:<PatientID>', else 'study:<UID>', else None."""
    for tag, kind in (("PatientID", "patient"), ("StudyInstanceUID", "study")):
        value = str(ds.get(tag, "") or "").strip()
        if value:
            return f"{kind}:{value}"
    return None


def dicom_values(frame: np.ndarray, ds) -> np.ndarray | None:
    """A gray frame's values after the modality LUT (rescale), or None for colour frames."""
    from pydicom.pixels import apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR" or frame.ndim == 3:
        return None
    return apply_modality_lut(frame, ds).astype(np.float64)


def _render_dicom_frame(frame: np.ndarray, ds) -> np.ndarray:
    """One decoded frame rendered to uint8: modality LUT, VOI, MONOCHROME1 inversion."""
    from pydicom.pixels import apply_color_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return to_uint8(apply_color_lut(frame, ds))
    if frame.ndim == 3:  # colour: already RGB (pydicom converts YBR by default)
        if frame.dtype == np.uint8:
            return frame
        return to_uint8(frame)
    values = dicom_values(frame, ds)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        # Linear VOI function of PS3.3 C.11.2.1.2.1, onto 0..255.
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        out = to_uint8(values, lo, hi)
    elif "VOILUTSequence" in ds:
        out = to_uint8(apply_voi_lut(frame, ds, prefer_lut=True))
    else:
        out = to_uint8(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def decode_dicom(src: str | Path | BinaryIO) -> Decoded:
    """A DICOM file: one image per frame ("#frame=N" when there is more than one)."""
    import pydicom
    from pydicom.pixels import iter_pixels

    ds = pydicom.dcmread(src)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    group = dicom_group(ds)
    invert = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    for i, frame in enumerate(iter_pixels(ds)):
        image = _render_dicom_frame(frame, ds)
        values = dicom_values(frame, ds)
        extra = alternates(values, image, invert) if values is not None else ()
        yield Frame("" if frames == 1 else f"#frame={i}", image, extra, group)


def decode_nifti(path: str | Path, axis: int = -1) -> Decoded:
    """A NIfTI volume as 2-D slices along a spatial axis (0, 1, 2 or negative from the third)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    shape = img.shape
    if len(shape) < 2:
        raise ValueError(f"NIfTI image has {len(shape)} dimension(s); need at least 2")
    data = img.dataobj
    spatial = min(3, len(shape))
    if len(shape) == 2:
        plane = np.flipud(np.asarray(data, dtype=np.float64).T)
        image = to_uint8(plane)
        yield Frame("", image, alternates(plane, image))
        return
    ax = axis % spatial if -spatial <= axis < spatial else None
    if ax is None:
        raise ValueError(f"slice axis {axis} does not exist in a volume of shape {shape}")
    extra = shape[3:]
    n_vols = int(np.prod(extra)) if extra else 1
    for v in range(n_vols):
        vol_index = np.unravel_index(v, extra) if extra else ()
        for s in range(shape[ax]):
            index: list = [slice(None)] * 3
            index[ax] = s
            plane = np.flipud(np.asarray(data[tuple(index) + tuple(vol_index)],
                                         dtype=np.float64).T)
            suffix = f"#slice={s}" if not extra else f"#vol={v},slice={s}"
            image = to_uint8(plane)
            yield Frame(suffix, image, alternates(plane, image))


def decode_bytes(data: bytes, name: str = "") -> Decoded:
    """An image held in memory (a tar member, a Parquet cell): DICOM or raster."""
    if is_dicom_bytes(data[:132]) or name.lower().endswith(DICOM_SUFFIXES):
        yield from decode_dicom(io.BytesIO(data))
    else:
        yield from decode_raster(io.BytesIO(data))
