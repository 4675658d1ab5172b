"""Exported domain extractors load as `--features FOLDER` (and as screening embedders): small
stand-ins of RAD-DINO, DINOv2, TorchXRayVision DenseNet-121 and BiomedCLIP's vision tower,
built and exported here the way docs/evaluation.md's recipes export the real ones (random
weights, no download). Images are constructed pictures (helpers.py), not clinical data.

Each folder's features must equal the exported module's own forward pass on the shared
preprocessing, so the folder formats (transformers safetensors, torch.export, TorchScript) and
embedder.json's input, channels and output settings are exercised, not just "it loads".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import labelled_images

from synthdata.evaluation.features import get_extractor
from synthdata.screening.embedders import preprocess

SIZE = 32


def _images():
    return [im for _, _, im in labelled_images(2, seed=4)]


def _expected(module, images, channels: int, pick=None) -> np.ndarray:
    x = torch.from_numpy(np.stack([preprocess(im, SIZE) for im in images]))[:, None]
    x = x.expand(-1, channels, -1, -1).contiguous()
    with torch.inference_mode():
        out = module(x)
    return (pick(out) if pick else out).float().numpy()


def _tiny_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    return Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, patch_size=8, image_size=SIZE)).eval()


class _Pooled(torch.nn.Module):
    """What the DINOv2 recipe exports: the pooled (layer-normed CLS) embedding."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).pooler_output


class _DenseNetStandIn(torch.nn.Module):
    """TorchXRayVision's DenseNet interface in miniature: `features` then ReLU + global pool,
    on 1-channel images scaled to its [-1024, 1024] range (the recipe's wrapper)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                            torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1))

    def forward(self, x):
        f = torch.relu(self.features(x * 512.0))
        return torch.nn.functional.adaptive_avg_pool2d(f, 1).flatten(1)


class _VitStandIn(torch.nn.Module):
    """A vision transformer tower in miniature, attention written out as timm's ViT writes it
    (BiomedCLIP's tower is a timm ViT-B/16 with a projection to 512-d)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.patch = torch.nn.Conv2d(3, 24, 8, stride=8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 24))
        self.norm = torch.nn.LayerNorm(24)
        self.qkv = torch.nn.Linear(24, 72)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(24, 48), torch.nn.GELU(), torch.nn.Linear(48, 24))
        self.proj = torch.nn.Linear(24, 12)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        tokens = tokens + torch.softmax(q @ k.transpose(1, 2) / 24 ** 0.5, dim=-1) @ v
        tokens = tokens + self.mlp(self.norm(tokens))
        return self.proj(tokens[:, 0])


def _write_config(folder, **cfg):
    (folder / "embedder.json").write_text(json.dumps({"input_size": SIZE, **cfg}))


def test_rad_dino_transformers_folder_with_cls_output(tmp_path):
    model = _tiny_dinov2()
    folder = tmp_path / "rad-dino"
    model.save_pretrained(folder, safe_serialization=True)
    _write_config(folder, channels=3, output="cls")
    ext = get_extractor(str(folder), device="cpu")
    got = ext.embed(_images(), normalise=False)
    want = _expected(lambda x: model(pixel_values=x).last_hidden_state, _images(), 3, lambda o: o[:, 0])
    assert ext.dim == 32 and np.allclose(got, want, atol=1e-5)


def test_dinov2_torch_export_folder(tmp_path):
    wrapped = _Pooled(_tiny_dinov2()).eval()
    folder = tmp_path / "dinov2"
    folder.mkdir()
    example = torch.zeros(2, 3, SIZE, SIZE)
    program = torch.export.export(wrapped, (example,),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, folder / "model.pt2")
    _write_config(folder, channels=3)
    ext = get_extractor(str(folder), device="cpu")
    got = ext.embed(_images(), normalise=False)
    assert ext.identity()["format"] == "pt2"
    assert np.allclose(got, _expected(wrapped, _images(), 3), atol=1e-5)


def test_torchxrayvision_densenet_torchscript_folder(tmp_path):
    model = _DenseNetStandIn().eval()
    folder = tmp_path / "xrv-densenet121"
    folder.mkdir()
    torch.jit.trace(model, torch.zeros(2, 1, SIZE, SIZE)).save(str(folder / "model.torchscript.pt"))
    _write_config(folder, channels=1)
    ext = get_extractor(str(folder), device="cpu")
    assert ext.identity()["format"] == "torchscript" and ext.dim == 16
    assert np.allclose(ext.embed(_images(), normalise=False), _expected(model, _images(), 1), atol=1e-4)


def test_biomedclip_vision_tower_torch_export_folder(tmp_path):
    model = _VitStandIn().eval()
    folder = tmp_path / "biomedclip-vision"
    folder.mkdir()
    program = torch.export.export(model, (torch.zeros(2, 3, SIZE, SIZE),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, folder / "vision_tower.pt2")
    _write_config(folder, channels=3)
    ext = get_extractor(str(folder), device="cpu")
    assert ext.dim == 12
    assert np.allclose(ext.embed(_images(), normalise=False), _expected(model, _images(), 3), atol=1e-4)


def test_a_folder_without_a_model_is_named(tmp_path):
    from synthdata.errors import ModelError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model found"):
        get_extractor(str(tmp_path / "empty"), device="cpu")
