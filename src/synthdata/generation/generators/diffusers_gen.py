"""A generator for any diffusers text-to-image pipeline: local folder, hub id, or built-in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from synthdata.errors import ModelError
from synthdata.generation.generators.adapters import apply_loras, apply_textual_inversion
from synthdata.generation.generators.base import ImageGenerator, SampleRequest
from synthdata.spec.blend import BlendPart, parse_blend
from synthdata.generation.generators import dtype_name
from synthdata.generation.generators.builtin import build_tiny_pipeline  # noqa: F401  (diffusers classes load in the main thread)
from synthdata.spec.models import Generator as GeneratorConfig
from synthdata.spec.models import Speed
from synthdata.fsutil import cache_root
from synthdata.generation.fingerprint import model_folder

SCHEDULER_CLASSES = {
    "ddim": DDIMScheduler, "ddpm": DDPMScheduler, "pndm": PNDMScheduler,
    "dpm++": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler, "heun": HeunDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

diffusers_logging.disable_progress_bar()
diffusers_logging.set_verbosity_error()
transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


def resolve_device(requested: str) -> str:
    """'auto' -> cuda when a GPU is visible, else cpu."""
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    """'auto' -> float16 on a GPU, float32 on the CPU."""
    return DTYPES[dtype_name(requested, device)]


def model_location(cfg: GeneratorConfig) -> str:
    """The folder from_pretrained loads: the built-in cache, a local folder, or the local
    snapshot of a hub model at the commit its revision resolves to (the folder the model
    fingerprint hashes)."""

    return str(model_folder(cfg))


# execution.speed.attention -> diffusers attention backend (torch scaled-dot-product kernels)
ATTENTION = {"math": "_native_math", "efficient": "_native_efficient", "flash": "_native_flash",
             "cudnn": "_native_cudnn"}


def inductor_cache() -> str:
    """Where torch.compile keeps compiled artefacts, shared by workers and runs."""
    import os

    folder = cache_root() / "inductor"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def apply_speed(pipe, speed: Speed, device: str) -> None:
    """Apply execution.speed knobs to a loaded pipeline (see spec.models.Speed)."""
    if speed.attention != "default":
        for model in (pipe.unet, pipe.vae):
            model.set_attention_backend(ATTENTION[speed.attention])
    if speed.fuse_qkv:
        pipe.fuse_qkv_projections()
    if speed.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if speed.vae_slicing:
        pipe.vae.enable_slicing()
    if speed.vae_tiling:
        pipe.vae.enable_tiling()
    if speed.tf32 and device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if speed.compile != "off":
        inductor_cache()
        pipe.unet = torch.compile(pipe.unet, mode=speed.compile, fullgraph=False)


class DiffusersGenerator(ImageGenerator):
    """Runs a diffusers DiffusionPipeline with one CPU torch.Generator per sample."""

    def __init__(self, cfg: GeneratorConfig, device: str = "auto", speed: Speed | None = None):
        self.cfg = cfg
        self.device = resolve_device(device if device != "auto" else cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.speed = speed or Speed()
        self.pipe = None
        self.last_non_finite: dict[int, np.ndarray] = {}

    def load(self) -> None:
        cfg = self.cfg
        location = model_location(cfg)
        try:
            pipe = DiffusionPipeline.from_pretrained(
                location, dtype=self.dtype, use_safetensors=True,
                trust_remote_code=False, local_files_only=_offline(), safety_checker=None,
                requires_safety_checker=False)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelError(f"cannot load model {cfg.model!r} (revision {cfg.revision}): "
                             f"{str(exc).splitlines()[0]}") from None
        pipe.scheduler = SCHEDULER_CLASSES[cfg.scheduler].from_config(pipe.scheduler.config)
        for ti in cfg.textual_inversion:
            apply_textual_inversion(pipe, ti.path, ti.token)
        apply_loras(pipe, [(lo.path, lo.scale) for lo in cfg.lora])
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(self.device)
        apply_speed(pipe, self.speed, self.device)
        self.pipe = pipe

    def generate(self, batch: Sequence[SampleRequest]) -> list[np.ndarray]:
        if self.pipe is None:
            self.load()
        steps = {r.steps for r in batch}
        guidance = {r.guidance_scale for r in batch}
        if len(steps) != 1 or len(guidance) != 1:
            raise ValueError("a batch must share steps and guidance_scale")
        generators = [torch.Generator(device="cpu").manual_seed(int(r.seed)) for r in batch]
        blends = [parse_blend(r.prompt) for r in batch]
        with torch.inference_mode():
            if any(blends):
                text = {"prompt_embeds": None, "negative_prompt_embeds": None}
                text["prompt_embeds"], text["negative_prompt_embeds"] = self._blend_embeddings(batch, blends)
            else:
                text = {"prompt": [r.prompt for r in batch],
                        "negative_prompt": [r.negative_prompt for r in batch]}
            out = self.pipe(
                **text, num_inference_steps=steps.pop(), guidance_scale=guidance.pop(),
                height=self.cfg.height, width=self.cfg.width, generator=generators,
                output_type="np")
        finite = np.isfinite(out.images).reshape(len(out.images), -1).all(axis=1)
        # Float images that held NaN or infinite values, for the non_finite QC check; the uint8
        # conversion below would hide them.
        self.last_non_finite = {i: out.images[i] for i in np.nonzero(~finite)[0]}
        images = np.clip(np.round(np.nan_to_num(out.images, nan=0.0) * 255.0), 0, 255).astype(np.uint8)
        return list(images)

    def _blend_embeddings(self, batch: Sequence[SampleRequest], blends: list) -> tuple:
        """Per sample, the weighted sum of its parts' text embeddings (an ordinary prompt is one
        part of weight 1), and the negative prompts' embeddings; one encoder call for all parts."""
        parts = [b or [BlendPart(r.prompt, 1.0)] for r, b in zip(batch, blends)]
        texts = [p.prompt for sample in parts for p in sample]
        encoded, _ = self.pipe.encode_prompt(texts, self.device, 1, False)
        negative, _ = self.pipe.encode_prompt([r.negative_prompt for r in batch], self.device, 1, False)
        mixed, row = [], 0
        for sample in parts:
            weights = torch.tensor([p.weight for p in sample], dtype=torch.float32, device=encoded.device)
            chunk = encoded[row:row + len(sample)].float()
            mixed.append((chunk * weights[:, None, None]).sum(dim=0))
            row += len(sample)
        return torch.stack(mixed).to(encoded.dtype), negative

    def describe(self) -> dict:
        return {"model": self.cfg.model, "revision": self.cfg.revision,
                "scheduler": self.cfg.scheduler, "dtype": str(self.dtype).removeprefix("torch."),
                "device": self.device, "speed": self.speed.changed()}


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
