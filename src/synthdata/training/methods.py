"""The three methods as sets of trainable tensors on a Stable-Diffusion-shaped pipeline.

- `full`: the UNet (and optionally the text encoder) trained in place; optionally a first
  stage that trains the VAE on reconstruction (+ KL). Output: a diffusers pipeline folder.
- `lora`: peft LoRA adapters on the UNet's (and optionally the text encoder's) attention
  projections; everything else frozen. Output: one `.safetensors` file that
  `load_lora_weights` reads.
- `textual_inversion`: new tokens whose vectors are the only trainable tensor (a forward
  hook puts them into the embedding output). Output: an A1111 `.pt` and a diffusers-style
  `.safetensors`, both a few KB.

Loops follow the standard ones of diffusers' example trainers (text_to_image, LoRA,
textual_inversion): noise latents at a random timestep, predict noise or velocity, MSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from synthdata.errors import SynthdataError
from synthdata.training.spec import TrainSpec

LORA_TEXT_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]


class MethodError(SynthdataError):
    """A method that cannot be applied to this base model."""


@dataclass
class StagePlan:
    """One optimisation stage: what it trains, for how long, at what rate."""

    name: str           # "vae" or "diffusion"
    steps: int
    batch_size: int
    groups: list[dict]  # optimizer parameter groups: {"params": {name: Parameter}, "lr": float}
    kind: str           # "vae" | "diffusion"

    def named_params(self) -> dict[str, nn.Parameter]:
        """Every trainable tensor of the stage by name."""
        out: dict[str, nn.Parameter] = {}
        for g in self.groups:
            out.update(g["params"])
        return out


@dataclass
class TextualInversionState:
    """The new tokens, their ids and the trainable vectors hooked into the embedding."""

    tokens: list[str]
    ids: list[int]
    vectors: nn.Parameter
    handle: object = field(default=None, repr=False)


def _named(module: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    return {f"{prefix}.{n}": p for n, p in module.named_parameters() if p.requires_grad}


def setup_full(spec: TrainSpec, unet, vae, text_encoder) -> list[StagePlan]:
    """Stages of method full: [vae], then the diffusion stage over UNet and/or text encoder."""
    opts, tr = spec.full, spec.training
    stages = []
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
    if opts.vae is not None:
        vae.requires_grad_(True)
        stages.append(StagePlan("vae", opts.vae.steps, opts.vae.batch_size,
                                [{"params": _named(vae, "vae"), "lr": opts.vae.learning_rate}], "vae"))
    groups = []
    if opts.unet:
        unet.requires_grad_(True)
        groups.append({"params": _named(unet, "unet"), "lr": tr.learning_rate})
    if opts.text_encoder:
        text_encoder.requires_grad_(True)
        groups.append({"params": _named(text_encoder, "text_encoder"),
                       "lr": opts.text_encoder_learning_rate or tr.learning_rate})
    if groups:
        stages.append(StagePlan("diffusion", tr.steps, tr.batch_size, groups, "diffusion"))
    return stages


def setup_lora(spec: TrainSpec, unet, text_encoder) -> list[StagePlan]:
    """peft adapters (B initialised to zero: training starts from the base model)."""
    from peft import LoraConfig

    opts = spec.lora
    alpha = opts.alpha or opts.rank
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    try:
        unet.add_adapter(LoraConfig(r=opts.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                    target_modules=list(opts.target_modules)))
    except ValueError as exc:
        raise MethodError(f"lora.target_modules: {str(exc).splitlines()[0]}") from None
    params = {k: p for k, p in _named(unet, "unet").items() if "lora" in k}
    if opts.text_encoder:
        text_encoder.add_adapter(LoraConfig(r=opts.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                            target_modules=LORA_TEXT_MODULES))
        params.update({k: p for k, p in _named(text_encoder, "text_encoder").items() if "lora" in k})
    for p in params.values():
        p.data = p.data.float()
    return [StagePlan("diffusion", spec.training.steps, spec.training.batch_size,
                      [{"params": params, "lr": spec.training.learning_rate}], "diffusion")]


def _token_names(token: str, vectors: int) -> list[str]:
    # diffusers' convention for multi-vector embeddings: token, token_1, token_2, ...
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def setup_textual_inversion(spec: TrainSpec, tokenizer, text_encoder, unet) -> tuple[list[StagePlan], TextualInversionState]:
    """Add the tokens, start their vectors from the initializer, hook them into the embedding."""
    opts = spec.textual_inversion
    tokens = _token_names(opts.token, opts.vectors)
    clash = [t for t in tokens if t in tokenizer.get_vocab()]
    if clash:
        raise MethodError(f"textual_inversion.token: {clash[0]!r} is already in the tokenizer's vocabulary; "
                          "choose a new token such as '<my-concept>'")
    tokenizer.add_tokens(tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    embedding = text_encoder.get_input_embeddings()
    with torch.no_grad():
        table = embedding.weight[: min(ids)]
        if opts.initializer:
            init_ids = tokenizer(opts.initializer, add_special_tokens=False).input_ids
            start = table[init_ids].mean(0) if init_ids else table.mean(0)
        else:
            start = table.mean(0)
        vectors = nn.Parameter(start.float().repeat(len(ids), 1).clone())
        embedding.weight[ids] = start.to(embedding.weight.dtype)
    state = TextualInversionState(tokens, list(ids), vectors)
    id_tensor = torch.tensor(ids)

    def hook(module, args, output):
        input_ids = args[0]
        match = input_ids.unsqueeze(-1) == id_tensor.to(input_ids.device)   # (..., n)
        hit = match.any(-1, keepdim=True)
        which = match.float().argmax(-1)
        injected = state.vectors.to(output.dtype)[which]
        return torch.where(hit, injected, output)

    state.handle = embedding.register_forward_hook(hook)
    stage = StagePlan("diffusion", spec.training.steps, spec.training.batch_size,
                      [{"params": {"textual_inversion.vectors": vectors}, "lr": spec.training.learning_rate}],
                      "diffusion")
    return [stage], state


def finish_textual_inversion(state: TextualInversionState, text_encoder) -> None:
    """Write the trained vectors into the embedding table and remove the hook."""
    if state.handle is not None:
        state.handle.remove()
        state.handle = None
    embedding = text_encoder.get_input_embeddings()
    with torch.no_grad():
        embedding.weight[state.ids] = state.vectors.detach().to(embedding.weight.dtype)
