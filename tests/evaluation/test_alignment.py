"""Alignment scores from a tiny CLIP built and saved here (transformers CLIPModel, random weights),
loaded back offline; checked against the model's own forward pass (logits_per_image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthdata.errors import ModelError
from synthdata.evaluation.alignment import TextImageModel, alignment


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from synthdata.generation.generators.builtin import _byte_tokenizer

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=512,
                         eos_token_id=513, pad_token_id=513),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16)
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(cfg).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=_byte_tokenizer()).save_pretrained(folder)
    return folder


def test_clip_score_and_zero_shot_match_the_models_forward(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(6)]
    prompts = ["pa chest x-ray, normal", "ap chest x-ray", "normal lungs",
               "left pleural effusion", "effusion at the base", "fluid level"]
    labels = ["normal"] * 3 + ["pleural_effusion"] * 3
    out = alignment(TextImageModel(tiny_clip, device="cpu"), images, prompts, labels)

    model = CLIPModel.from_pretrained(tiny_clip, local_files_only=True).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip, local_files_only=True)
    rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in images]
    with torch.inference_mode():
        enc = proc(text=prompts, images=rgb, return_tensors="pt", padding=True)
        cos = (model(**enc).logits_per_image / model.logit_scale.exp()).numpy()
        names = proc(text=["normal", "pleural effusion"], images=rgb, return_tensors="pt", padding=True)
        guess = model(**names).logits_per_image.argmax(dim=1).numpy()
    expected = 100 * np.maximum(np.diag(cos), 0)
    assert out["clip_score"] == pytest.approx(expected.mean(), rel=1e-4)
    assert out["per_label"]["normal"]["clip_score"] == pytest.approx(expected[:3].mean(), rel=1e-4, abs=1e-6)
    truth = np.array([0, 0, 0, 1, 1, 1])
    assert out["zero_shot_accuracy"] == pytest.approx((guess == truth).mean())
    assert out["per_label"]["pleural_effusion"]["n"] == 3


def test_a_folder_without_a_clip_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load a contrastive image-text model"):
        TextImageModel(tmp_path, device="cpu")
