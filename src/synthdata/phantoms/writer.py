"""Writing a phantom set: PNGs (and DICOMs), `metadata.csv`, `phantoms.json`, `README.md`.

Layout of OUT:
    images/phantom-000000.png     8-bit gray, SIZE x SIZE
    dicom/phantom-000000.dcm      with --dicom: MONOCHROME1, windowed (see dicom.py)
    metadata.csv                  one row per image (path relative to OUT, label, patient, ...)
    phantoms.json                 what made the set (seed, count, size, labels, version)
    README.md                     says these are procedural phantoms, not clinical data

Files are written under a temporary name and renamed; metadata.csv is written last, so a set
with a metadata.csv is complete. Rerunning with the same parameters rewrites the same bytes;
a folder holding anything else is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from synthdata.errors import OutputError, SynthdataError
from synthdata.fsutil import write_json_atomic, write_text_atomic
from synthdata.phantoms.classify import nearest_centroid_accuracy, thumbnails
from synthdata.phantoms.params import (
    LABELS,
    draw_patient,
    draw_study,
    finding_phrase,
    patient_layout,
)
from synthdata.phantoms.render import heart_ratio, render

PHANTOM_VERSION = "cxr-phantom-v1"
COLUMNS = ("index", "path", "label", "patient_id", "study", "age", "sex", "view", "side", "lobe",
           "size", "ctr", "finding", "caption")
__all__ = ["PHANTOM_VERSION", "Phantom", "render_phantom", "write_phantoms", "thumbnails",
           "nearest_centroid_accuracy"]


@dataclass(frozen=True)
class Phantom:
    """One rendered phantom: the image (uint8, size x size) and its metadata row."""

    image: np.ndarray
    attrs: dict


def patient_id(seed: int, patient: int) -> str:
    """Pseudonymous id of a phantom patient, distinct across seeds."""
    tag = hashlib.sha256(f"synthdata-phantom:{seed}".encode()).hexdigest()[:6].upper()
    return f"PH{tag}-{patient:05d}"


def caption(attrs: dict) -> str:
    """Default caption: '{view} chest x-ray phantom, {age} year old {sex}, {finding}'."""
    return f"{attrs['view']} chest x-ray phantom, {attrs['age']} year old {attrs['sex']}, {attrs['finding']}"


def _check(seed: int, size: int, labels: Sequence[str]) -> tuple[str, ...]:
    if not 0 <= seed < 2**63:
        raise SynthdataError(f"seed must be in [0, 2^63), got {seed}")
    if not 32 <= size <= 2048:
        raise SynthdataError(f"size must be between 32 and 2048 pixels, got {size}")
    labels = tuple(labels)
    unknown = [x for x in labels if x not in LABELS]
    if unknown or not labels or len(set(labels)) != len(labels):
        raise SynthdataError(f"labels must be distinct names among {list(LABELS)}, got {list(labels)}")
    return labels


def _render(seed: int, index: int, patient: int, study: int, size: int,
            labels: tuple[str, ...]) -> Phantom:
    pat = draw_patient(seed, patient, labels)
    st = draw_study(seed, index, study, pat)
    attrs = {
        "index": index, "label": pat.label, "patient_id": patient_id(seed, patient),
        "patient_number": patient, "study": study, "age": pat.age, "sex": pat.sex,
        "view": st.view, "side": pat.side, "lobe": pat.lobe, "size": st.size,
        "ctr": round(heart_ratio(pat, st), 3), "finding": finding_phrase(pat, st),
    }
    attrs["caption"] = caption(attrs)
    return Phantom(render(pat, st, size), attrs)


def render_phantom(seed: int, index: int, size: int = 128, labels: Sequence[str] = LABELS) -> Phantom:
    """Phantom `index` of the set made with `seed` (the same image write_phantoms writes)."""
    labels = _check(seed, size, labels)
    patients, studies = patient_layout(seed, index + 1)
    return _render(seed, index, int(patients[index]), int(studies[index]), size, labels)


def iter_phantoms(seed: int, count: int, size: int = 128, labels: Sequence[str] = LABELS):
    """Phantoms 0..count-1 of a set, in order."""
    labels = _check(seed, size, labels)
    patients, studies = patient_layout(seed, count)
    for i in range(count):
        yield _render(seed, i, int(patients[i]), int(studies[i]), size, labels)


def png_bytes(image: np.ndarray) -> bytes:
    """Deterministic PNG encoding of a uint8 gray image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Temporary name then rename (readers never see half a file; metadata.csv marks completion)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _identity(seed: int, count: int, size: int, labels: tuple[str, ...], dicom: bool) -> dict:
    return {"generator": "synthdata phantoms", "version": PHANTOM_VERSION, "seed": seed,
            "count": count, "size": size, "labels": list(labels), "dicom": dicom,
            "clinical": False}


def _prepare(out: Path, identity: dict) -> None:
    marker = out / "phantoms.json"
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            raise OutputError(f"{out} holds a different phantom set ({marker}); choose another folder")
    elif out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not empty; phantoms go into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, identity)


def write_phantoms(out: str | Path, count: int, seed: int, size: int = 128, dicom: bool = False,
                   labels: Sequence[str] = LABELS, progress=None) -> Path:
    """Write `count` phantoms into `out` (see the module docstring); return metadata.csv's path."""
    if count < 1:
        raise SynthdataError(f"count must be at least 1, got {count}")
    labels = _check(seed, size, labels)
    out = Path(out)
    _prepare(out, _identity(seed, count, size, labels, dicom))
    (out / "images").mkdir(exist_ok=True)
    if dicom:
        from synthdata.phantoms.dicom import dicom_bytes, study_uid  # deferred: loads pydicom

        (out / "dicom").mkdir(exist_ok=True)
    rows = []
    for ph in iter_phantoms(seed, count, size, labels):
        attrs = dict(ph.attrs)
        name = f"phantom-{attrs['index']:06d}"
        attrs["path"] = f"images/{name}.png"
        _write(out / attrs["path"], png_bytes(ph.image))
        if dicom:
            attrs["study_uid"] = study_uid(seed, attrs["patient_number"], attrs["study"])
            attrs["dicom_path"] = f"dicom/{name}.dcm"
            _write(out / attrs["dicom_path"], dicom_bytes(ph.image, attrs, seed))
        rows.append(attrs)
        if progress is not None:
            progress()
    columns = list(COLUMNS) + (["dicom_path", "study_uid"] if dicom else [])
    write_text_atomic(out / "README.md", _readme(seed, count, size, labels, dicom, rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "metadata.csv", buf.getvalue())
    return out / "metadata.csv"


def _readme(seed: int, count: int, size: int, labels: tuple[str, ...], dicom: bool,
            rows: list[dict]) -> str:
    per_label = {x: sum(r["label"] == x for r in rows) for x in labels}
    patients = len({r["patient_id"] for r in rows})
    table = "\n".join(f"| {k} | {v} |" for k, v in per_label.items())
    cmd = f"synthdata phantoms OUT --count {count} --seed {seed} --size {size}"
    if tuple(labels) != LABELS:
        cmd += f" --labels {','.join(labels)}"
    return f"""# Procedural chest-radiograph phantoms (not clinical data)

These {count} images of {patients} phantom patients are **procedural phantoms** drawn by
`synthdata phantoms` ({PHANTOM_VERSION}): geometric shapes with noise that resemble a chest
radiograph. They contain no patient data, were not derived from any real image, and must
never be presented as clinical data. They stand in for real data in tests, benchmarks and
demos.

Made with: `{cmd}{' --dicom' if dicom else ''}` (byte-identical on every run).

| label | images |
|---|---|
{table}

`metadata.csv` columns: {', '.join(COLUMNS + (('dicom_path', 'study_uid') if dicom else ()))}.
`path` is relative to this folder. Several images share a `patient_id` (follow-up studies).
{"DICOM files (dicom/) are CR, MONOCHROME1 with a VOI window: apply window and inversion to display them." if dicom else ""}
"""
