"""Safe loading of textual-inversion embeddings and LoRA weights into a diffusers pipeline."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from synthdata.errors import ModelError


def load_embedding_file(path: str | Path) -> dict:
    """Read an embedding: safetensors, or a .pt/.bin with weights_only loading (no arbitrary pickle)."""
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            return load_file(str(p))
        return torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"{p}: cannot load embedding safely (expected an A1111 .pt, a diffusers "
                         f".bin or a .safetensors file of tensors): {str(exc).splitlines()[0]}") from None


def apply_textual_inversion(pipe, path: str | Path, token: str) -> None:
    """Add a textual-inversion token to the pipeline's tokenizer and text encoder."""
    state = load_embedding_file(path)
    try:
        pipe.load_textual_inversion(state, token=token)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{path}: not a usable textual-inversion embedding for this model: {exc}") from None


def apply_loras(pipe, loras: list[tuple[str, float]]) -> None:
    """Load LoRA weights from .safetensors files and activate them at their scales."""
    if not loras:
        return
    names, scales = [], []
    for i, (path, scale) in enumerate(loras):
        p = Path(path)
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(str(p.parent), weight_name=p.name, adapter_name=name,
                                   use_safetensors=True)
        except (ValueError, KeyError, OSError) as exc:
            raise ModelError(f"{p}: not a usable LoRA for this model: {str(exc).splitlines()[0]}") from None
        names.append(name)
        scales.append(scale)
    pipe.set_adapters(names, adapter_weights=scales)
