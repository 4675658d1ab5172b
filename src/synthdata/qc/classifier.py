"""Classifier checks: a local image classifier predicts an attribute; compare with the request.

As RoentGen-v2 checks sex, race and age (within 16 years) of generated chest X-rays, with the
difference that a failure here is acted upon (regeneration, top-up) instead of only logged.

A classifier folder holds a model and `classifier.json` naming its outputs:

    {"format": "torchscript",            # or "transformers" (default: detected from the files)
     "file": "model.torchscript.pt",     # torchscript: the file (default: *.torchscript.pt, model.pt)
     "input_size": 224, "channels": 1,   # the model's square input and channel count
     "normalize": "unit",                # unit (0..1) | standardize (per image) | imagenet | xrv
     "outputs": {
       "sex":  {"type": "categorical", "start": 0, "classes": ["female", "male"]},
       "age":  {"type": "numeric", "index": 2, "scale": 100.0, "offset": 0.0}}}

The model maps (n, channels, size, size) float images to (n, k) outputs (transformers: logits).
A categorical attribute is the argmax of outputs [start, start + len(classes)) (`classes:
"id2label"` takes a transformers model's own labels); a numeric one is
`outputs[:, index] * scale + offset`. Loading never runs code from the folder: TorchScript, or
transformers with safetensors only, `local_files_only` and no remote code.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from synthdata.errors import ModelError, SynthdataError
from synthdata.qc.checks import CheckResult, gray, row_vars
from synthdata.spec.qc import CLASSIFIER_CONFIG as CONFIG
from synthdata.spec.qc import read_classifier_config as read_config
from synthdata.fsutil import folder_sha256
from synthdata.screening.embedders import resolve_device

_IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))
_CACHE: dict[tuple, LocalClassifier] = {}
_LOCK = threading.Lock()


class QCError(SynthdataError):
    """A QC configuration that cannot work (a classifier output or requested value it lacks)."""


@dataclass(frozen=True)
class Output:
    """One attribute the classifier predicts."""

    name: str
    type: str
    start: int = 0
    classes: tuple[str, ...] = ()
    index: int = 0
    scale: float = 1.0
    offset: float = 0.0


class LocalClassifier:
    """A classifier folder loaded once per process and device; `predict` gives attribute values."""

    def __init__(self, folder: str | Path, device: str = "auto"):
        self.folder = Path(folder).resolve()
        self.config = read_config(self.folder)
        self.device = resolve_device(device)
        self.input_size = int(self.config.get("input_size", 224))
        self.channels = int(self.config.get("channels", 3))
        self.normalize = self.config.get("normalize", "unit")
        self.fingerprint = folder_sha256(self.folder)
        self.format = self.config.get("format") or (
            "transformers" if (self.folder / "config.json").is_file() else "torchscript")
        self._lock = threading.Lock()
        self._model = self._load()
        self.outputs = {name: self._output(name, cfg) for name, cfg in self.config["outputs"].items()}

    def _load(self):
        import torch

        try:
            if self.format == "torchscript":
                file = self.config.get("file")
                found = [self.folder / file] if file else sorted(
                    [*self.folder.glob("*.torchscript.pt"), *self.folder.glob("model.pt")])
                if not found or not found[0].is_file():
                    raise ModelError(f"{self.folder}: no TorchScript file (set `file` in {CONFIG})")
                return torch.jit.load(str(found[0]), map_location=self.device).eval()
            if self.format == "transformers":
                from transformers import AutoModelForImageClassification

                model = AutoModelForImageClassification.from_pretrained(
                    self.folder, local_files_only=True, trust_remote_code=False, use_safetensors=True)
                return model.eval().to(self.device)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.folder}: cannot load the {self.format} classifier: "
                             f"{type(exc).__name__}: {exc}") from exc
        raise ModelError(f"{self.folder}/{CONFIG}: format must be 'torchscript' or 'transformers'")

    def _output(self, name: str, cfg: dict) -> Output:
        if cfg["type"] == "numeric":
            return Output(name, "numeric", index=int(cfg.get("index", 0)),
                          scale=float(cfg.get("scale", 1.0)), offset=float(cfg.get("offset", 0.0)))
        classes = cfg["classes"]
        if classes == "id2label":
            labels = getattr(getattr(self._model, "config", None), "id2label", None)
            if not labels:
                raise ModelError(f"{self.folder}: outputs.{name}.classes is id2label but the model "
                                 "has no id2label")
            classes = [labels[i] for i in sorted(labels)]
        return Output(name, "categorical", start=int(cfg.get("start", 0)), classes=tuple(map(str, classes)))

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images -> (n, channels, size, size) float32 as the classifier expects."""
        size = self.input_size
        out = np.zeros((len(images), self.channels, size, size), dtype=np.float32)
        for i, image in enumerate(images):
            g = gray(image).astype(np.float32)
            if g.shape != (size, size):
                g = np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BILINEAR))
            x = g / 255.0
            if self.normalize == "standardize":
                x = (x - x.mean()) / max(float(x.std()), 1e-6)
            elif self.normalize == "xrv":
                x = (2.0 * x - 1.0) * 1024.0
            out[i] = x[None]
            if self.normalize == "imagenet":
                mean, std = _IMAGENET
                for c in range(self.channels):
                    out[i, c] = (x - mean[c % 3]) / std[c % 3]
        return out

    def raw(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The model's (n, k) outputs for the images."""
        import torch

        x = torch.from_numpy(self.preprocess(images)).to(self.device)
        with self._lock, torch.inference_mode():
            y = self._model(pixel_values=x).logits if self.format == "transformers" else self._model(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return y.float().cpu().numpy().reshape(len(images), -1)

    def predict(self, images: Sequence[np.ndarray], attribute: str) -> list[tuple[str | float, float | None]]:
        """(predicted value, probability of a categorical prediction) per image."""
        if attribute not in self.outputs:
            raise QCError(f"{self.folder}/{CONFIG}: no output {attribute!r} "
                          f"(outputs: {', '.join(self.outputs)})")
        out = self.outputs[attribute]
        y = self.raw(images)
        if out.type == "numeric":
            return [(float(v) * out.scale + out.offset, None) for v in y[:, out.index]]
        logits = y[:, out.start:out.start + len(out.classes)]
        if logits.shape[1] != len(out.classes):
            raise QCError(f"{self.folder}: the model gives {y.shape[1]} outputs; {attribute!r} needs "
                          f"[{out.start}, {out.start + len(out.classes)})")
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        best = p.argmax(axis=1)
        return [(out.classes[b], float(p[i, b])) for i, b in enumerate(best)]


def load_classifier(folder: str | Path, device: str = "auto") -> LocalClassifier:
    """The classifier in `folder`, loaded once per process and device."""
    key = (str(Path(folder).resolve()), device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = LocalClassifier(folder, device)
        return _CACHE[key]


def classify(classifier: LocalClassifier, images: Sequence[np.ndarray], rows: Sequence[Mapping], *,
             attribute: str, variable: str | None = None, tolerance: float | None = None,
             values: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Compare the classifier's `attribute` with each row's requested `variable` value."""
    target = variable or attribute
    out = classifier.outputs.get(attribute)
    if out is None:
        raise QCError(f"{classifier.folder}/{CONFIG}: no output {attribute!r} "
                      f"(outputs: {', '.join(classifier.outputs)})")
    if out.type == "numeric" and tolerance is None:
        raise QCError(f"classifier check of numeric {attribute!r} needs a tolerance")
    name = f"classifier:{attribute}"
    results = []
    for row, (pred, prob) in zip(rows, classifier.predict(images, attribute)):
        requested = row_vars(row).get(target)
        if requested is None:
            raise QCError(f"{row.get('key')}: no variable {target!r} to compare the classifier's "
                          f"{attribute!r} with")
        if out.type == "numeric":
            try:
                want = float(requested)
            except ValueError:
                raise QCError(f"{row.get('key')}: variable {target!r} is {requested!r}, not a number "
                              f"to compare the classifier's {attribute!r} with") from None
            err = abs(float(pred) - want)
            ok = err <= tolerance
            results.append(CheckResult(name, ok, f"predicted {attribute} {pred:.1f}, requested {want:g}"
                                       f" (|error| {err:.1f} {'<=' if ok else '>'} {tolerance:g})", err))
            continue
        want = (values or {}).get(str(requested), str(requested))
        if want not in out.classes:
            raise QCError(f"{row.get('key')}: requested {target} {requested!r} is not a class of "
                          f"{classifier.folder.name} ({', '.join(out.classes)}); map it with `values`")
        ok = pred == want
        results.append(CheckResult(name, ok, f"predicted {attribute} {pred!r} (p {prob:.2f}), "
                                   f"requested {want!r}", prob))
    return results
