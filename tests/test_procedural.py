"""builtin:procedural: phantoms per label through the real flow, byte-identical across runs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from synthdata.errors import SpecError
from synthdata.generation.generators.base import SampleRequest
from synthdata.generation.generators.procedural import (
    PROCEDURAL,
    ProceduralGenerator,
    draw,
    procedural_fingerprint,
)
from synthdata.phantoms import LABELS
from synthdata.plan.load import load_spec
from synthdata.spec.models import Generator

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "scale-procedural.yaml"


def _small_spec(tmp_path: Path, count: int = 30, size: int = 10, **generator) -> Path:
    data = yaml.safe_load(SPEC.read_text())
    data.update(count=count, shards={"size": size})
    data["generator"].update(height=48, width=40, batch_size=4, **generator)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _samples(tar_path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


def test_same_seed_same_bytes_and_labels_change_the_image():
    a, b = draw("nodule", 123, 64, 64), draw("nodule", 123, 64, 64)
    assert a.dtype == np.uint8 and a.shape == (64, 64) and a.tobytes() == b.tobytes()
    assert draw("nodule", 124, 64, 64).tobytes() != a.tobytes()
    assert draw("normal", 123, 64, 64).tobytes() != a.tobytes()
    assert draw("cardiomegaly", 5, 48, 40).shape == (48, 40)


def test_generator_draws_each_request_from_its_label_and_seed():
    gen = ProceduralGenerator(Generator(model=PROCEDURAL, height=32, width=32))
    gen.load()
    reqs = [SampleRequest(key=f"k{i}", prompt="", negative_prompt="", seed=10 + i, steps=1,
                          guidance_scale=1.0, label=label) for i, label in enumerate(LABELS)]
    images = gen.generate(reqs)
    assert [im.tobytes() for im in images] == [draw(r.label, r.seed, 32, 32).tobytes() for r in reqs]
    assert gen.describe()["device"] == "cpu"


def test_unknown_label_is_a_spec_error_naming_the_field_and_known_labels(tmp_path):
    data = yaml.safe_load(SPEC.read_text())
    data["labels"]["pneumonia"] = data["labels"].pop("nodule")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert "labels.pneumonia" in text and str(path) in text
    assert all(label in text for label in LABELS)


def test_the_example_spec_validates_at_scale():
    spec = load_spec(SPEC)
    assert spec.generator.model == PROCEDURAL and spec.count == 10_000 and spec.shards.size == 1000
    assert set(spec.labels) <= set(LABELS)


def test_flow_runs_write_identical_decodable_shards_that_match_their_labels(prefect_server, tmp_path):
    from synthdata.flow import synthdata_run
    from synthdata.dataset.reproduce import reproduce

    spec_path = _small_spec(tmp_path)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        synthdata_run(str(spec_path), out_dir=str(out), workers=2)
    tars = sorted((outs[0] / "raw").glob("shard-*.tar"))
    assert [t.name for t in tars] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    seen = set()
    for tar in tars:
        assert tar.read_bytes() == (outs[1] / "raw" / tar.name).read_bytes()
        for key, members in _samples(tar).items():
            meta = json.loads(members["json"])
            image = np.asarray(Image.open(io.BytesIO(members["png"])))
            assert image.shape == (48, 40)
            assert np.array_equal(image, draw(meta["label"], meta["seed"], 48, 40)), key
            assert int(members["cls"]) == meta["label_index"]
            assert meta["model"]["fingerprint"] == procedural_fingerprint()
            seen.add(meta["label"])
    assert seen == set(LABELS)
    run = json.loads((outs[0] / "run.json").read_text())
    assert run["model"]["fingerprint"] == procedural_fingerprint()
    assert run["model"]["files"] == {"renderer": "cxr-phantom-v1"}
    key = next(iter(_samples(tars[0])))
    assert reproduce(outs[0], key).png_bytes_identical
