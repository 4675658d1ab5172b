"""`builtin:procedural`: a zero-cost generator that draws each plan row's phantom for its label.

For scale work: every stage but diffusion can be measured at 10^5-10^6 samples on a CPU. Each
request's image is the chest-radiograph phantom (`synthdata.phantoms`) of one patient whose
finding is the row's label, drawn from the row's seed alone (patient from
`default_rng([seed, 1, 0])`, study from `default_rng([seed, 2, 0])`), rendered at
max(height, width) and centre-cropped to height x width, as a grayscale uint8 image. Same seed
and label -> the same bytes; no weights, no network, a few ms per 64 px image on one core.

Labels must be phantom findings (`phantoms.LABELS`); the spec check says so before a run. Its
fingerprint is a constant and the renderer's version (`PHANTOM_VERSION`): bump that version
whenever the renderer's output changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthdata.errors import ModelError
from synthdata.generation.generators import dtype_name
from synthdata.generation.generators.base import ImageGenerator, SampleRequest
from synthdata.phantoms.params import LABELS, draw_patient, draw_study
from synthdata.phantoms.render import render
from synthdata.phantoms.writer import PHANTOM_VERSION

PROCEDURAL = "builtin:procedural"
FINGERPRINT_TAG = "synthdata-builtin-procedural/v1"
RENDERER_VERSION = PHANTOM_VERSION


def is_procedural(model: str) -> bool:
    """True when a generator.model names the procedural built-in."""
    return model == PROCEDURAL


def procedural_fingerprint() -> str:
    """The model fingerprint of builtin:procedural: sha256 of its tag and the renderer version."""
    return hashlib.sha256(f"{FINGERPRINT_TAG}\nrenderer\t{RENDERER_VERSION}\n".encode()).hexdigest()


def renderer_folder() -> Path:
    """Where the renderer's code lives (run.json's model folder for builtin:procedural)."""
    return Path(__file__).resolve().parents[1] / "phantoms"


def draw(label: str, seed: int, height: int, width: int) -> np.ndarray:
    """The phantom of `label` for `seed` as a height x width uint8 image."""
    if label not in LABELS:
        raise ModelError(f"builtin:procedural draws phantom findings only; got label {label!r} "
                         f"(known: {', '.join(LABELS)})")
    patient = draw_patient(int(seed), 0, (label,))
    study = draw_study(int(seed), 0, 0, patient)
    size = max(height, width)
    image = render(patient, study, size)
    top, left = (size - height) // 2, (size - width) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])


class ProceduralGenerator(ImageGenerator):
    """Draws phantoms instead of running a model; always on the CPU, nothing to load."""

    def __init__(self, cfg, device: str = "cpu", speed=None):
        self.cfg = cfg
        self.speed = speed

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, batch: Sequence[SampleRequest]) -> list[np.ndarray]:
        """One phantom per request, from its label and seed."""
        return [draw(r.label, r.seed, self.cfg.height, self.cfg.width) for r in batch]

    def describe(self) -> dict:
        """What ran: the renderer on the CPU (dtype as the spec resolves it on a CPU)."""
        return {"model": self.cfg.model, "revision": None, "scheduler": self.cfg.scheduler,
                "dtype": dtype_name(self.cfg.dtype, "cpu"), "device": "cpu",
                "speed": self.speed.changed() if self.speed is not None else {},
                "renderer": RENDERER_VERSION}
