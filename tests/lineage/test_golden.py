"""Golden bytes of the demo spec: a change that moves them must be deliberate (CHANGELOG.md).

The plan hash is pure integer arithmetic and text: the same on every machine. A shard's bytes
are float results of the model, which depend on the CPU's vector instruction set (torch picks
kernels by it), so the shard hash is pinned per torch CPU capability; a machine of a kind not
listed fails with a message saying how to record it after checking the change is expected.
"""

from __future__ import annotations

import json

import torch

from synthdata.fsutil import sha256_file

DEMO_PLAN_HASH = "f7b2c5aa39f05371347de0e81c1eecb2457749ad08aa20547767dea5526c71ca"
# sha256 of raw/shard-000000.tar of specs/demo-tiny.yaml, by torch CPU capability (torch 2.13 CPU).
DEMO_SHARD0_SHA256 = {
    "AVX512": "e7804591da62476bbc5556ce390ab77367622068f664d59e4dca4c80383d17de",
}


def test_demo_plan_hash_is_pinned(demo_dataset):
    assert json.loads((demo_dataset / "plan.json").read_text())["plan_hash"] == DEMO_PLAN_HASH


def assert_pinned_shard(tar, pinned: dict[str, str], name: str) -> None:
    """The tar's sha256 equals the value pinned for this machine's torch CPU capability."""
    capability = torch.backends.cpu.get_cpu_capability()
    actual = sha256_file(tar)
    assert capability in pinned, (
        f"no golden shard hash recorded for CPU capability {capability!r} (this machine gives "
        f"{actual}); add it to {name} once the other pinned values agree")
    assert actual == pinned[capability], "the demo's bytes moved: say why in CHANGELOG.md"


def test_demo_first_shard_bytes_are_pinned(demo_dataset):
    assert_pinned_shard(demo_dataset / "raw" / "shard-000000.tar", DEMO_SHARD0_SHA256, "DEMO_SHARD0_SHA256")


# specs/demo.yaml, the README's demo on builtin:phantom (its shipped weights are pinned by
# tests/training/test_builtin_phantom.py): plan hash and shard 0 made by one worker thread.
PHANTOM_DEMO_PLAN_HASH = "0a56cd0e8c44e98afd6fdffc17a50beb254c1798e9591a1e540d1ec959498434"
PHANTOM_DEMO_SHARD0_SHA256 = {
    "AVX512": "3698691b022974e62a93f255034987cb8e57c554035ed5bc1a56255440e2d8d0",
}


def test_phantom_demo_plan_and_first_shard_are_pinned(tmp_path):
    from tests.lineage.conftest import REPO, build_dataset

    root = build_dataset(tmp_path / "demo-phantom", REPO / "specs" / "demo.yaml", shards=(0,))
    assert json.loads((root / "plan.json").read_text())["plan_hash"] == PHANTOM_DEMO_PLAN_HASH
    assert_pinned_shard(root / "raw" / "shard-000000.tar", PHANTOM_DEMO_SHARD0_SHA256,
                        "PHANTOM_DEMO_SHARD0_SHA256")
