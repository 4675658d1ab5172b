"""Concept blends: parsing, spec checks, and the weighted text embeddings on a real tiny pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from synthdata.errors import SpecError
from synthdata.generation.generators.base import SampleRequest
from synthdata.spec.blend import BlendPart, parse_blend
from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
from synthdata.plan.load import load_spec_text
from synthdata.spec.models import Generator

SPEC = """
name: blends
count: 4
labels:
  mix:
    prompts: ["PA chest x-ray, clear lungs :rest AND PA chest x-ray with pneumonia :{severity}"]
    vars: {severity: ["0.25", "0.75"]}
generator: {height: 64, width: 64}
"""


def test_parse_blend_weights():
    assert parse_blend("a chest x-ray AND more") is None, "AND without weights is an ordinary prompt"
    assert parse_blend("healthy :30% AND diseased :70%") == [BlendPart("healthy", 0.3),
                                                             BlendPart("diseased", 0.7)]
    assert parse_blend("a :rest AND b :0.25") == [BlendPart("a", 0.75), BlendPart("b", 0.25)]
    assert [p.weight for p in parse_blend("a :1 AND b :1")] == [0.5, 0.5], "weights are relative"
    for bad, why in (("a :rest AND b :rest", "at most one"), ("a :1.5 AND b :0", "outside"),
                     ("a :0 AND b :0", "add up to 0"), ("a :rest AND b :0.8 AND c :0.4", "> 1")):
        with pytest.raises(ValueError, match=why):
            parse_blend(bad)


def test_spec_checks_blend_weights_for_every_value_of_their_variables():
    assert load_spec_text(SPEC).labels["mix"].vars["severity"].values == ("0.25", "0.75")
    with pytest.raises(SpecError, match=r"bad blend with severity=1.5: .*outside \[0, 1\]"):
        load_spec_text(SPEC.replace('"0.75"', '"1.5"'))
    with pytest.raises(SpecError, match="severity=high: a weight is not a number"):
        load_spec_text(SPEC.replace('["0.25", "0.75"]', '["high"]'))


def test_blends_mix_text_embeddings(tmp_path):
    gen = DiffusersGenerator(Generator(model="builtin:tiny", steps=3, height=64, width=64,
                                       dtype="float32"), device="cpu")
    gen.load()

    def image(prompt: str) -> np.ndarray:
        return gen.generate([SampleRequest("k", prompt, "", 7, 3, 4.0)])[0].astype(np.int16)

    a, b = "PA chest x-ray, clear lungs", "PA chest x-ray with pneumonia"
    pure_b = image(f"{a} :0 AND {b} :1")
    assert np.abs(pure_b - image(b)).max() <= 2, "all weight on b is b's own embedding"
    half, pure_a = image(f"{a} :50% AND {b} :50%"), image(a)
    apart = np.abs(pure_a - pure_b).mean()
    assert apart > 0, "the two prompts give different images"
    assert 0 < np.abs(half - pure_a).mean() < apart and 0 < np.abs(half - pure_b).mean() < apart, \
        "a half-half blend lies between the two prompts' images"
    assert np.array_equal(half, image(f"{a} :rest AND {b} :0.5")), "deterministic"


def test_a_blend_dataset_records_its_parts_and_reproduces(tmp_path):
    import json
    import tarfile

    from synthdata.dataset.reproduce import reproduce
    from tests.lineage.conftest import build_dataset

    spec = tmp_path / "blend.yaml"
    spec.write_text(SPEC.replace("generator: {height: 64, width: 64}",
                                 "generator: {height: 64, width: 64, steps: 2, batch_size: 4, dtype: float32}"))
    out = build_dataset(tmp_path / "ds", spec, shards=(0,))
    with tarfile.open(out / "raw" / "shard-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    assert len(metas) == 4
    for meta in metas:
        severity = float(meta["vars"]["severity"])
        assert meta["blend"] == [{"prompt": "PA chest x-ray, clear lungs", "weight": 1 - severity},
                                 {"prompt": "PA chest x-ray with pneumonia", "weight": severity}]
    assert reproduce(out, metas[1]["key"]).identical
