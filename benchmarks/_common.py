"""Shared helpers of the benchmark scripts: machine description, model building, result rows."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    info = {"host_cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "date": dt.date.today().isoformat()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def emit(name: str, payload: dict, record: bool) -> None:
    """Print the JSON result; with record, add a row to RESULTS.md (command, machine, date)."""
    payload = {"benchmark": name, "machine": machine(), **payload}
    print(json.dumps(payload, indent=2, default=str))
    if record:
        command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
        with RESULTS.open("a") as f:
            f.write(f"\n<!-- {name} {payload['machine']['date']} -->\n```json\n"
                    f"{json.dumps({'command': command, **payload}, default=str)}\n```\n")


SIZES = {
    # block_out_channels, layers_per_block, cross-attention (= text hidden) size, text layers, VAE blocks
    "tiny": None,  # synthdata's builtin:tiny
    "mid": dict(unet=(128, 256, 512), layers=2, cross=512, text_layers=6, vae=(64, 128, 256)),
    "sd15": dict(unet=(320, 640, 1280, 1280), layers=2, cross=768, text_layers=12, vae=(128, 256, 512, 512)),
}


def build_pipeline(size: str, folder: Path, dtype: str = "float32") -> Path:
    """A random-weight Stable-Diffusion-shaped pipeline saved as a model folder (cached)."""
    if size == "tiny":
        from synthdata.generation.generators.builtin import ensure_builtin

        return ensure_builtin("tiny")
    target = folder / f"{size}-{dtype}"
    if (target / "model_index.json").is_file():
        return target
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from synthdata.generation.generators.builtin import _byte_tokenizer

    cfg = SIZES[size]
    n = len(cfg["unet"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=cfg["unet"], layers_per_block=cfg["layers"], cross_attention_dim=cfg["cross"],
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1), sample_size=64,
        attention_head_dim=8)
    m = len(cfg["vae"])
    vae = AutoencoderKL(block_out_channels=cfg["vae"], latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * m, up_block_types=("UpDecoderBlock2D",) * m)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=514, hidden_size=cfg["cross"], intermediate_size=cfg["cross"] * 4,
        num_hidden_layers=cfg["text_layers"], num_attention_heads=max(1, cfg["cross"] // 64),
        max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=_byte_tokenizer(),
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if dtype != "float32":
        pipe = pipe.to(getattr(torch, dtype))
    pipe.save_pretrained(target, safe_serialization=True)
    return target


def prompts(n: int) -> list[str]:
    """n distinct chest-X-ray-like prompts."""
    return [f"PA chest x-ray of a {20 + i % 70} year old {'female' if i % 2 else 'male'}, case {i}"
            for i in range(n)]
