"""The edits a copy of a real image goes through on its way out of a training pipeline.

Screening must catch a copy whatever happened to it between the real image and the synthetic
sample: another export convention or a light edit. These functions apply one edit each to a
uint8 image (gray H x W or RGB H x W x 3) and return uint8; `random_edit` draws one edit (or a
combination) with parameters from the ranges below. Calibration (`calibrate.py`) synthesizes
copies with them to set the threshold for a target recall; the benchmark
(`benchmarks/bench_memorization.py`) plants them.

- geometry: the 8 flips, rotations and transposes (`DIHEDRAL`; `flip_lr` is neurological vs
  radiological orientation), crops to 85-95% of each side and to 60-80% of the area at any
  position, shifts by 2-10%, rotations by 3-10 degrees with a zoom of 0.85-1.15, aspect
  changes of +-15%, slight perspective (corners moved by 2-5%), 2x down-up scaling, resizing
  to a square (aspect ratio not kept, as training pipelines do), and the image inside a larger
  canvas (a screenshot: a constant border, burned-in text in it and over a corner);
- intensity: inversion (MONOCHROME1 not inverted), gamma 0.7-1.4, re-rendering with other
  limits (a percentile stretch, a narrower window of the displayed range);
- degradation: JPEG quality 50-90, Gaussian blur sigma 0.5-1.5, noise (1-3 grey levels),
  small rotations (up to 3 degrees), brightness and contrast changes.
Calibration and the benchmark apply them to images at a generator's output size: a source
under 128 px is first upsampled to at least 256 px (`export`).
Rendering the raw values of a DICOM or NIfTI differently (no VOI window, min-max, percentile)
needs the raw values: `decoders.render` does that; here only the 8-bit approximations exist.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

DIHEDRAL = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose",
            "antitranspose")


def dihedral(img: np.ndarray, name: str) -> np.ndarray:
    """One of the 8 symmetries of the square applied to the first two axes."""
    ops: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "identity": lambda a: a,
        "rot90": lambda a: np.rot90(a, 1),
        "rot180": lambda a: np.rot90(a, 2),
        "rot270": lambda a: np.rot90(a, 3),
        "flip_lr": lambda a: a[:, ::-1],
        "flip_ud": lambda a: a[::-1],
        "transpose": lambda a: np.swapaxes(a, 0, 1),
        "antitranspose": lambda a: np.rot90(np.swapaxes(a, 0, 1), 2),
    }
    return np.ascontiguousarray(ops[name](np.asarray(img)))


def invert(img: np.ndarray) -> np.ndarray:
    """255 - img (a MONOCHROME1 image shown without inversion, a negative)."""
    return (255 - np.asarray(img, dtype=np.uint8)).astype(np.uint8)


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    """255 * (img / 255) ** g."""
    lut = np.rint(255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)
    return lut[np.asarray(img, dtype=np.uint8)]


def stretch(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi] (0..255 units) and stretch to 0..255: another window of the display."""
    arr = np.asarray(img, dtype=np.float32)
    if hi <= lo:
        return np.asarray(img, dtype=np.uint8)
    return np.rint(np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


def percentile_stretch(img: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Re-render between two percentiles of the image's values (a common export default)."""
    lo, hi = np.percentile(np.asarray(img), [low, high])
    return stretch(img, float(lo), float(hi))


def crop(img: np.ndarray, frac: float, fx: float = 0.5, fy: float = 0.5) -> np.ndarray:
    """Keep `frac` of each side; (fx, fy) in 0..1 place the window (0.5, 0.5: centred)."""
    h, w = np.asarray(img).shape[:2]
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    y0, x0 = round((h - ch) * fy), round((w - cw) * fx)
    return np.ascontiguousarray(np.asarray(img)[y0:y0 + ch, x0:x0 + cw])


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample to width x height (bilinear, antialiased)."""
    return np.asarray(Image.fromarray(np.asarray(img)).resize(
        (max(1, width), max(1, height)), Image.Resampling.BILINEAR))


def down_up(img: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Downscale by `factor` and back up to the original size."""
    h, w = np.asarray(img).shape[:2]
    small = resize(img, round(w / factor), round(h / factor))
    return resize(small, w, h)


def jpeg(img: np.ndarray, quality: int = 50) -> np.ndarray:
    """Encode as JPEG at `quality` and decode again."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img)).save(buf, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im).copy()


def blur(img: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` pixels (Pillow's radius is the sigma)."""
    return np.asarray(Image.fromarray(np.asarray(img)).filter(ImageFilter.GaussianBlur(sigma)))


def rotate(img: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    """Rotate about the centre by `degrees` (counter-clockwise) and zoom by `scale`, keeping
    the size (bilinear); what leaves the frame is lost, corners are filled with black."""
    arr = np.asarray(img)
    if scale == 1.0:
        return np.asarray(Image.fromarray(arr).rotate(degrees, resample=Image.Resampling.BILINEAR))
    h, w = arr.shape[:2]
    t = np.deg2rad(degrees)
    c, s = np.cos(t) / scale, np.sin(t) / scale
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # output (x, y) <- input (c (x - cx) - s (y - cy) + cx, s (x - cx) + c (y - cy) + cy)
    coeffs = (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)
    return np.asarray(Image.fromarray(arr).transform(
        (w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR))


def shift(img: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """Move the content by (fx * width, fy * height) pixels; the uncovered strip is black."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    dx, dy = int(round(fx * w)), int(round(fy * h))
    out = np.zeros_like(arr)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = arr[ys, xs]
    return out


def aspect(img: np.ndarray, factor: float) -> np.ndarray:
    """Stretch the width by `factor` (height kept): a changed aspect ratio."""
    h, w = np.asarray(img).shape[:2]
    return resize(img, max(1, round(w * factor)), h)


def perspective(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Each corner moved by up to `strength` of the size (a photo of a screen, a keystone)."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    dst = src + rng.uniform(-strength, strength, (4, 2)) * [w, h]
    # Coefficients mapping output (x, y) to input: solve the 8 x 8 system of the homography.
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    coeffs = np.linalg.solve(np.array(a), np.array(b))
    return np.asarray(Image.fromarray(arr).transform(
        (w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), resample=Image.Resampling.BILINEAR))


def screenshot(img: np.ndarray, rng: np.random.Generator, text: str = "PATIENT 0000 - 2024-01-01"
               ) -> np.ndarray:
    """The image inside a larger canvas, as a viewer screenshot: a constant border (1.15-1.6 x
    the image), the image anywhere inside, burned-in text in the border and over one corner."""
    from PIL import ImageDraw, ImageFont

    arr = np.asarray(img)
    h, w = arr.shape[:2]
    grow = rng.uniform(1.15, 1.6)
    cw, ch = int(round(w * grow)), int(round(h * rng.uniform(1.15, grow + 0.001)))
    x0, y0 = int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))
    level = int(rng.choice([0, 0, 20, 40, 128]))
    canvas = Image.new("RGB" if arr.ndim == 3 else "L", (cw, ch),
                       (level,) * 3 if arr.ndim == 3 else level)
    canvas.paste(Image.fromarray(arr), (x0, y0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, min(cw, ch) // 24))
    ink = (255,) * 3 if arr.ndim == 3 else 255
    draw.text((4, 2), text, fill=ink, font=font)
    draw.text((x0 + 4, y0 + h - max(8, min(cw, ch) // 24) - 4), "R  W:400 L:40", fill=ink,
              font=font)
    return np.asarray(canvas)


def linear(img: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """gain * img + offset, clipped (brightness and contrast)."""
    arr = np.asarray(img, dtype=np.float32) * gain + offset
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def export(img: np.ndarray, min_side: int = 128, target: int = 256) -> np.ndarray:
    """A generator's output size: an image under `min_side` px upsampled to >= `target` px."""
    h, w = np.asarray(img).shape[:2]
    if min(h, w) >= min_side:
        return np.asarray(img)
    k = int(np.ceil(target / min(h, w)))
    return resize(img, w * k, h * k)


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of `sigma` grey levels."""
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, np.asarray(img).shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


# Single edits with parameters drawn from the ranges screening must cover.
EditFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]
SINGLE: dict[str, EditFn] = {
    **{d: (lambda a, r, d=d: dihedral(a, d)) for d in DIHEDRAL[1:]},
    "invert": lambda a, r: invert(a),
    "gamma": lambda a, r: gamma(a, float(np.exp(r.uniform(np.log(0.7), np.log(1.4))))),
    "percentile": lambda a, r: percentile_stretch(a, r.uniform(0.0, 2.0), r.uniform(98.0, 100.0)),
    "window": lambda a, r: stretch(a, r.uniform(0, 40), r.uniform(215, 255)),
    "crop": lambda a, r: crop(a, r.uniform(0.85, 0.95), r.uniform(0, 1), r.uniform(0, 1)),
    "down_up": lambda a, r: down_up(a, 2.0),
    "square": lambda a, r: resize(a, *(2 * [max(np.asarray(a).shape[:2])])),
    "jpeg": lambda a, r: jpeg(a, int(r.integers(50, 91))),
    "blur": lambda a, r: blur(a, r.uniform(0.5, 1.5)),
    "noise": lambda a, r: noise(a, r.uniform(1.0, 3.0), r),
    "rotate": lambda a, r: rotate(a, r.choice([-1, 1]) * r.uniform(0.5, 3.0)),
    "rotate_scale": lambda a, r: rotate(a, r.choice([-1, 1]) * r.uniform(3.0, 10.0),
                                        r.uniform(0.85, 1.15)),
    "shift": lambda a, r: shift(a, r.choice([-1, 1]) * r.uniform(0.02, 0.1),
                                r.choice([-1, 1]) * r.uniform(0.0, 0.1)),
    "crop60": lambda a, r: crop(a, float(np.sqrt(r.uniform(0.6, 0.8))), r.uniform(0, 1),
                                r.uniform(0, 1)),
    "aspect": lambda a, r: aspect(a, float(np.exp(r.uniform(np.log(0.85), np.log(1.15))))),
    "perspective": lambda a, r: perspective(a, r.uniform(0.02, 0.05), r),
    "screenshot": lambda a, r: screenshot(a, r),
    "brightness": lambda a, r: linear(a, r.uniform(0.8, 1.2), r.uniform(-20, 20)),
}
# The order a combination applies its edits in: rendering, then geometry, then degradation.
ORDER = ["percentile", "window", "invert", "gamma", "brightness", *DIHEDRAL[1:], "rotate",
         "rotate_scale", "shift", "crop", "crop60", "aspect", "square", "perspective",
         "screenshot", "down_up", "blur", "noise", "jpeg"]


def apply(img: np.ndarray, names: list[str], rng: np.random.Generator) -> np.ndarray:
    """Apply the named edits (from `SINGLE`) in the canonical order."""
    out = np.asarray(img)
    for name in sorted(names, key=ORDER.index):
        out = SINGLE[name](out, rng)
    return out


# Edits that move pixels (beyond the symmetries): a combination holds at most two of them,
# and at most one crop (two would keep less than the 60% of the area screening covers).
GEOMETRIC = ("rotate", "rotate_scale", "shift", "crop", "crop60", "aspect", "square",
             "perspective", "screenshot")
CROPS = ("crop", "crop60")


def random_edit(rng: np.random.Generator, max_edits: int = 3) -> list[str]:
    """1..max_edits distinct edits: at most one of the dihedral group, two of `GEOMETRIC`
    and one of `CROPS`."""
    n = int(rng.integers(1, max_edits + 1))
    names: list[str] = []
    pool = list(SINGLE)
    while len(names) < n:
        name = pool[int(rng.integers(len(pool)))]
        if name in names or (name in DIHEDRAL and any(x in DIHEDRAL for x in names)) or (
                name in GEOMETRIC and sum(x in GEOMETRIC for x in names) >= 2) or (
                name in CROPS and any(x in CROPS for x in names)):
            continue
        names.append(name)
    return sorted(names, key=ORDER.index)
