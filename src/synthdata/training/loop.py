"""The training loop: stages of seeded steps with atomic checkpoints and exact resume.

Every random draw of optimisation step `s` (timesteps, noise, latent samples, caption
dropout, flips) comes from a generator seeded by (spec seed, stage, step, micro-batch), and
the images of step `s` are positions [s*B*A, (s+1)*B*A) of a stream of per-epoch permutations
seeded by (spec seed, stage, epoch). So a step is a function of the spec and the weights and
optimizer state before it: a run resumed from a checkpoint ends with the same tensors as one
that never stopped (same hardware, same thread count).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from synthdata.errors import ModelError
from synthdata.plan.seeds import mix
from synthdata.training import checkpoints
from synthdata.training.data import Item, TrainDataError, collect_items, decode
from synthdata.training.methods import (
    MethodError,
    StagePlan,
    setup_full,
    setup_lora,
    setup_textual_inversion,
)
from synthdata.training.spec import TrainSpec
from synthdata.generation.fingerprint import model_fingerprint
from synthdata.generation.fingerprint import model_folder
from synthdata.spec.models import Generator
from synthdata.training.data import captions_fingerprint, data_fingerprint

diffusers_logging.disable_progress_bar()
diffusers_logging.set_verbosity_error()
transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()

_STREAM_STEP, _STREAM_PERM, _STREAM_DROP, _STREAM_FLIP = 31, 32, 33, 34
PIXEL_CACHE_BYTES = 1 << 30
ENCODE_CHUNK = 32


def _seed(*words: int) -> int:
    return int(mix(*words) & np.uint64((1 << 63) - 1))


def resolve_device(requested: str) -> str:
    """'auto' -> cuda when a GPU is visible, else cpu."""
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: str) -> str:
    """'auto' -> bf16 (or fp16) on a GPU, 'no' (float32) on the CPU."""
    if requested != "auto":
        return requested
    if not device.startswith("cuda"):
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def load_base(spec: TrainSpec, device: str) -> DiffusionPipeline:
    """The base pipeline in float32 (safetensors only, no remote code, offline when asked)."""

    folder = model_folder(Generator(model=spec.base, revision=spec.revision))
    try:
        pipe = DiffusionPipeline.from_pretrained(
            str(folder), dtype=torch.float32, use_safetensors=True, trust_remote_code=False,
            local_files_only=True, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base model {spec.base!r}: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if getattr(pipe, c, None) is None]
    if missing:
        raise MethodError(f"base: {spec.base!r} is not a Stable-Diffusion-shaped pipeline "
                          f"(missing {', '.join(missing)}); synthdata train adapts SD-1/2-style models")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def input_fingerprints(spec: TrainSpec, items: list[Item]) -> tuple[str, str, str]:
    """(images, captions, base model) fingerprints: what a checkpoint was trained on."""

    base = model_fingerprint(Generator(model=spec.base, revision=spec.revision)).fingerprint
    return data_fingerprint(items)[0], captions_fingerprint(items), base


class Trainer:
    """Holds the models, data and caches of one training run; runs steps and checkpoints."""

    def __init__(self, spec: TrainSpec, root: Path, spec_hash: str):
        self.spec, self.root, self.spec_hash = spec, root, spec_hash
        tr = spec.training
        if tr.threads:
            torch.set_num_threads(tr.threads)
        self.device = resolve_device(tr.device)
        self.precision = resolve_precision(tr.mixed_precision, self.device)
        if self.precision != "no" and not self.device.startswith("cuda"):
            raise MethodError(f"training.mixed_precision: {self.precision} needs a CUDA device "
                              f"(device is {self.device})")
        if self.device.startswith("cuda"):
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.items: list[Item] = collect_items(spec.data)
        self.data_fingerprint, self.captions_fingerprint, self.base_fingerprint = \
            input_fingerprints(spec, self.items)
        torch.manual_seed(spec.seed)  # adapter initialisation
        pipe = load_base(spec, self.device)
        self.pipe = pipe
        self.unet, self.vae, self.text_encoder, self.tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.ti_state = None
        if spec.method == "full":
            self.stages = setup_full(spec, self.unet, self.vae, self.text_encoder)
        elif spec.method == "lora":
            self.stages = setup_lora(spec, self.unet, self.text_encoder)
        else:
            self.stages, self.ti_state = setup_textual_inversion(spec, self.tokenizer, self.text_encoder, self.unet)
            self._check_token_in_captions()
        if tr.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if spec.method == "full" and spec.full.text_encoder:
                self.text_encoder.gradient_checkpointing_enable()
        self.losses: dict[str, list[float]] = {s.name: [] for s in self.stages}
        self.truncated = self._count_truncated()
        nbytes = len(self.items) * spec.data.resolution ** 2 * 3
        self.pixels = np.stack([self._decode(i) for i in range(len(self.items))]) \
            if nbytes <= PIXEL_CACHE_BYTES else None
        self._latents: tuple[torch.Tensor, torch.Tensor] | None = None
        self._hidden: dict[str, torch.Tensor] | None = None
        self.optimizer = self.lr_scheduler = self.scaler = None
        self.stage_index, self.step = 0, 0
        self.resumed_from: str | None = None
        self.vae_scaling_factor: float | None = None
        self.on_step = None  # optional callback(stage, step, steps, loss), e.g. a progress bar

    # ---- data -------------------------------------------------------------------------
    def _decode(self, i: int) -> np.ndarray:
        return decode(self.items[i], self.spec.data.resolution, self.spec.data.center_crop)

    def _check_token_in_captions(self) -> None:
        token = self.spec.textual_inversion.token
        without = [it for it in self.items if token not in it.caption]
        if without:
            raise TrainDataError(f"data: {len(without)} of {len(self.items)} captions lack the token "
                                 f"{token!r} (e.g. {without[0].caption!r}); put it in the captions, "
                                 "e.g. with data.caption_template")

    def _count_truncated(self) -> int:
        limit = self.tokenizer.model_max_length
        return sum(len(self.tokenizer(it.caption).input_ids) > limit for it in self.items)

    def _positions(self, stage_index: int, step: int, micro: int, batch: int) -> np.ndarray:
        acc = self.spec.training.gradient_accumulation
        n = len(self.items)
        start = (step * acc + micro) * batch
        pos = np.arange(start, start + batch)
        out = np.empty(batch, dtype=np.int64)
        for epoch in np.unique(pos // n):
            perm = np.random.default_rng([self.spec.seed, _STREAM_PERM, stage_index, int(epoch)]).permutation(n)
            sel = pos // n == epoch
            out[sel] = perm[pos[sel] % n]
        return out

    def _pixels(self, idx: np.ndarray, flips: np.ndarray | None = None) -> torch.Tensor:
        arr = self.pixels[idx] if self.pixels is not None else np.stack([self._decode(int(i)) for i in idx])
        if flips is not None and flips.any():
            arr = arr.copy()
            arr[flips] = arr[flips, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    def _captions(self, idx: np.ndarray, pos_words: tuple) -> list[str]:
        p = self.spec.data.caption_dropout
        caps = [self.items[int(i)].caption for i in idx]
        if p <= 0:
            return caps
        u = (mix(*pos_words, np.arange(len(idx), dtype=np.uint64)) >> np.uint64(11)).astype(np.float64) / (1 << 53)
        return ["" if u[k] < p else c for k, c in enumerate(caps)]

    def _tokens(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids.to(self.device)

    def _text_trained(self) -> bool:
        s = self.spec
        return s.method == "textual_inversion" or (s.method == "full" and s.full.text_encoder) or \
            (s.method == "lora" and s.lora.text_encoder)

    def _hidden_states(self, captions: list[str]) -> torch.Tensor:
        if self._text_trained():
            return self.text_encoder(self._tokens(captions))[0]
        if self._hidden is None:
            unique = sorted({it.caption for it in self.items} | {""})
            self._hidden = {}
            with torch.no_grad():
                for k in range(0, len(unique), 64):
                    chunk = unique[k:k + 64]
                    states = self.text_encoder(self._tokens(chunk))[0]
                    self._hidden.update({c: states[j:j + 1] for j, c in enumerate(chunk)})
        return torch.cat([self._hidden[c] for c in captions])

    def _latent_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._latents is None:
            means, stds = [], []
            with torch.no_grad():
                for k in range(0, len(self.items), ENCODE_CHUNK):
                    dist = self.vae.encode(self._pixels(np.arange(k, min(k + ENCODE_CHUNK, len(self.items))))).latent_dist
                    means.append(dist.mean)
                    stds.append(dist.std)
            self._latents = (torch.cat(means), torch.cat(stds))
        return self._latents

    def _latents_for(self, idx: np.ndarray, gen: torch.Generator, flips: np.ndarray | None) -> torch.Tensor:
        scale = self.vae.config.scaling_factor
        if self.spec.training.cache_latents and not self.spec.data.random_flip:
            mean, std = self._latent_cache()
            t = torch.as_tensor(idx, device=mean.device)
            eps = torch.randn(mean[t].shape, generator=gen).to(self.device)
            return (mean[t] + std[t] * eps) * scale
        with torch.no_grad():
            dist = self.vae.encode(self._pixels(idx, flips)).latent_dist
            eps = torch.randn(dist.mean.shape, generator=gen).to(self.device)
            return (dist.mean + dist.std * eps) * scale

    # ---- losses -----------------------------------------------------------------------
    def _vae_loss(self, idx: np.ndarray, gen: torch.Generator, flips) -> torch.Tensor:
        x = self._pixels(idx, flips)
        dist = self.vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen).to(self.device)
        recon = self.vae.decode(z).sample
        return F.l1_loss(recon.float(), x) + self.spec.full.vae.kl_weight * dist.kl().mean()

    def _diffusion_loss(self, idx: np.ndarray, gen: torch.Generator, captions: list[str], flips) -> torch.Tensor:
        tr = self.spec.training
        latents = self._latents_for(idx, gen, flips)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen).to(self.device)
        if tr.noise_offset:
            noise = noise + tr.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen).to(self.device)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), generator=gen).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise MethodError(f"base: unsupported prediction type {kind!r}")
        pred = self.unet(noisy, timesteps, self._hidden_states(captions)).sample
        if tr.snr_gamma is None:
            return F.mse_loss(pred.float(), target.float())
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps)
        weight = torch.clamp(snr, max=tr.snr_gamma) / (snr + 1 if kind == "v_prediction" else snr)
        per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per * weight).mean()

    # ---- stages, steps, checkpoints -----------------------------------------------------
    def _stage(self) -> StagePlan:
        return self.stages[self.stage_index]

    def begin_stage(self, index: int) -> None:
        """Fresh optimizer and LR schedule for stage `index` (restored on resume)."""
        from diffusers.optimization import get_scheduler

        self.stage_index, self.step = index, 0
        stage, tr = self.stages[index], self.spec.training
        groups = [{"params": list(g["params"].values()), "lr": g["lr"]} for g in stage.groups]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=tr.weight_decay, foreach=False)
        warmup = tr.warmup_steps if stage.kind == "diffusion" else 0
        self.lr_scheduler = get_scheduler(tr.lr_scheduler, self.optimizer, num_warmup_steps=warmup,
                                          num_training_steps=stage.steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if stage.kind == "diffusion":
            self._latents = None  # the VAE may have changed in an earlier stage

    def _autocast(self):
        if self.precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def train_step(self) -> float:
        """One optimisation step of the current stage; returns its loss."""
        stage, tr, si, s = self._stage(), self.spec.training, self.stage_index, self.step
        params = list(stage.named_params().values())
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(tr.gradient_accumulation):
            idx = self._positions(si, s, micro, stage.batch_size)
            gen = torch.Generator().manual_seed(_seed(self.spec.seed, _STREAM_STEP, si, s, micro))
            flips = None
            if self.spec.data.random_flip:
                words = mix(self.spec.seed, _STREAM_FLIP, si, s, micro, np.arange(len(idx), dtype=np.uint64))
                flips = (words & np.uint64(1)).astype(bool)
            with self._autocast():
                if stage.kind == "vae":
                    loss = self._vae_loss(idx, gen, flips)
                else:
                    captions = self._captions(idx, (self.spec.seed, _STREAM_DROP, si, s, micro))
                    loss = self._diffusion_loss(idx, gen, captions, flips)
            scaled = loss / tr.gradient_accumulation
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += float(loss.detach()) / tr.gradient_accumulation
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if tr.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.step += 1
        self.losses[stage.name].append(total)
        if self.on_step is not None:
            self.on_step(stage.name, self.step, stage.steps, total)
        return total

    def trained_params(self) -> dict[str, torch.Tensor]:
        """Every tensor trained so far (this stage and the earlier ones)."""
        out: dict[str, torch.Tensor] = {}
        for stage in self.stages[: self.stage_index + 1]:
            out.update(stage.named_params())
        return out

    def save_checkpoint(self) -> checkpoints.Checkpoint:
        """Checkpoint the current position (atomic; old ones pruned)."""
        state = {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler else {},
                 "losses": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.losses.items()},
                 "data_position": self.step * self.spec.training.gradient_accumulation * self._stage().batch_size,
                 "vae_scaling_factor": float(self.vae.config.scaling_factor)}
        return checkpoints.save_checkpoint(
            self.root, stage_index=self.stage_index, stage=self._stage().name, step=self.step,
            spec_hash=self.spec_hash, params=self.trained_params(), state=state,
            keep=self.spec.training.keep_checkpoints, data_fingerprint=self.data_fingerprint,
            base_fingerprint=self.base_fingerprint, captions_fingerprint=self.captions_fingerprint)

    def resume(self) -> None:
        """Continue from the latest checkpoint of this spec, images and base model, or begin the
        first stage (a checkpoint of other images or another base is refused)."""
        ckpt = checkpoints.latest_checkpoint(self.root, self.spec_hash, self.data_fingerprint,
                                             self.base_fingerprint, self.captions_fingerprint)
        if ckpt is None:
            self.begin_stage(0)
            return
        params, state = checkpoints.load_checkpoint(ckpt, self.device)
        self.stage_index = ckpt.stage_index
        named = self.trained_params()
        for name, tensor in params.items():
            if name not in named:
                raise ModelError(f"{ckpt.path}: unexpected tensor {name!r} for this spec")
            with torch.no_grad():
                named[name].copy_(tensor)
        self.vae.register_to_config(scaling_factor=state["vae_scaling_factor"])
        self.losses.update({k: [float(x) for x in v] for k, v in state["losses"].items()})
        self.resumed_from = ckpt.path.name
        self.begin_stage(ckpt.stage_index)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        checkpoints.restore_rng_states(state["rng"])
        self.step = ckpt.step

    def calibrate_vae_scale(self) -> float:
        """After a VAE stage: scaling_factor = 1 / std of the training latents (as SD does)."""
        self._latents = None
        mean, _ = self._latent_cache()
        factor = float(1.0 / mean.float().std().clamp(min=1e-6))
        factor = float(np.float32(round(factor, 5)))
        self.vae.register_to_config(scaling_factor=factor)
        self._latents = None
        return factor
