"""What a phantom shows: patients, studies and findings drawn from (seed, index) alone.

A phantom *patient* has an anatomy (sex-like shape, age-like scale, thorax and heart size, rib
layout) and one finding that persists across its studies; each *study* (one image) has its
own view, positioning, exposure, noise and finding extent. Patients hold 1 to 3 studies
(follow-ups), so several images share a patient id, as in a real cohort.

Randomness: patient `p` draws from `default_rng([seed, 1, p])`, image `i` from
`default_rng([seed, 2, i])`; which patient image `i` belongs to, and each patient's finding
(labels balanced over blocks of patients), come from a counter-based hash. So one phantom is
a pure function of (seed, index, labels) and can be rendered alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthdata.plan.seeds import mix
from synthdata.spec.models import PHANTOM_FINDINGS

LABELS = PHANTOM_FINDINGS
SIZES = ("small", "moderate", "large")
_STREAM_STUDIES, _STREAM_LABEL = 11, 12
# studies per patient: 1, 2 or 3 with these probabilities
_STUDY_CUM = np.array([0.6, 0.85, 1.0])


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy and finding (fixed across the patient's studies)."""

    number: int
    label: str
    sex: str
    age: int
    thorax: float       # half-width of the thorax (image half-width = 1)
    lung_top: float
    lung_bottom: float
    ctr: float          # cardiothoracic ratio
    rib_spacing: float
    rib_curve: float
    side: str           # finding side: left | right | none
    lobe: str           # upper | middle | none
    spot: tuple[float, float]  # finding position jitter (nodule / consolidation)


@dataclass(frozen=True)
class Study:
    """Per-image acquisition and finding extent."""

    index: int
    study: int          # 0 for the first study of the patient, 1, 2 for follow-ups
    view: str           # PA | AP
    size: str           # small | moderate | large | none
    shift: tuple[float, float]
    rotation: float     # radians
    scale: float
    gain: float
    gamma: float
    noise: float
    texture_seed: int


def _uniform(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def patient_layout(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For images 0..count-1: the patient number of each and its study number within it."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    patients = np.arange(count, dtype=np.uint64)  # never more patients than images
    u = _uniform(mix(seed, _STREAM_STUDIES, patients))
    studies = 1 + np.searchsorted(_STUDY_CUM, u, side="right")
    starts = np.concatenate([[0], np.cumsum(studies)[:-1]])
    image = np.arange(count)
    patient = np.searchsorted(starts, image, side="right") - 1
    return patient.astype(np.int64), (image - starts[patient]).astype(np.int64)


def patient_label(seed: int, patient: int, labels: tuple[str, ...]) -> str:
    """The finding of a patient: labels are balanced over each block of len(labels) patients."""
    n = len(labels)
    block, slot = divmod(patient, n)
    keys = _uniform(mix(seed, _STREAM_LABEL, block, np.arange(n, dtype=np.uint64)))
    return labels[int(np.argsort(keys, kind="stable")[slot])]


def draw_patient(seed: int, number: int, labels: tuple[str, ...] = LABELS) -> Patient:
    """The anatomy and finding of phantom patient `number`."""
    rng = np.random.default_rng([seed, 1, number])
    label = patient_label(seed, number, labels)
    sex = "female" if rng.random() < 0.5 else "male"
    age = int(rng.integers(20, 91))
    thorax = (0.655 if sex == "female" else 0.685) + 0.0002 * (age - 55) + rng.normal(0, 0.005)
    lung_top = -0.70 + rng.normal(0, 0.008)
    lung_bottom = 0.40 + 0.0003 * (age - 55) + rng.normal(0, 0.008)
    ctr = 0.44 + rng.normal(0, 0.015)
    side = str(rng.choice(["left", "right"])) if label in ("effusion", "consolidation", "nodule") else "none"
    lobe = {"consolidation": "upper", "nodule": "middle"}.get(label, "none")
    spot = (float(rng.normal(0, 0.03)), float(rng.normal(0, 0.03)))
    return Patient(number=number, label=label, sex=sex, age=age, thorax=float(thorax),
                   lung_top=float(lung_top), lung_bottom=float(lung_bottom), ctr=float(ctr),
                   rib_spacing=float(0.118 + rng.normal(0, 0.005)),
                   rib_curve=float(0.30 + rng.normal(0, 0.03)), side=side, lobe=lobe, spot=spot)


def draw_study(seed: int, index: int, study: int, patient: Patient) -> Study:
    """Acquisition and finding extent of image `index` (study `study` of its patient)."""
    rng = np.random.default_rng([seed, 2, index])
    view = "AP" if rng.random() < 0.35 else "PA"
    size = "none" if patient.label == "normal" else str(rng.choice(SIZES))
    return Study(
        index=index, study=study, view=view, size=size,
        shift=(float(rng.normal(0, 0.006)), float(rng.normal(0, 0.006))),
        rotation=float(rng.normal(0, 0.008)), scale=float(1 + rng.normal(0, 0.007)),
        gain=float(rng.uniform(0.96, 1.04)), gamma=float(rng.uniform(0.95, 1.05)),
        noise=float(rng.uniform(0.012, 0.03)), texture_seed=int(rng.integers(0, 2**62)))


def finding_phrase(patient: Patient, study: Study) -> str:
    """Words for the finding, e.g. 'moderate right pleural effusion'."""
    label, side, size = patient.label, patient.side, study.size
    if label == "effusion":
        return f"{size} {side} pleural effusion"
    if label == "consolidation":
        return f"{size} {side} {patient.lobe} lobe consolidation"
    if label == "nodule":
        return f"{size} {side} {patient.lobe} lobe nodule"
    if label == "cardiomegaly":
        return f"{'mild' if size == 'small' else size} cardiomegaly"
    return "no acute findings"
