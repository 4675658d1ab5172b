"""`synthdata train` on the real tiny pipeline and phantom images: outputs load in generation
specs, train.json is complete, a stopped run resumes to the same tensors."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from synthdata.errors import OutputError
from synthdata.generation.fingerprint import model_fingerprint
from synthdata.generation.generators.base import SampleRequest
from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
from synthdata.plan.load import load_spec_text
from synthdata.spec.models import Generator
from synthdata.training import load_train_spec, run_training
from synthdata.generation.trained import training_chain, training_reference
from tests.training.conftest import FULL_SPEC, write_spec

PROMPT = "PA chest x-ray with <finding>, left"


def _generation_spec(tmp: Path, extra: str) -> str:
    return textwrap.dedent(f"""\
        name: uses-training
        seed: 1
        count: 2
        labels:
          effusion: {{prompts: ["{PROMPT}"]}}
        generator:
          model: builtin:tiny
          steps: 3
          height: 32
          width: 32
          dtype: float32
        """) + textwrap.indent(textwrap.dedent(extra), "  ")


def _generate(gen_cfg: Generator) -> np.ndarray:
    gen = DiffusersGenerator(gen_cfg, device="cpu")
    gen.load()
    req = SampleRequest(key="k", prompt=PROMPT, negative_prompt="", seed=9, steps=3, guidance_scale=4.0)
    return gen.generate([req])[0]


def test_textual_inversion_embedding_is_small_safe_and_loads_in_a_generation_spec(trained, tmp_path):
    _, out, record = trained["textual_inversion"]
    pt, st = out / "embedding.pt", out / "embedding.safetensors"
    assert pt.stat().st_size < 1_000_000 and st.stat().st_size < 1_000_000
    a1111 = torch.load(pt, weights_only=True)
    vectors = a1111["string_to_param"]["*"]
    assert vectors.shape == (1, 32) and a1111["name"] == "<finding>" and a1111["step"] == 4
    assert torch.equal(load_file(str(st))["<finding>"], vectors)
    spec = load_spec_text(_generation_spec(tmp_path, f"""\
        textual_inversion: [{{path: "{pt}", token: "<finding>"}}]"""))
    with_pt = _generate(spec.generator)
    with_st = _generate(spec.generator.model_copy(update={"textual_inversion": [
        spec.generator.textual_inversion[0].model_copy(update={"path": str(st)})]}))
    base = _generate(spec.generator.model_copy(update={"textual_inversion": []}))
    assert np.array_equal(with_pt, with_st), "both formats hold the same vectors"
    assert not np.array_equal(with_pt, base)


def test_lora_file_loads_in_a_generation_spec_and_changes_images(trained, tmp_path):
    _, out, record = trained["lora"]
    lora = out / "lora.safetensors"
    assert set(record["outputs"]) == {"lora"} and record["outputs"]["lora"]["sha256"] == \
        hashlib.sha256(lora.read_bytes()).hexdigest()
    keys = load_file(str(lora))
    assert keys and all("lora" in k for k in keys)
    spec = load_spec_text(_generation_spec(tmp_path, f"""\
        lora: [{{path: "{lora}", scale: 1.0}}]"""))
    assert not np.array_equal(_generate(spec.generator),
                              _generate(spec.generator.model_copy(update={"lora": []})))


def test_train_json_records_method_fingerprints_data_and_loss(trained):
    spec_path, out, _ = trained["lora"]
    record = json.loads((out / "train.json").read_text())
    assert record["method"] == "lora" and record["images"] == 6
    assert record["base_fingerprint"] == model_fingerprint(Generator(model="builtin:tiny")).fingerprint
    images = training_reference(out / "lora.safetensors")
    assert len(images) == 6 and all(Path(p).is_file() for p in images)
    hashes = sorted(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in images)
    assert record["data_fingerprint"] == hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    assert len(record["loss"]["diffusion"]) == 4 and all(np.isfinite(record["loss"]["diffusion"]))
    hp = record["hyperparameters"]
    assert hp["training"]["learning_rate"] == 0.01 and hp["lora"]["rank"] == 2
    assert record["data"]["source"]["kind"] == "phantoms"
    assert Image.open(out / "loss.png").size == (720, 360)
    chain = training_chain(out / "lora.safetensors")
    assert chain["data_fingerprint"] == record["data_fingerprint"] and chain["method"] == "lora"
    assert "training_images" not in chain, "lineage gets fingerprints, not image paths"
    assert training_chain(spec_path) is None, "a file that no train.json names has no chain"


def test_stopped_run_resumes_to_the_same_tensors_as_an_uninterrupted_one(tmp_path):
    spec = load_train_spec(write_spec(tmp_path, FULL_SPEC))
    whole = run_training(spec, tmp_path / "whole")
    first = run_training(spec, tmp_path / "stopped", stop_after=2)
    assert first == {"stopped": True, "stage": "diffusion", "step": 0}, "stopped after the VAE stage"
    second = run_training(spec, tmp_path / "stopped", stop_after=1)
    assert second["stopped"] and second["step"] == 2, "stopped at the first diffusion checkpoint"
    state = torch.load(next((tmp_path / "stopped" / "checkpoints").glob("1-diffusion-step-00000002"))
                       / "state.pt", weights_only=True)
    assert state["data_position"] == 4 and "optimizer" in state and "rng" in state
    resumed = run_training(spec, tmp_path / "stopped")
    assert resumed["resumed_from"] == "1-diffusion-step-00000002" and whole["resumed_from"] is None
    assert resumed["loss"] == whole["loss"]
    for part in ("unet", "vae", "text_encoder"):
        a = load_file(str(tmp_path / "whole" / "model" / part / "diffusion_pytorch_model.safetensors")) \
            if part != "text_encoder" else load_file(str(tmp_path / "whole" / "model" / part / "model.safetensors"))
        b = load_file(str(tmp_path / "stopped" / "model" / part / next(
            p.name for p in (tmp_path / "whole" / "model" / part).glob("*.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert resumed["output_fingerprint"] == whole["output_fingerprint"]
    assert resumed["vae_scaling_factor"] == whole["vae_scaling_factor"] != 0.18215, "VAE latents rescaled"


def test_rerun_is_a_no_op_and_another_spec_is_refused(trained):
    spec_path, out, record = trained["textual_inversion"]
    again = run_training(load_train_spec(spec_path), out)
    assert again["already_trained"] and again["data_fingerprint"] == record["data_fingerprint"]
    other = load_train_spec(spec_path).model_copy(update={"seed": 99})
    with pytest.raises(OutputError, match="different spec"):
        run_training(other, out)


def test_gradient_checkpointing_gives_the_same_steps(trained, tmp_path):
    from tests.training.conftest import LORA_SPEC

    _, _, record = trained["lora"]
    body = LORA_SPEC.replace("threads: 1", "threads: 1\n      gradient_checkpointing: true")
    again = run_training(load_train_spec(write_spec(tmp_path, body)), tmp_path / "out")
    assert again["hyperparameters"]["training"]["gradient_checkpointing"] is True
    assert np.allclose(again["loss"]["diffusion"], record["loss"]["diffusion"], rtol=1e-5, atol=1e-6)


FOLDER_SPEC = """\
    name: folder-test
    seed: 5
    base: ../models/tiny
    method: lora
    data:
      folder: ../images
      caption_template: "a {name} radiograph"
      resolution: 32
    training:
      steps: 4
      batch_size: 2
      learning_rate: 0.01
      checkpoint_every: 2
      threads: 1
    lora: {rank: 2}
    """


def test_a_resume_on_other_images_or_another_base_model_is_refused(tmp_path):
    """The spec hash sees only the names of the image folder and the base model: checkpoints
    record the images', captions' and base model's fingerprints, and a resume after any changed
    is refused, naming it; restoring them resumes. A checkpoint without them (older) is refused."""
    import shutil

    from synthdata.generation.generators.builtin import ensure_builtin

    shutil.copytree(ensure_builtin("tiny"), tmp_path / "models" / "tiny")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(images / f"p{i}.png")
    spec = load_train_spec(write_spec(tmp_path / "specs", FOLDER_SPEC))
    out = tmp_path / "out"
    assert run_training(spec, out, stop_after=2)["stopped"]
    marker = json.loads(next((out / "checkpoints").glob("*/checkpoint.json")).read_text())
    assert len(marker["data_fingerprint"]) == len(marker["base_fingerprint"]) == 64

    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(images / "p4.png")
    with pytest.raises(OutputError, match=r"the training images \(fingerprint .* images added, "
                                          r"removed or edited\) and the training captions"):
        run_training(spec, out)
    (images / "p4.png").unlink()
    (images / "p0.txt").write_text("another caption")  # NAME.txt beside an image wins
    with pytest.raises(OutputError, match=r": the training captions \(fingerprint [0-9a-f]{12}… in "
                                          r"0-diffusion-step-00000002, [0-9a-f]{12}… now\) changed since"):
        run_training(spec, out)
    (images / "p0.txt").unlink()
    config = tmp_path / "models" / "tiny" / "unet" / "config.json"
    original = config.read_text()
    config.write_text(json.dumps(json.loads(original), indent=1))  # other bytes at the same name
    with pytest.raises(OutputError, match=r"the base model \(fingerprint .*\) changed since the last "
                                          r"checkpoint; resuming would mix two trainings"):
        run_training(spec, out)
    config.write_text(original)

    checkpoint = next((out / "checkpoints").glob("*/checkpoint.json"))
    old = {k: v for k, v in json.loads(checkpoint.read_text()).items() if not k.endswith("fingerprint")}
    assert len(old) == len(marker) - 3
    checkpoint.write_text(json.dumps(old))
    with pytest.raises(OutputError, match="written before checkpoints recorded"):
        run_training(spec, out)
    checkpoint.write_text(json.dumps(marker))
    resumed = run_training(spec, out)
    assert resumed["resumed_from"] == checkpoint.parent.name
    assert resumed["data_fingerprint"] == marker["data_fingerprint"]
    assert resumed["base_fingerprint"] == marker["base_fingerprint"]
