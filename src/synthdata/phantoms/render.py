"""Rendering a chest-radiograph-like phantom with numpy: a density map, then exposure and noise.

Shapes are evaluated on a normalised grid (image half-width = 1, y downwards) after the
study's shift, rotation and scale, so a phantom looks the same at any pixel size. The image
follows the radiograph convention: patient's right on the image left, dense (bone, heart,
fluid) bright, air dark. Everything is vectorised; one 128 px phantom costs a few
milliseconds.
"""

from __future__ import annotations

import numpy as np

from synthdata.phantoms.params import Patient, Study

_CARDIO_CTR = {"small": 0.60, "moderate": 0.65, "large": 0.70}
_EFFUSION_HEIGHT = {"small": 0.52, "moderate": 0.60, "large": 0.68}
_NODULE_RADIUS = {"small": 0.12, "moderate": 0.135, "large": 0.15}
_CONSOLIDATION_SPREAD = {"small": 0.15, "moderate": 0.17, "large": 0.19}


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (d < 0), 0 outside, a smooth ramp about `edge` wide."""
    return 0.5 - 0.5 * np.tanh(d / edge)


def _smooth_noise(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (FFT), scaled to unit standard deviation."""
    white = rng.standard_normal((n, n))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    transfer = np.exp(-2 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=(n, n))
    return out / (out.std() + 1e-12)


def _grid(size: int, study: Study) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates of every pixel centre after the study's positioning."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c)
    x, y = x - study.shift[0], y - study.shift[1]
    cos, sin = np.cos(study.rotation), np.sin(study.rotation)
    return (cos * x + sin * y) / study.scale, (-sin * x + cos * y) / study.scale


def heart_ratio(patient: Patient, study: Study) -> float:
    """Cardiothoracic ratio of this study (cardiomegaly sets it by the study's size)."""
    if patient.label == "cardiomegaly":
        return _CARDIO_CTR[study.size] + (patient.ctr - 0.44) * 0.5
    return patient.ctr


class _Lung:
    """One lung: horizontal extent narrowing to the apex, a diaphragm dome below."""

    def __init__(self, x, y, patient: Patient, sign: int):
        w = patient.thorax
        self.cx = sign * w * 0.50
        self.half = w * (0.43 if sign < 0 else 0.40)
        self.top = patient.lung_top
        self.bottom = patient.lung_bottom - (0.04 if sign < 0 else 0.0)  # liver lifts the right
        t = np.clip((y - self.top) / (self.bottom - self.top), 0, 1)
        t = np.clip(t * 1.35, 0, 1)
        self.width = self.half * (0.2 + 0.8 * np.sqrt(t * (2 - t)))
        self.dx = x - self.cx
        dome = self.bottom - 0.10 * np.clip(1 - (self.dx / self.half) ** 2, 0, 1)
        apex = self.top + 0.10 * (self.dx / self.half) ** 2
        self.dist = np.maximum.reduce([np.abs(self.dx) - self.width, apex - y, y - dome])
        self.x, self.y = x, y


def render(patient: Patient, study: Study, size: int) -> np.ndarray:
    """The phantom as a size x size uint8 image."""
    rng = np.random.default_rng(study.texture_seed)
    x, y = _grid(size, study)
    edge = 1.3 * 2 / size
    w = patient.thorax
    ap = study.view == "AP"

    # body: torso below sloping shoulders, and the neck
    shoulder = -0.78 + 0.28 * (np.abs(x) / (w + 0.2)) ** 2
    torso = np.maximum(np.abs(x) - (w + 0.17), shoulder - y)
    neck = np.abs(x) - 0.17
    body = _soft(np.minimum(torso, neck), edge * 2)
    density = 0.50 * body

    lungs = [_Lung(x, y, patient, -1), _Lung(x, y, patient, +1)]
    air = sum(_soft(lung.dist, edge) for lung in lungs)

    # heart (to the patient's left), mediastinum, aortic knob
    ratio = heart_ratio(patient, study) * (1.08 if ap else 1.0)
    hx, hy, ha = 0.15 * w, 0.20 + 0.3 * (patient.lung_bottom - 0.4), ratio * w
    hb = 0.22 + 1.2 * max(ratio - 0.5, 0)  # an enlarged heart grows globular, upwards
    hy = hy - 0.6 * (hb - 0.22)
    heart = _soft(np.sqrt(((x - hx) / ha) ** 2 + ((y - hy) / hb) ** 2) - 1, edge / hb * 1.5)
    medi = _soft(np.maximum(np.abs(x - 0.02) - 0.10, y - hy), edge)
    knob = _soft(np.hypot(x - 0.11, y + 0.30) - 0.07, edge)
    solid = np.clip(heart + medi + knob, 0, 1)
    air = air * (1 - solid)

    # vessels and lung texture
    texture = _smooth_noise(rng, size, sigma_px=size / 40)
    hila = sum(np.exp(-(((x - s * 0.17) / 0.12) ** 2 + (y / 0.16) ** 2)) for s in (-1, 1))
    density = density - 0.36 * air + air * (0.025 * texture + 0.10 * hila)
    density = density + 0.07 * solid * body
    finding = _finding(patient, study, lungs, air, rng, size, edge)
    clear = air * (1 - np.clip(finding / 0.36, 0, 1))  # aerated lung: ribs show through it

    # bones: spine, ribs, clavicles, scapulae (AP)
    bone_density = 0.15 - 0.0009 * (patient.age - 50)
    spine = 0.6 * _soft(np.abs(x) - 0.065, edge) * (0.55 + 0.45 * np.cos(np.pi * y / 0.045) ** 2)
    t = np.abs(x) / w
    phase = (y - (0.10 * t - patient.rib_curve * t**2) * (1 if not ap else 0.7)) / patient.rib_spacing
    ribs = np.cos(np.pi * phase) ** 12
    ribs = ribs * _soft(np.abs(x) - (w + 0.06), edge) * _soft(y - patient.lung_bottom, 0.05) \
        * _soft(patient.lung_top - 0.06 - y, 0.04) * (0.3 + 0.7 * clear)
    clav = 0
    for s in (-1, 1):
        lift = -0.06 if ap else 0.0
        x0, y0, x1, y1 = s * 0.08, -0.60 + lift, s * (w + 0.08), -0.74 + lift - (0.0 if ap else 0.05)
        px, py = x - x0, y - y0
        dx, dy = x1 - x0, y1 - y0
        tt = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0, 1)
        clav = clav + _soft(np.hypot(px - tt * dx, py - tt * dy) - 0.028, edge)
    bones = spine + ribs + clav
    if ap:
        scap = sum(_soft(np.hypot((x - s * (w - 0.02)) / 0.11, (y + 0.32) / 0.28) - 1, 0.08)
                   for s in (-1, 1))
        density = density + 0.06 * scap
    density = density + bone_density * bones * body

    if patient.sex == "female":
        breasts = sum(_soft(np.hypot((x - s * w * 0.62) / 0.32, (y - 0.36) / 0.2) - 1, 0.12)
                      for s in (-1, 1))
        density = density + 0.06 * breasts * body

    density = density + finding

    # exposure, heel effect, quantum and electronic noise
    img = np.clip(density, 0, None) ** study.gamma * study.gain * (1 + 0.04 * y)
    img = img + study.noise * rng.standard_normal((size, size)) * (0.5 + img)
    return np.clip(np.rint(img * 255 * 1.15), 0, 255).astype(np.uint8)


def _finding(patient: Patient, study: Study, lungs: list[_Lung], air: np.ndarray,
             rng: np.random.Generator, size: int, edge: float) -> np.ndarray:
    """Added density of the patient's finding (zero for normal and cardiomegaly)."""
    if patient.label not in ("effusion", "consolidation", "nodule"):
        return np.zeros((size, size))
    lung = lungs[0] if patient.side == "right" else lungs[1]  # patient's right = image left
    x, y = lung.x, lung.y
    inside = _soft(lung.dist, edge) * air
    if patient.label == "effusion":
        height = _EFFUSION_HEIGHT[study.size]
        lateral = np.abs(lung.dx - np.sign(lung.cx) * lung.half) / (2 * lung.half)
        level = lung.bottom - height * (0.5 + 0.7 * (1 - lateral) ** 2)
        return 0.40 * _soft(level - y, edge) * inside
    zone_y = lung.top + (0.33 if patient.lobe == "upper" else 0.60) * (lung.bottom - lung.top)
    cx = lung.cx + np.sign(lung.cx) * 0.06 + patient.spot[0]
    cy = zone_y + patient.spot[1]
    if patient.label == "nodule":
        r = _NODULE_RADIUS[study.size]
        return 0.48 * _soft(np.hypot(x - cx, y - cy) - r, edge)
    spread = _CONSOLIDATION_SPREAD[study.size]
    blob = np.zeros_like(x)
    for _ in range(5):
        ox, oy = rng.normal(0, spread * 0.5, size=2)
        blob = blob + np.exp(-(((x - cx - ox) / spread) ** 2 + ((y - cy - oy) / (spread * 0.8)) ** 2))
    patch = _smooth_noise(rng, size, sigma_px=size / 30)
    opacity = np.clip(blob * (0.75 + 0.35 * patch), 0, 1.2)
    return 0.38 * opacity * inside
