"""A torch image model from a local folder as an embedder (DINOv2, RadDino, SSCD and the like).

The folder holds one of:
- `model.pt2` (or any `*.pt2`): a `torch.export` program taking (n, C, H, W) images;
- `model.torchscript.pt` / `model.pt` / `*.torchscript`: a TorchScript module (how SSCD is
  distributed);
- `config.json` + `*.safetensors`: a transformers vision model (e.g. `Dinov2Model`), loaded
  with `local_files_only=True`, `trust_remote_code=False` and `use_safetensors=True`.

No pickle files are ever loaded (no `torch.load` of `.bin`/`.pth`), no code from the folder
runs, nothing is downloaded. An optional `embedder.json` sets the input:
`{"format": "pt2" | "torchscript" | "transformers", "file": "...", "input_size": 224,
"channels": 3, "output": "pooler" | "cls" | "mean", "views": "rot4+invert"}` (defaults:
detected format, 224, 3, pooler output or class token, and the reference views of torch
models: 4 rotations each also inverted; `"d4+invert"` adds the flips for a model that is not
flip-invariant, `"identity"` indexes the display rendering only). Images arrive standardised per image (mean 0, std 1; see
`embedders.py`), which is the scale ImageNet-normalised inputs have.
Model outputs of shape (n, d) are used as they are, (n, d, h, w) are averaged over space and
(n, tokens, d) give the class token.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from synthdata.errors import ModelError
from synthdata.fsutil import folder_sha256
from synthdata.screening.embedders import D4, ROT4, TorchEmbedder

FORMATS = ("pt2", "torchscript", "transformers")
VIEWS = {"identity": (("identity",), False), "rot4": (ROT4, False),
         "rot4+invert": (ROT4, True), "d4": (D4, False), "d4+invert": (D4, True)}


def detect_format(folder: Path) -> tuple[str, Path]:
    """(format, file) of the model in a folder, from its files."""
    pt2 = sorted(folder.glob("*.pt2"))
    if pt2:
        return "pt2", pt2[0]
    scripted = sorted([*folder.glob("*.torchscript.pt"), *folder.glob("*.torchscript"),
                       *folder.glob("model.pt")])
    if scripted:
        return "torchscript", scripted[0]
    if (folder / "config.json").is_file() and sorted(folder.glob("*.safetensors")):
        return "transformers", folder
    raise ModelError(f"{folder}: no model found; expected a *.pt2 (torch.export), a TorchScript "
                     "*.torchscript.pt / model.pt, or config.json + *.safetensors (transformers)")


class LocalModelEmbedder(TorchEmbedder):
    """An embedder backed by a model folder; see the module docstring for what it accepts."""

    default_threshold = 0.9

    def __init__(self, folder: str | Path, device: str = "auto", batch_size: int | None = None):
        super().__init__(device, batch_size)
        self.folder = Path(folder).resolve()
        cfg_path = self.folder / "embedder.json"
        try:
            cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{cfg_path}: not valid JSON ({exc})") from exc
        if "format" in cfg:
            if cfg["format"] not in FORMATS:
                raise ModelError(f"{cfg_path}: format must be one of {', '.join(FORMATS)}")
            self.format = cfg["format"]
            self.file = self.folder / cfg["file"] if "file" in cfg else self.folder
        else:
            self.format, self.file = detect_format(self.folder)
        self.name = f"local:{self.folder.name}"
        self.input_size = int(cfg.get("input_size", 224))
        self.channels = int(cfg.get("channels", 3))
        self.output = cfg.get("output", "auto")
        views = cfg.get("views", "rot4+invert")
        if views not in VIEWS:
            raise ModelError(f"{cfg_path}: views must be one of {', '.join(VIEWS)}")
        self.views = views
        self.symmetries, self.inverted_views = VIEWS[views]
        self._sha = folder_sha256(self.folder)
        self._model = self._load()
        self.dim = self._probe_dim()

    def _load(self):
        import torch

        try:
            if self.format == "pt2":
                return torch.export.load(str(self.file)).module().to(self.device)
            if self.format == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=DeprecationWarning)
                    warnings.simplefilter("ignore", category=FutureWarning)
                    return torch.jit.load(str(self.file), map_location=self.device).eval()
            from transformers import AutoModel

            model = AutoModel.from_pretrained(self.folder, local_files_only=True,
                                              trust_remote_code=False, use_safetensors=True)
            return model.eval().to(self.device)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.folder}: cannot load {self.format} model: "
                             f"{type(exc).__name__}: {exc}") from exc

    def _probe_dim(self) -> int:
        import numpy as np

        batch = np.zeros((2, self.input_size, self.input_size), dtype=np.float32)
        out = self._forward(batch)
        if out.ndim != 2:
            raise ModelError(f"{self.folder}: model output has shape {out.shape}; "
                             "expected (n, d), (n, d, h, w) or (n, tokens, d)")
        return int(out.shape[1])

    def identity(self) -> dict:
        return {"name": "local", "format": self.format, "folder_sha256": self._sha,
                "size": self.input_size, "channels": self.channels, "output": self.output,
                "views": self.views}

    def _model_forward(self, x):
        if self.format != "transformers":
            return self._model(x)
        out = self._model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if self.output in ("auto", "pooler") and pooled is not None:
            return pooled
        hidden = out.last_hidden_state
        if self.output == "mean" and hidden.ndim == 3:
            return hidden.mean(dim=1)
        return hidden  # (n, tokens, d) -> class token; (n, d, h, w) -> spatial mean
