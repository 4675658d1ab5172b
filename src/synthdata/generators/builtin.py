"""Built-in models, loaded through the same `from_pretrained` path as any other folder.

- `builtin:tiny` is a Stable-Diffusion-shaped pipeline (2-block UNet, 2-block VAE, 2-layer CLIP
  text encoder, byte-level tokenizer) with a seeded init, built in code and saved once into the
  cache. Its images are noise: it exists so tests exercise the real loading path offline.
- `builtin:phantom` is that architecture trained with `synthdata train specs/train-phantom.yaml`
  on chest-radiograph phantoms (VAE, UNet and text encoder). Its weights ship inside the package
  (`generators/phantom/model/`, safetensors) beside the run's `train.json`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import filelock
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synthdata.fsutil import cache_root
from synthdata.generators import BUILTIN_MODELS

_TINY_VERSION = "tiny-v2"
PHANTOM_DIR = Path(__file__).resolve().parent / "phantom"


def _bytes_to_unicode() -> dict[int, str]:
    # The byte -> printable-character table of GPT-2/CLIP byte-level BPE.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _byte_tokenizer() -> CLIPTokenizer:
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tiny tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    return tokenizer


def build_tiny_pipeline() -> StableDiffusionPipeline:
    """Build the tiny pipeline with a fixed seed (64x64 images)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
        pad_token_id=513))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    tokenizer = _byte_tokenizer()
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def ensure_builtin(name: str) -> Path:
    """Folder of a built-in model, building and saving it (safetensors) the first time."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; known: {list(BUILTIN_MODELS)}")
    if name == "phantom":
        return shipped_phantom()
    target = cache_root() / "models" / _TINY_VERSION
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if (target / "model_index.json").is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            pipe = build_tiny_pipeline()
            staged = Path(tmp) / "model"
            pipe.save_pretrained(staged, safe_serialization=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staged, target)
    return target


def shipped_phantom() -> Path:
    """The folder of `builtin:phantom`'s shipped weights (a diffusers pipeline folder)."""
    folder = PHANTOM_DIR / "model"
    if not (folder / "model_index.json").is_file():
        from synthdata.errors import ModelError

        raise ModelError(f"builtin:phantom's weights are missing from {folder}; rebuild them with "
                         "`synthdata train specs/train-phantom.yaml` (see docs/training.md)")
    return folder
