"""Built-in models, loaded through the same `from_pretrained` path as any other folder.

- `builtin:tiny` is a Stable-Diffusion-shaped pipeline (2-block UNet, 2-block VAE, 2-layer CLIP
  text encoder, byte-level tokenizer) built in code and saved once into the cache. Its images are
  noise: it exists so tests exercise the real loading path offline. Its weights are the same
  bytes on every machine (so its fingerprint is one value everywhere, for the pinned library
  versions): every parameter that torch's init leaves random is redrawn with numpy's PCG64,
  seeded by the parameter's name, as uniform float64 values rounded once to float32 (integer
  bits to float64, then IEEE-rounded arithmetic: no float kernel, vector width or thread count
  can change a bit). Bounds follow torch's default init from the shapes (+-1/sqrt(fan_in));
  the text encoder's embeddings keep CLIP's scale (std 0.02). Constant parameters (norm
  weights 1, zero biases) stay as torch sets them: a fill is exact everywhere.
- `builtin:phantom` is that architecture trained with `synthdata train specs/train-phantom.yaml`
  on chest-radiograph phantoms (VAE, UNet and text encoder). Its weights ship inside the package
  (`generators/phantom/model/`, safetensors) beside the run's `train.json`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import filelock
import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synthdata.fsutil import cache_root
from synthdata.generation.generators import BUILTIN_MODELS
from synthdata.errors import ModelError

_TINY_VERSION = "tiny-v3"  # v3: CPU-independent init (v2 drew weights with torch kernels)
_INIT_SEED = 20261201
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


def _bound(name: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]],
           embedding: bool) -> float:
    """Half-width of a parameter's uniform init: torch's default for weights and biases
    (1/sqrt(fan_in), kaiming-uniform with a=sqrt(5)); std 0.02 for embeddings (CLIP's)."""
    if embedding:
        return 0.02 * 3 ** 0.5
    weight = shape if len(shape) >= 2 else shapes.get(name.rsplit(".", 1)[0] + ".weight", shape)
    fan_in = weight[1] * int(np.prod(weight[2:])) if len(weight) >= 2 else weight[0]
    return 1.0 / float(np.sqrt(fan_in))


def portable_init(module: torch.nn.Module, component: str, seed: int = _INIT_SEED) -> None:
    """Redraw, in place, every parameter of `module` that torch's init left non-constant with
    values that are the same bytes on every machine (see the module docstring)."""
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    with torch.no_grad():
        for name, param in module.named_parameters():
            flat = param.detach().reshape(-1)
            if flat.numel() > 1 and bool((flat == flat[0]).all()):
                continue  # a constant fill (1 or 0): exact on every machine
            digest = hashlib.sha256(f"{component}/{name}".encode()).digest()
            rng = np.random.Generator(np.random.PCG64(
                np.random.SeedSequence([seed, int.from_bytes(digest[:16], "little")])))
            bound = _bound(name, shapes[name], shapes, "embedding" in name and component == "text_encoder")
            values = (rng.random(shapes[name], dtype=np.float64) * 2.0 - 1.0) * bound
            param.copy_(torch.from_numpy(values.astype(np.float32)))


def build_tiny_pipeline() -> StableDiffusionPipeline:
    """Build the tiny pipeline (64x64 images) with the portable init: the same weights on any CPU."""
    torch.manual_seed(0)  # only shapes what `portable_init` overwrites
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
    for component, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        portable_init(module, component)
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
        raise ModelError(f"builtin:phantom's weights are missing from {folder}; rebuild them with "
                         "`synthdata train specs/train-phantom.yaml` (see docs/training.md)")
    return folder
