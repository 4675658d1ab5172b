"""Fixtures of the evaluation tests: constructed labelled sets and a small demo dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import labelled_images, write_imagefolder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "specs" / "demo-tiny.yaml"


@pytest.fixture(scope="session")
def real_folder(tmp_path_factory) -> Path:
    """An ImageFolder of 20 constructed pictures per demo label (effusion, normal, pneumonia)."""
    return write_imagefolder(tmp_path_factory.mktemp("real") / "cxr-real", labelled_images(20))


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory) -> Path:
    """Shards 0 and 1 of specs/demo-tiny.yaml (32 images of the built-in tiny model), raw only."""
    from synthdata.generation.fingerprint import model_fingerprint
    from synthdata.dataset.prepare import prepare
    from synthdata.plan.load import load_spec
    from synthdata.generation.worker import JobInfo, generate_shard, job_as_dict

    out = tmp_path_factory.mktemp("eval-demo") / "demo-cxr"
    spec = load_spec(DEMO_SPEC)
    prepared = prepare(out, spec)
    job = job_as_dict(JobInfo(prepared.spec_hash, prepared.plan_hash,
                              model_fingerprint(spec.generator).fingerprint))
    for shard in (0, 1):
        generate_shard(spec.model_dump(mode="json"), str(out), shard, job, threads=1)
    return out
