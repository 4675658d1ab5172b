"""Registration: the geometric transform that lays a sample onto a candidate real image.

`align.py`'s exhaustive search (8 symmetries x crops of 75-100% x every offset) finds, for
each candidate and each symmetry, the best placement of the sample that keeps its shape. A
copy that was also shifted, rotated, zoomed, re-framed, stretched or photographed at a slant
scores low there, but those placements are close to the truth: this module starts from them
(and from the whole sample laid over the whole image, for shifts) and refines a homography
(8 parameters: translation, rotation, zoom, aspect, shear, slight perspective), with a gain and
an offset for the intensities (inversion is a negative gain), by Gauss-Newton on a pyramid of
16 x 16 and 32 x 32 thumbnails (Lucas-Kanade; Baker & Matthews 2004), keeping the most
promising start points of each candidate as it goes (`SCHEDULE`). The best refined
placement is scored at 64 x 64 by the normalised correlation of band-passed images **on the
registered overlap only**: both images are filtered inside the overlap (normalised
convolution), so a border, a canvas, burned-in text or the black corners of a rotation outside
it change nothing. An overlap covering less than `MIN_OVERLAP` of the real image's content
does not count (a crop keeps at least 60% of it; content: the pixels that are not part of a
flat background, so a copy pasted on a canvas of its own background colour still counts).

Everything is batched over candidates and starting points (numpy; deterministic, one thread).
Coordinates: (row, col) of pixel centres; a homography maps the real image's 64 x 64
thumbnail onto the sample's view thumbnail (`align.QUERY_SIZE`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from PIL import Image
from scipy import ndimage

from synthdata.screening.embedders import D4, d4, d4_all
from synthdata.screening.thumbnails import BAND, band, gaussian_kernel, thumbnail

SIZE = 64
# The schedule: (thumbnail side, Gauss-Newton iterations, start points kept per candidate
# afterwards). Every start point gets a few coarse iterations; the best go on.
SCHEDULE = ((16, 2, 2), (16, 2, 1), (32, 2, 1))
MIN_OVERLAP = 0.5             # share of the real image's content the sample must cover
FLAT = 2.0                    # grey levels: a pixel whose 3 x 3 neighbourhood spans less is flat
MAX_ZOOM = 8.0                # a placement zooming more than this (either way) is rejected
SIGMAS = (0.0, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # pre-blurs of a view before sampling (antialias)


@lru_cache(maxsize=16)
def _zero_blur(n: int, sigma: float) -> np.ndarray:
    """n x n Gaussian blur matrix with zero outside the image (for normalised convolution)."""
    radius, k = gaussian_kernel(sigma)
    m = np.zeros((n, n), dtype=np.float32)
    idx = np.arange(n)
    for t, w in zip(range(-radius, radius + 1), k):
        j = idx + t
        ok = (j >= 0) & (j < n)
        m[idx[ok], j[ok]] += w
    return m


def masked_band(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (`BAND`) of images (..., n, n) computed inside `mask` only."""
    n = x.shape[-1]
    xm = x * mask
    out = np.zeros(np.broadcast_shapes(x.shape, mask.shape), dtype=np.float32)
    for sigma, sign in ((BAND[0], 1.0), (BAND[1], -1.0)):
        b = _zero_blur(n, sigma)
        num = b @ xm @ b.T
        den = b @ mask @ b.T
        out += sign * num / np.maximum(den, 1e-3)
    return np.where(mask > 0, out, 0.0).astype(np.float32)


@lru_cache(maxsize=64)
def _d4_affine(g: str, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, b): index u of the g-transformed h x h array -> index A u + b of the original."""
    r, c = np.mgrid[0:h, 0:h]
    rows, cols = d4(r, g), d4(c, g)
    b = np.array([rows[0, 0], cols[0, 0]], dtype=np.float64)
    a = np.array([[rows[1, 0] - b[0], rows[0, 1] - b[0]],
                  [cols[1, 0] - b[1], cols[0, 1] - b[1]]], dtype=np.float64)
    return a, b


def placement(g: str, h: int, oy: int, ox: int, qsize: int) -> np.ndarray:
    """Homography of an `align` placement: the sample, turned by g and resized to h x h,
    over the real thumbnail at offset (oy, ox)."""
    a, b = _d4_affine(g, h)
    k = qsize / h
    out = np.eye(3)
    out[:2, :2] = k * a
    out[:2, 2] = k * (b - a @ np.array([oy, ox])) + 0.5 * k - 0.5
    return out


def shifts(view: np.ndarray, refs: np.ndarray, top: int, level: int = 32, reach: float = 0.25
           ) -> tuple[np.ndarray, np.ndarray]:
    """The whole view laid over each real thumbnail, in each D4 orientation, by phase
    correlation at `level` (shifts up to `reach` of the side): the `top` orientations with the
    strongest peaks, (C, top) indices into D4, and their offsets (oy, ox) in thumbnail
    pixels, (C, top, 2) (negative for a copy shifted up or left)."""
    tmpl = d4_all(band(thumbnail(view, level)))
    real = band(np.stack([thumbnail(r, level) for r in refs]))
    pad = 2 * level
    ft = np.conj(sfft.rfft2(tmpl.astype(np.float32), s=(pad, pad)))
    x = sfft.rfft2(real.astype(np.float32), s=(pad, pad))[:, None] * ft[None]
    corr = np.abs(sfft.irfft2(x / (np.sqrt(np.abs(x)) + 1e-6), s=(pad, pad)))
    r = int(reach * level)
    d = np.r_[0:r + 1, -r:0]
    corr = corr[:, :, d][:, :, :, d]                      # (C, 8, 2r+1, 2r+1) of shifts d
    flat = corr.reshape(len(refs), len(D4), -1)
    peak = flat.argmax(axis=2)
    strength = np.take_along_axis(flat, peak[..., None], 2)[..., 0]
    order = np.argsort(-strength, axis=1, kind="stable")[:, :top]
    iy, ix = np.divmod(np.take_along_axis(peak, order, 1), len(d))
    return order, np.stack([d[iy], d[ix]], -1) * (SIZE // level)


def box_placement(g: str, real: tuple[int, int, int, int], sample: tuple[int, int, int, int]
                  ) -> np.ndarray:
    """Homography laying the real thumbnail's content box onto the sample's, turned by g
    (boxes: top, bottom, left, right in pixels of each thumbnail)."""
    a, b = _d4_affine(g, 2)
    r0, r1, c0, c1 = (float(x) for x in real)
    s0, s1, t0, t1 = (float(x) for x in sample)
    to_unit = np.array([[1 / max(r1 - r0 - 1, 1), 0, -r0 / max(r1 - r0 - 1, 1)],
                        [0, 1 / max(c1 - c0 - 1, 1), -c0 / max(c1 - c0 - 1, 1)], [0, 0, 1]])
    turn = np.eye(3)
    turn[:2, :2], turn[:2, 2] = a, b
    to_sample = np.array([[s1 - s0 - 1, 0, s0], [0, t1 - t0 - 1, t0], [0, 0, 1]])
    return to_sample @ turn @ to_unit


@lru_cache(maxsize=8)
def _grid(level: int) -> tuple[np.ndarray, ...]:
    """Pixel centres of a level in thumbnail coordinates, and normalised (-1..1) ones."""
    r, c = np.mgrid[0:level, 0:level].astype(np.float32)
    f = SIZE / level
    y, x = (r + 0.5) * f - 0.5, (c + 0.5) * f - 0.5
    half, centre = SIZE / 2, (SIZE - 1) / 2
    return y.ravel(), x.ravel(), ((y - centre) / half).ravel(), ((x - centre) / half).ravel()


_NORM = np.array([[SIZE / 2, 0, (SIZE - 1) / 2], [0, SIZE / 2, (SIZE - 1) / 2], [0, 0, 1.0]])
_NORM_INV = np.linalg.inv(_NORM)


def _zoom(hs: np.ndarray) -> np.ndarray:
    """Sample pixels per thumbnail pixel of each homography (its linear part's scale)."""
    lin = hs[:, :2, :2] / hs[:, 2, 2, None, None]
    return np.sqrt(np.abs(np.linalg.det(lin)))


class Pyramid:
    """A sample's view thumbnails, blurred as each zoom needs (cached), for gathering."""

    def __init__(self, views: np.ndarray):
        self.views = np.asarray(views, dtype=np.float32)   # (V, q, q)
        self.size = self.views.shape[-1]
        self._images: list[np.ndarray] = []
        self._index: dict[tuple[int, float], int] = {}
        self._flat: np.ndarray | None = None

    def images(self, views: np.ndarray, zoom: np.ndarray) -> np.ndarray:
        """Index of each view blurred for sampling at `zoom` sample pixels per target pixel
        (Gaussian sigma about zoom / 2, rounded down to one of `SIGMAS`)."""
        level = np.clip(np.searchsorted(SIGMAS, 0.5 * zoom, side="right") - 1, 0, None)
        keys = views.astype(np.int64) * len(SIGMAS) + level
        out = np.zeros(len(keys), dtype=np.int64)
        for key in np.unique(keys):
            view, sigma = divmod(int(key), len(SIGMAS))
            if (view, sigma) not in self._index:
                img = self.views[view]
                self._images.append(ndimage.gaussian_filter(img, SIGMAS[sigma]) if sigma
                                    else img)
                self._index[(view, sigma)] = len(self._images) - 1
                self._flat = None
            out[keys == key] = self._index[(view, sigma)]
        return out

    def sample(self, hs: np.ndarray, views: np.ndarray, level: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear samples (n, level*level) of each view under each homography, and which
        points fall inside the sample."""
        y, x, _, _ = _grid(level)
        zoom = _zoom(hs) * SIZE / level
        hs = hs.astype(np.float32)
        w = hs[:, 2, 0, None] * y + hs[:, 2, 1, None] * x + hs[:, 2, 2, None]
        w = np.where(np.abs(w) > 1e-6, w, np.float32(1e-6))
        qy = (hs[:, 0, 0, None] * y + hs[:, 0, 1, None] * x + hs[:, 0, 2, None]) / w
        qx = (hs[:, 1, 0, None] * y + hs[:, 1, 1, None] * x + hs[:, 1, 2, None]) / w
        which = self.images(views, zoom)
        if self._flat is None:
            self._flat = np.concatenate([im.ravel() for im in self._images])
        flat = self._flat
        n = self.size
        inside = (qy >= 0) & (qy <= n - 1) & (qx >= 0) & (qx <= n - 1) & (w > 0)
        qy, qx = np.clip(qy, 0, n - 1.001), np.clip(qx, 0, n - 1.001)
        y0, x0 = qy.astype(np.int64), qx.astype(np.int64)
        fy, fx = qy - y0, qx - x0
        i = which[:, None] * n * n + y0 * n + x0
        out = (flat[i] * (1 - fy) * (1 - fx) + flat[i + n] * fy * (1 - fx)
               + flat[i + 1] * (1 - fy) * fx + flat[i + n + 1] * fy * fx)
        return out, inside


def _content(refs: np.ndarray, level: int) -> np.ndarray:
    """Weights (n, level*level) of the real thumbnails' content pixels, summing to 1 per
    image: pixels not in a flat region (uniform weights when nearly everything is flat)."""
    x = refs.astype(np.float32)
    span = ndimage.maximum_filter(x, size=(1, 3, 3)) - ndimage.minimum_filter(x, size=(1, 3, 3))
    busy = span > FLAT
    if level != SIZE:
        f = SIZE // level
        busy = busy.reshape(len(x), level, f, level, f).any(axis=(2, 4))
    w = busy.reshape(len(x), -1).astype(np.float32)
    w = np.where(w.mean(1, keepdims=True) < 0.05, 1.0, w)
    return w / w.sum(1, keepdims=True)


def _level(refs: np.ndarray, level: int) -> np.ndarray:
    """Reference thumbnails (n, SIZE, SIZE) resized to level x level, flattened."""
    if level == SIZE:
        return refs.reshape(len(refs), -1).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(r).resize((level, level),
                                                          Image.Resampling.BILINEAR))
                     for r in refs.astype(np.float32)]).reshape(len(refs), -1)


_LEVELS: OrderedDict = OrderedDict()
LEVELS_KEPT = 50_000  # real thumbnails whose pyramid levels stay cached in the process


def _levels(refs: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(`_level`, `_content`) of real thumbnails, cached per thumbnail (they recur)."""
    keys = [(level, hashlib.blake2b(r.tobytes(), digest_size=16).digest()) for r in refs]
    todo = [i for i, k in enumerate(keys) if k not in _LEVELS]
    if todo:
        fresh = refs[todo]
        for i, img, w in zip(todo, _level(fresh, level), _content(fresh, level)):
            _LEVELS[keys[i]] = (img, w)
            if len(_LEVELS) > LEVELS_KEPT:
                _LEVELS.popitem(last=False)
    pairs = [_LEVELS[k] for k in keys]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _inner(inside: np.ndarray, level: int) -> np.ndarray:
    """Points inside the sample whose 4 neighbours are inside too (gradients are defined)."""
    m = inside.reshape(-1, level, level)
    out = np.zeros_like(m)
    out[:, 1:-1, 1:-1] = (m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1]
                          & m[:, 1:-1, :-2] & m[:, 1:-1, 2:])
    return out.reshape(len(m), -1)


def _ncc(t: np.ndarray, i: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Masked statistics: (|ncc|, gain, offset) fitting t ~ gain * i + offset."""
    cnt = np.maximum(m.sum(1), 1.0)
    tm, im = (t * m).sum(1) / cnt, (i * m).sum(1) / cnt
    tc, ic = (t - tm[:, None]) * m, (i - im[:, None]) * m
    cov, vi, vt = (tc * ic).sum(1), (ic * ic).sum(1), (tc * tc).sum(1)
    ncc = np.abs(cov) / np.sqrt(np.maximum(vi * vt, 1e-12))
    gain = cov / np.maximum(vi, 1e-9)
    return ncc, gain, tm - gain * im


def _step(hs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Compose each homography with the small update d (normalised coordinates)."""
    n = len(hs)
    step = np.zeros((n, 3, 3))
    step[:, 0] = np.stack([1 + d[:, 0], d[:, 1], d[:, 2]], 1)
    step[:, 1] = np.stack([d[:, 3], 1 + d[:, 4], d[:, 5]], 1)
    step[:, 2] = np.stack([d[:, 6], d[:, 7], np.ones(n)], 1)
    out = hs @ _NORM @ step @ _NORM_INV
    return out / np.where(np.abs(out[:, 2, 2]) > 1e-12, out[:, 2, 2], 1e-12)[:, None, None]


def refine(pyr: Pyramid, levels: dict, which: np.ndarray, hs: np.ndarray,
           views: np.ndarray, level: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt refinement of homographies (n, 3, 3) at one pyramid level.

    Start point j is compared with real thumbnail `which[j]`: `levels[level]` holds every
    thumbnail at this level and its content weights (`_level`, `_content`). A step that
    lowers a start's correlation is taken back and the damping raised. Returns each start's
    best homography and its |ncc| at this level (0 when the overlap covers under
    MIN_OVERLAP of the content or the placement degenerates).
    """
    images, weights = levels[level]
    t, content = images[which], weights[which]
    _, _, u, v = _grid(level)
    hs = np.array(hs, dtype=np.float64)
    n = len(hs)
    scale = level / 2  # d/du of a level image = d/dpixel * level / 2
    eye = np.eye(10)[None]
    best_h, best = hs.copy(), np.full(n, -1.0)
    lam = np.full(n, 1e-3)
    normal = np.zeros((n, 10, 10))
    rhs = np.zeros((n, 10))
    for step in range(iters + 1):
        vals, inside = pyr.sample(hs, views, level)
        m = _inner(inside, level).astype(np.float32)
        ncc, gain, offset = _ncc(t, vals, m)
        zoom = _zoom(hs)
        bad = ((content * inside).sum(1) < MIN_OVERLAP) | (zoom > MAX_ZOOM) | (
            zoom < 1 / MAX_ZOOM) | ~np.isfinite(ncc)
        ncc = np.where(bad, 0.0, ncc)
        better = ncc > best
        best_h[better], best[better] = hs[better], ncc[better]
        lam = np.where(better, np.maximum(lam / 3, 1e-4), np.minimum(lam * 10, 1e3))
        if step == iters:
            break
        img = vals.reshape(n, level, level)
        gy, gx = np.zeros_like(img), np.zeros_like(img)
        gy[:, 1:-1] = (img[:, 2:] - img[:, :-2]) / 2
        gx[:, :, 1:-1] = (img[:, :, 2:] - img[:, :, :-2]) / 2
        gu = gain[:, None] * gy.reshape(n, -1) * scale * m
        gv = gain[:, None] * gx.reshape(n, -1) * scale * m
        jac = np.empty((n, len(u), 10), dtype=np.float32)
        jac[..., 0], jac[..., 1], jac[..., 2] = gu * u, gu * v, gu
        jac[..., 3], jac[..., 4], jac[..., 5] = gv * u, gv * v, gv
        jac[..., 6] = -u * (gu * u + gv * v)
        jac[..., 7] = -v * (gu * u + gv * v)
        jac[..., 8], jac[..., 9] = vals * m, m
        err = (t - gain[:, None] * vals - offset[:, None]) * m
        jt = jac.transpose(0, 2, 1)
        # The normal equations at the best placement so far (a worse step is taken back and
        # solved again with more damping).
        normal[better] = (jt @ jac).astype(np.float64)[better]
        rhs[better] = (jt @ err[..., None]).astype(np.float64)[better, :, 0]
        damped = normal + lam[:, None, None] * normal * eye + 1e-6 * eye
        d = np.linalg.solve(damped, rhs[..., None])[..., 0]
        hs = _step(best_h, np.where((best > 0)[:, None], d, 0.0))
    return best_h, np.maximum(best, 0.0)


def overlap_scores(pyr: Pyramid, renderings: np.ndarray, counts: np.ndarray, hs: np.ndarray,
                   views: np.ndarray) -> np.ndarray:
    """Band-passed |ncc| on the registered overlap, best over each candidate's renderings.

    `renderings`: (C, R, SIZE, SIZE) real thumbnails, `counts`: how many are present.
    """
    vals, inside = pyr.sample(hs, views, SIZE)
    c = len(hs)
    mask = inside.reshape(c, SIZE, SIZE)
    ok = (_content(renderings[:, 0], SIZE) * inside).sum(1) >= MIN_OVERLAP
    fm = mask.astype(np.float32)
    sample = masked_band(vals.reshape(c, SIZE, SIZE).astype(np.float32), fm)
    real = masked_band(np.asarray(renderings, dtype=np.float32), fm[:, None])
    inner = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))
    best = np.zeros(c)
    for r in range(renderings.shape[1]):
        ncc, _, _ = _ncc(real[:, r].reshape(c, -1), sample.reshape(c, -1),
                         inner.reshape(c, -1).astype(np.float32))
        best = np.where(r < counts, np.maximum(best, ncc), best)
    return np.where(ok, np.clip(best, 0.0, 1.0), 0.0)


def register(views: np.ndarray, renderings: np.ndarray, counts: np.ndarray,
             starts: list[list[tuple[int, int, np.ndarray]]]) -> np.ndarray:
    """Registered overlap score of one sample against each candidate: (C,) in [0, 1].

    `views`: the sample's view thumbnails (V, q, q); `renderings`: (C, R, SIZE, SIZE) uint8;
    `starts[c]`: (view, rendering, homography) starting points for candidate c.
    """
    c = len(starts)
    if c == 0:
        return np.zeros(0, dtype=np.float32)
    pyr = Pyramid(views)
    owner = np.array([i for i, s in enumerate(starts) for _ in s], dtype=np.int64)
    view = np.array([v for s in starts for v, _, _ in s], dtype=np.int64)
    rendering = np.array([r for s in starts for _, r, _ in s], dtype=np.int64)
    used, which = np.unique(owner * renderings.shape[1] + rendering, return_inverse=True)
    refs = renderings.reshape(-1, SIZE, SIZE)[used]
    levels = {level: _levels(refs, level) for level in sorted({lv for lv, _, _ in SCHEDULE})}
    hs = np.stack([h for s in starts for _, _, h in s])
    for level, iters, keep_n in SCHEDULE:
        hs, ncc = refine(pyr, levels, which, hs, view, level, iters)
        order = np.lexsort((-ncc, owner))                 # by candidate, best first
        rank = np.arange(len(order)) - np.searchsorted(owner[order], owner[order])
        keep = np.sort(order[rank < keep_n])
        hs, ncc, owner, view, which = hs[keep], ncc[keep], owner[keep], view[keep], which[keep]
    best = np.array([np.flatnonzero(owner == i)[int(np.argmax(ncc[owner == i]))]
                     for i in range(c)])
    return overlap_scores(pyr, renderings, counts, hs[best], view[best]).astype(np.float32)
