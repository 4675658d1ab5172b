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
# sha256 of raw/shard-000000.tar of specs/demo.yaml, by torch CPU capability (torch 2.13 CPU).
DEMO_SHARD0_SHA256 = {
    "AVX512": "e7804591da62476bbc5556ce390ab77367622068f664d59e4dca4c80383d17de",
}


def test_demo_plan_hash_is_pinned(demo_dataset):
    assert json.loads((demo_dataset / "plan.json").read_text())["plan_hash"] == DEMO_PLAN_HASH


def test_demo_first_shard_bytes_are_pinned(demo_dataset):
    capability = torch.backends.cpu.get_cpu_capability()
    actual = sha256_file(demo_dataset / "raw" / "shard-000000.tar")
    assert capability in DEMO_SHARD0_SHA256, (
        f"no golden shard hash recorded for CPU capability {capability!r} (this machine gives "
        f"{actual}); add it to DEMO_SHARD0_SHA256 once the other pinned values agree")
    assert actual == DEMO_SHARD0_SHA256[capability], "the demo's bytes moved: say why in CHANGELOG.md"
