"""Writing what a training run made: a diffusers folder, a LoRA file or an embedding.

- full: `DIR/model/` (a standard pipeline folder, safetensors);
- lora: `DIR/lora.safetensors` (diffusers/peft key names; `pipe.load_lora_weights(DIR,
  weight_name="lora.safetensors")`);
- textual_inversion: `DIR/embedding.pt` (A1111: `{"string_to_param": {"*": (n, dim)},
  "name", "step", "string_to_token"}`, loads with `torch.load(weights_only=True)`) and
  `DIR/embedding.safetensors` (`{token: (n, dim)}`, what `load_textual_inversion` reads).

Each is staged under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from synthdata.fsutil import atomic_path, sha256_file
from synthdata.training.methods import finish_textual_inversion
from synthdata.generation.fingerprint import FINGERPRINT_VERSION, model_files

MODEL_DIR, LORA_FILE, EMBEDDING_PT, EMBEDDING_ST = "model", "lora.safetensors", "embedding.pt", "embedding.safetensors"


def _replace_dir(staged: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old)
    else:
        os.replace(staged, final)


def save_full(trainer, root: Path) -> dict:
    """The trained pipeline as a diffusers folder."""
    pipe = StableDiffusionPipeline(
        vae=trainer.vae, text_encoder=trainer.text_encoder, tokenizer=trainer.tokenizer,
        unet=trainer.unet, scheduler=trainer.pipe.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    if trainer.spec.training.gradient_checkpointing:
        trainer.unet.disable_gradient_checkpointing()
    with tempfile.TemporaryDirectory(dir=root, prefix=".model-") as tmp:
        staged = Path(tmp) / MODEL_DIR
        pipe.save_pretrained(staged, safe_serialization=True)
        _replace_dir(staged, root / MODEL_DIR)
    return {"model": MODEL_DIR}


def save_lora(trainer, root: Path) -> dict:
    """The LoRA adapters as one safetensors file in diffusers' key layout."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(trainer.unet))
    text_layers = None
    if trainer.spec.lora.text_encoder:
        text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(trainer.text_encoder))
    with tempfile.TemporaryDirectory(dir=root, prefix=".lora-") as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers,
            weight_name=LORA_FILE, safe_serialization=True)
        os.replace(Path(tmp) / LORA_FILE, root / LORA_FILE)
    return {"lora": LORA_FILE}


def save_embedding(trainer, root: Path) -> dict:
    """The learned vectors as an A1111 .pt and a diffusers-style .safetensors."""
    state, opts = trainer.ti_state, trainer.spec.textual_inversion
    finish_textual_inversion(state, trainer.text_encoder)
    vectors = state.vectors.detach().to("cpu", torch.float32).contiguous().clone()
    a1111 = {"string_to_param": {"*": vectors}, "string_to_token": {"*": 265},
             "name": opts.token, "step": int(trainer.spec.training.steps)}
    with atomic_path(root / EMBEDDING_PT) as tmp:
        torch.save(a1111, tmp)
    with atomic_path(root / EMBEDDING_ST) as tmp:
        save_file({opts.token: vectors}, str(tmp), metadata={"format": "pt", "token": opts.token})
        tmp.chmod(0o644)
    return {"embedding": EMBEDDING_PT, "embedding_safetensors": EMBEDDING_ST}


def save_outputs(trainer, root: Path) -> dict:
    """Write the method's outputs; return {kind: {path, sha256, bytes}} (paths relative to root)."""
    saver = {"full": save_full, "lora": save_lora, "textual_inversion": save_embedding}[trainer.spec.method]
    written = saver(trainer, root)
    out = {}
    for kind, rel in written.items():
        path = root / rel
        if path.is_dir():
            files = {f: sha256_file(path / f) for f in model_files(path)}
            out[kind] = {"path": rel, "files": files, "bytes": sum((path / f).stat().st_size for f in files),
                         "fingerprint_version": FINGERPRINT_VERSION}
        else:
            out[kind] = {"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out
