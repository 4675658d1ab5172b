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
from synthdata.generators.adapters import apply_loras, apply_textual_inversion
from synthdata.generators.base import ImageGenerator, SampleRequest
from synthdata.generators import dtype_name
from synthdata.generators.builtin import build_tiny_pipeline  # noqa: F401  (diffusers classes load in the main thread)
from synthdata.spec.models import Generator as GeneratorConfig

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
    from synthdata.fingerprint import model_folder

    return str(model_folder(cfg))


class DiffusersGenerator(ImageGenerator):
    """Runs a diffusers DiffusionPipeline with one CPU torch.Generator per sample."""

    def __init__(self, cfg: GeneratorConfig, device: str = "auto"):
        self.cfg = cfg
        self.device = resolve_device(device if device != "auto" else cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.pipe = None

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
        self.pipe = pipe.to(self.device)

    def generate(self, batch: Sequence[SampleRequest]) -> list[np.ndarray]:
        if self.pipe is None:
            self.load()
        steps = {r.steps for r in batch}
        guidance = {r.guidance_scale for r in batch}
        if len(steps) != 1 or len(guidance) != 1:
            raise ValueError("a batch must share steps and guidance_scale")
        generators = [torch.Generator(device="cpu").manual_seed(int(r.seed)) for r in batch]
        with torch.inference_mode():
            out = self.pipe(
                prompt=[r.prompt for r in batch], negative_prompt=[r.negative_prompt for r in batch],
                num_inference_steps=steps.pop(), guidance_scale=guidance.pop(),
                height=self.cfg.height, width=self.cfg.width, generator=generators,
                output_type="np")
        images = np.clip(np.round(out.images * 255.0), 0, 255).astype(np.uint8)
        return list(images)

    def describe(self) -> dict:
        return {"model": self.cfg.model, "revision": self.cfg.revision,
                "scheduler": self.cfg.scheduler, "dtype": str(self.dtype).removeprefix("torch."),
                "device": self.device}


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
