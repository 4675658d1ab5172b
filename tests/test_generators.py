"""The diffusers generator on a real tiny pipeline saved to disk, with textual inversion and LoRA."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from synthdata.errors import ModelError
from synthdata.generation.generators.base import SampleRequest
from synthdata.generation.generators.builtin import build_tiny_pipeline
from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
from synthdata.spec.models import Generator

PROMPT = "PA chest x-ray with <pneumonia> in the left lower lobe"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Stable-Diffusion pipeline built in code and saved as a local model folder."""
    root = tmp_path_factory.mktemp("models")
    pipe = build_tiny_pipeline()
    pipe.save_pretrained(root / "tiny-sd", safe_serialization=True)
    return root / "tiny-sd"


@pytest.fixture(scope="module")
def a1111_embedding(tmp_path_factory):
    path = tmp_path_factory.mktemp("ti") / "pneumonia.pt"
    torch.manual_seed(1)
    torch.save({"string_to_param": {"*": torch.randn(2, 32) * 3}, "name": "pneumonia", "step": 100}, path)
    return path


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, model_dir):
    """LoRA weights trained by nobody: random non-zero adapters on the UNet attention layers."""
    from diffusers.utils import convert_state_dict_to_diffusers

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    torch.manual_seed(2)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def _generate(model_dir, **extra) -> list[np.ndarray]:
    cfg = Generator(model=str(model_dir), steps=4, height=64, width=64, dtype="float32", **extra)
    gen = DiffusersGenerator(cfg, device="cpu")
    gen.load()
    batch = [SampleRequest(key=f"k{i}", prompt=PROMPT, negative_prompt="", seed=100 + i, steps=4,
                           guidance_scale=4.0) for i in range(2)]
    return gen.generate(batch)


def test_local_folder_loads_through_from_pretrained_and_is_deterministic(model_dir):
    first, again = _generate(model_dir), _generate(model_dir)
    assert first[0].shape == (64, 64, 3) and first[0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1]), "each sample has its own seed"


def test_textual_inversion_and_lora_change_the_output(model_dir, a1111_embedding, lora_file):
    base = _generate(model_dir)
    with_ti = _generate(model_dir, textual_inversion=[{"path": str(a1111_embedding), "token": "<pneumonia>"}])
    with_lora = _generate(model_dir, lora=[{"path": str(lora_file), "scale": 1.0}])
    assert not np.array_equal(base[0], with_ti[0])
    assert not np.array_equal(base[0], with_lora[0])
    half_lora = _generate(model_dir, lora=[{"path": str(lora_file), "scale": 0.5}])
    assert not np.array_equal(with_lora[0], half_lora[0]), "the LoRA scale is applied"


def test_diffusers_format_embedding_in_safetensors(model_dir, tmp_path):
    path = tmp_path / "emb.safetensors"
    save_file({"<pneumonia>": torch.randn(32) * 3}, path)
    assert not np.array_equal(_generate(model_dir)[0],
                              _generate(model_dir, textual_inversion=[{"path": str(path),
                                                                       "token": "<pneumonia>"}])[0])


class _Evil:
    """Unpickling this runs code: it creates the sentinel file (open(path, "w"))."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_pickled_code_in_an_embedding_is_refused_and_never_runs(model_dir, tmp_path):
    sentinel = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"string_to_param": {"*": _Evil(sentinel)}}, f)
    with pytest.raises(ModelError, match="cannot load embedding safely"):
        _generate(model_dir, textual_inversion=[{"path": str(path), "token": "<x>"}])
    assert not sentinel.exists(), "the pickled payload must not have run"
    # the payload is live: a plain unpickler runs it (so the test above can fail)
    with open(path, "rb") as f:
        pickle.load(f)
    assert sentinel.exists()


def test_missing_hub_model_fails_clearly_offline():
    gen = DiffusersGenerator(Generator(model="nobody/no-such-model", height=64, width=64), device="cpu")
    with pytest.raises(ModelError, match="nobody/no-such-model"):
        gen.load()
