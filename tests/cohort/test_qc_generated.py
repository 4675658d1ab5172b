"""The cohort demo's QC checks on images the real tiny pipeline generated (one shard)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
from PIL import Image

from synthdata.plan import rows as plan
from synthdata.qc import build_checks, run_checks


def shard_samples(out):
    with tarfile.open(out / "raw" / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    keys = sorted(k[:-4] for k in members if k.endswith(".png"))
    images = [np.asarray(Image.open(io.BytesIO(members[f"{k}.png"]))) for k in keys]
    return keys, images


def test_demo_checks_on_generated_images(generated_cohort):
    spec, out = generated_cohort
    keys, images = shard_samples(out)
    rows = plan.shard_rows(spec, 0).to_pylist()
    assert [r["key"] for r in rows] == keys
    checks = build_checks(spec.qc)
    assert [c.name for c in checks] == ["non_finite", "blank", "saturated", "dynamic_range", "near_duplicate"]
    results = run_checks(checks, images, rows)
    assert len(results) == 16 and all(len(r.results) == 5 for r in results)
    assert all(r.results[1].passed and r.results[2].passed for r in results), "noise is neither blank nor saturated"
    assert all(not r.passed or r.reason == "" for r in results)
    ranges = [r.results[3].value for r in results]
    assert [r.results[3].passed for r in results] == [v >= 121 for v in ranges]
    planted = rows + [{**rows[0], "key": "planted", "index": 99}]
    again = run_checks(checks, images + [images[0]], planted)
    assert not again[-1].passed and "near-duplicate of " + rows[0]["key"] in again[-1].reason
    assert json.dumps([r.as_dict() for r in again]), "JSON-able for lineage"
