"""The plan: exact label counts, per-sample derivation, chunk-independent hashing."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from synthdata.plan import rows as plan
from synthdata.plan.load import load_spec, load_spec_text
from tests.conftest import DEMO_SPEC

SPEC = """
name: p
seed: 42
count: {count}
labels:
  a: {{weight: 0.6, prompts: ["{{view}} view, age {{age}}", "age {{age}}, {{view}}"]}}
  b: {{weight: 0.3, prompts: ["{{view}} {{side}}"], vars: {{side: [left, right]}}}}
  c: {{weight: 0.1, prompts: ["plain"], generator: {{guidance_scale: 7.5, steps: 3}}}}
vars:
  view: {{PA: 0.7, AP: 0.3}}
  age: {{min: 20, max: 29}}
generator: {{height: 64, width: 64, batch_size: 4, steps: 5}}
shards: {{size: 10}}
"""


def spec_of(count=1000, **fmt):
    return load_spec_text(SPEC.format(count=count, **fmt))


@pytest.mark.parametrize("total,weights,expected", [
    (10, [0.6, 0.3, 0.1], [6, 3, 1]),
    (7, [1, 1, 1], [3, 2, 2]),
    (1, [0.5, 0.5], [1, 0]),
    (100, [1 / 3, 1 / 3, 1 / 3], [34, 33, 33]),
    (5, [0, 1], [0, 5]),
])
def test_apportion_is_exact_largest_remainder(total, weights, expected):
    assert plan.apportion(total, weights) == expected


def test_fixed_counts_and_weights_mix():
    spec = load_spec_text("""
name: m
count: 10
labels:
  rare: {count: 3, prompts: [x]}
  a: {weight: 1, prompts: [y]}
  b: {weight: 1, prompts: [z]}
generator: {height: 64, width: 64}
""")
    assert plan.label_counts(spec) == {"rare": 3, "a": 4, "b": 3}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_permutation_is_a_bijection(n):
    assert sorted(plan.permute(np.arange(n), n, seed=5).tolist()) == list(range(n))


def test_label_counts_are_exact_and_labels_are_spread():
    spec = spec_of(1000)
    table = plan.derive_rows(spec, 0, 1000).to_pandas()
    assert Counter(table["label"]) == Counter({"a": 600, "b": 300, "c": 100})
    first_shard = table[table["shard"] == 0]["label"]
    assert first_shard.nunique() > 1, "labels are interleaved, not laid out in blocks"


def test_each_sample_derives_alone():
    spec = spec_of(500)
    full = plan.derive_rows(spec, 0, 500).to_pylist()
    for i in (0, 1, 137, 499):
        assert plan.derive_rows(spec, i, i + 1).to_pylist() == [full[i]]


def test_prompts_vars_seeds_and_overrides():
    spec = spec_of(4000)
    rows = plan.derive_rows(spec, 0, 4000).to_pandas()
    assert not rows["prompt"].str.contains("{", regex=False).any()
    variables = rows["vars"].map(json.loads)
    views = Counter(v["view"] for v in variables)
    assert abs(views["PA"] / 4000 - 0.7) < 0.03
    ages = {int(v["age"]) for v in variables}
    assert ages == set(range(20, 30)), "integer range includes both ends"
    sides = Counter(v["side"] for v, lbl in zip(variables, rows["label"]) if lbl == "b")
    assert set(sides) == {"left", "right"}
    c = rows[rows["label"] == "c"]
    assert (c["guidance_scale"] == 7.5).all() and (c["steps"] == 3).all()
    assert (rows[rows["label"] != "c"]["steps"] == 5).all()
    assert rows["seed"].nunique() == 4000 and (rows["seed"] >= 0).all()
    assert (rows["shard"] == rows["index"] // 10).all()
    assert (rows["batch"] == (rows["index"] % 10) // 4).all()


def test_plan_depends_on_seed_only_through_the_spec():
    a = plan.derive_rows(spec_of(100), 0, 100).to_pandas()
    b = plan.derive_rows(load_spec_text(SPEC.format(count=100).replace("seed: 42", "seed: 43")), 0, 100).to_pandas()
    assert (a["seed"] != b["seed"]).all()
    assert a.equals(plan.derive_rows(spec_of(100), 0, 100).to_pandas())


def test_written_plan_matches_hash_whatever_the_chunk_size(tmp_path):
    spec = spec_of(1000)
    h_small = plan.write_plan(spec, tmp_path / "a.parquet", chunk_rows=7)
    h_big = plan.write_plan(spec, tmp_path / "b.parquet", chunk_rows=65536)
    assert h_small == h_big == plan.plan_hash(spec)
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.equals(b) and a.num_rows == 1000
    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups > 100, "streamed in chunks"


def test_plan_hash_changes_with_the_plan():
    assert plan.plan_hash(spec_of(100)) != plan.plan_hash(spec_of(101))


def test_demo_plan_shape():
    spec = load_spec(DEMO_SPEC)
    assert plan.shard_count(spec) == 3 and plan.total_count(spec) == 48


@pytest.mark.parametrize("name", ["roentgen-cxr.yaml", "medisyn-multi.yaml"])
def test_example_specs_are_valid_but_for_the_files_they_name(name):
    """Real-model examples: the only problems are the model/embedding/LoRA/reference files."""
    from synthdata.errors import SpecError
    from tests.conftest import REPO

    with pytest.raises(SpecError) as info:
        load_spec(REPO / "specs" / name)
    fields = {p.field.split(".")[0] + "." + p.field.split(".")[1] for p in info.value.problems}
    assert fields <= {"generator.model", "generator.textual_inversion", "generator.lora",
                      "memorization.reference"}, info.value
