"""Built-in QC checks: pure functions over images and plan rows, each failing with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from synthdata.errors import SpecError
from synthdata.qc import build_checks, run_checks
from synthdata.qc.checks import blank, dynamic_range, near_duplicates, non_finite, saturated
from synthdata.plan.load import load_spec_text

RNG = np.random.default_rng(0)
NOISE = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
SMOOTH = np.tile(np.linspace(40, 200, 64, dtype=np.uint8), (64, 1))


def test_blank():
    assert not blank(np.full((64, 64, 3), 17, np.uint8)).passed
    r = blank(np.full((32, 32), 0, np.uint8))
    assert not r.passed and r.reason == "blank or constant image: gray-level std 0.00 < 2" and r.value == 0
    assert blank(NOISE).passed and blank(SMOOTH).passed
    assert not blank(SMOOTH // 64 + 100, min_std=1.0).passed


def test_saturated():
    img = NOISE.copy()
    img[:40] = 255
    r = saturated(img)
    assert not r.passed and "62.5% of pixels saturated" in r.reason and "> 50%" in r.reason
    assert saturated(img, max_fraction=0.7).passed
    dark = np.zeros((10, 10), np.uint8)
    dark[0, 0] = 9
    assert not saturated(dark, low=8).passed and saturated(dark, low=0, max_fraction=0.995).passed
    assert saturated(NOISE).passed


def test_non_finite():
    f = np.full((8, 8, 3), 0.5, np.float32)
    assert non_finite(f).passed and non_finite(NOISE).passed
    f[2, 3, 1] = np.nan
    f[0, 0, 0] = np.inf
    r = non_finite(f)
    assert not r.passed and r.reason == "2 of 192 values are NaN or infinite"


def test_dynamic_range():
    narrow = (np.arange(64 * 64).reshape(64, 64) % 20 + 100).astype(np.uint8)
    r = dynamic_range(narrow)
    assert not r.passed and "low dynamic range: p1-p99 spans 19.0 gray levels < 32" == r.reason
    assert dynamic_range(SMOOTH).passed and dynamic_range(narrow, min_range=10).passed
    spike = np.full((64, 64), 100, np.uint8)
    spike[:2, :2] = 255
    assert not dynamic_range(spike).passed, "a few outliers do not make a range"
    assert dynamic_range(spike, low_percentile=0, high_percentile=100).passed


def rows_for(labels, batches=None):
    return [{"key": f"k{i}", "index": i, "label": lbl, "batch": (batches or [0] * len(labels))[i]}
            for i, lbl in enumerate(labels)]


def test_near_duplicates_same_label_only_and_the_earliest_passes():
    other = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    brighter = np.clip(NOISE.astype(int) + 20, 0, 255).astype(np.uint8)
    images = [brighter, NOISE, other, NOISE, NOISE]
    rows = rows_for(["a", "a", "a", "b", "a"])
    rows[0]["index"], rows[1]["index"] = 10, 1   # the brighter copy comes later in the plan
    out = near_duplicates(images, rows)
    assert [r.passed for r in out] == [False, True, True, True, False]
    assert out[0].reason.startswith("near-duplicate of k1 (cosine 0.99") and out[4].value > 0.999
    assert "first sample of its label" in out[3].reason
    assert out[2].value < 0.2
    by_batch = near_duplicates(images, rows_for(["a"] * 5, [0, 1, 1, 2, 2]), scope="batch")
    assert [r.passed for r in by_batch] == [True, True, True, True, False]


def test_run_checks_collects_every_reason():
    checks = build_checks(load_spec_text(SPEC).qc)
    assert [c.name for c in checks] == ["blank", "saturated", "non_finite", "dynamic_range", "near_duplicate"]
    flat = np.full((64, 64, 3), 128, np.uint8)
    results = run_checks(checks, [NOISE, flat, NOISE], rows_for(["a", "a", "a"]))
    assert [r.passed for r in results] == [True, False, False]
    assert results[1].reason.startswith("blank: blank or constant image") and "dynamic_range:" in results[1].reason
    assert results[2].reason.startswith("near_duplicate: near-duplicate of k0")
    assert results[0].as_dict()["passed"] and len(results[0].as_dict()["results"]) == 5
    with pytest.raises(ValueError):
        run_checks(checks, [NOISE], rows_for(["a", "a"]))


SPEC = """\
name: q
count: 8
labels: {a: {prompts: [x]}}
generator: {height: 64, width: 64}
qc:
  max_attempts: 4
  top_up: false
  checks:
    - {check: blank}
    - {check: saturated, max_fraction: 0.4}
    - {check: non_finite}
    - {check: dynamic_range, min_range: 20}
    - {check: near_duplicate, threshold: 0.9, scope: batch}
"""


def test_qc_section_validates_and_leaves_older_specs_alone():
    spec = load_spec_text(SPEC)
    assert spec.qc.max_attempts == 4 and not spec.qc.top_up and len(spec.qc.checks) == 5
    with pytest.raises(SpecError) as info:  # top-up regenerates screening rejects: no reference, no top-up
        load_spec_text(SPEC.replace("top_up: false", "top_up: true"), source="q.yaml")
    problem = info.value.problems[0]
    assert (problem.field, problem.line) == ("qc.top_up", 7)
    assert "memorization.reference is empty" in problem.message
    from synthdata.spec import resolved_yaml

    assert "qc:" in resolved_yaml(spec) and load_spec_text(resolved_yaml(spec)) == spec
    assert "qc" not in resolved_yaml(load_spec_text(SPEC.split("qc:")[0]))


@pytest.mark.parametrize("edit,field,fragment", [
    ("{check: blank}", "qc.checks.0", "does not match any of the expected tags"),
    ("max_attempts: 4", "qc.max_attempts", "greater than or equal to 1"),
    ("min_range: 20", "qc.checks.3.min_range", "less than or equal to 255"),
    ("scope: batch", "qc.checks.4.scope", "'batch' or 'shard'"),
    ("max_fraction: 0.4", "qc.checks.1.colour", "unknown field"),
])
def test_bad_qc_sections(edit, field, fragment):
    bad = {"{check: blank}": "{check: blnk}", "max_attempts: 4": "max_attempts: 0",
           "min_range: 20": "min_range: 300", "scope: batch": "scope: dataset",
           "max_fraction: 0.4": "max_fraction: 0.4, colour: red"}[edit]
    with pytest.raises(SpecError) as info:
        load_spec_text(SPEC.replace(edit, bad), source="q.yaml")
    problem = info.value.problems[0]
    assert problem.field == field and fragment in problem.message and problem.line is not None
