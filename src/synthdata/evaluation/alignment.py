"""Image-text alignment with a contrastive image-text model from a local folder (CLIP-style).

The folder is a transformers model with `get_image_features` and `get_text_features`
(CLIPModel, SiglipModel and the like) and its processor (tokenizer + image processor), loaded
with `local_files_only=True`, `use_safetensors=True` and no remote code. For every synthetic
image:
- `clip_score`: 100 * max(cos(image, its own prompt), 0) (Hessel et al.'s CLIPScore, w = 1);
- zero-shot label accuracy: the label whose text (`label_template`, default the label name
  with _ as spaces) is most similar to the image, compared with the sample's label.
Both are reported per label and overall.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthdata.errors import ModelError
from synthdata.screening.embedders import resolve_device

BATCH = 32


class TextImageModel:
    """A local contrastive image-text model and its processor."""

    def __init__(self, folder: str | Path, device: str = "auto"):
        self.folder = Path(folder).resolve()
        self.device = resolve_device(device)
        try:
            from transformers import AutoModel, AutoProcessor

            self.model = AutoModel.from_pretrained(
                self.folder, local_files_only=True, use_safetensors=True,
                trust_remote_code=False).eval().to(self.device)
            self.processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True,
                                                           trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"--alignment {folder}: cannot load a contrastive image-text model "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        if not hasattr(self.model, "get_image_features"):
            raise ModelError(f"--alignment {folder}: {type(self.model).__name__} has no "
                             "get_image_features/get_text_features (expected a CLIP-style model)")

    def _unit(self, x) -> np.ndarray:
        if not hasattr(x, "norm"):  # newer transformers may return an output object
            x = getattr(x, "pooler_output", None) if getattr(x, "pooler_output", None) is not None \
                else x[0]
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x.float().cpu().numpy()

    def texts(self, texts: list[str]) -> np.ndarray:
        """Unit text embeddings."""
        import torch

        out = []
        for i in range(0, len(texts), BATCH):
            enc = self.processor(text=texts[i:i + BATCH], return_tensors="pt", padding=True,
                                 truncation=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                out.append(self._unit(self.model.get_text_features(**enc)))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        """Unit image embeddings (gray images are given as RGB)."""
        import torch

        out = []
        for i in range(0, len(images), BATCH):
            batch = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im[:, :, :3]
                     for im in images[i:i + BATCH]]
            enc = self.processor(images=batch, return_tensors="pt")
            with torch.inference_mode():
                out.append(self._unit(self.model.get_image_features(
                    pixel_values=enc["pixel_values"].to(self.device))))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def alignment(model: TextImageModel, images: list[np.ndarray], prompts: list[str],
              labels: list[str], label_template: str = "{label}") -> dict:
    """CLIP score and zero-shot label accuracy per label and overall (see module doc)."""
    names = sorted(set(labels))
    img = model.images(images)
    txt = model.texts(prompts)
    clip = 100.0 * np.maximum((img * txt).sum(axis=1), 0.0)
    label_txt = model.texts([label_template.format(label=n.replace("_", " ")) for n in names])
    guess = np.array(names)[np.argmax(img @ label_txt.T, axis=1)]
    hit = guess == np.array(labels)
    per_label = {}
    for name in names:
        m = np.array(labels) == name
        per_label[name] = {"clip_score": float(clip[m].mean()), "zero_shot_accuracy": float(hit[m].mean()),
                           "n": int(m.sum())}
    return {"model": model.folder.name, "clip_score": float(clip.mean()) if len(clip) else None,
            "zero_shot_accuracy": float(hit.mean()) if len(hit) else None,
            "label_template": label_template, "per_label": per_label}
