"""`lineage` follows a sample's whole chain; `reproduce` replays its batch and compares pixels."""

from __future__ import annotations

import io
import json
import random
import tarfile

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from synthdata.dataset.lineage import LineageError, lineage, render_lineage
from synthdata.dataset.records import screening_results
from synthdata.dataset.reproduce import reproduce
from synthdata.folder.shards import DeterministicTarWriter, encode_png
from tests.lineage.conftest import REJECTED, copy_dataset


def test_lineage_of_a_rejected_sample_names_nearest_real_id_and_score(screened_dataset):
    key = REJECTED[1]
    info = lineage(screened_dataset, key)
    json.dumps(info)  # the --json form
    written = screening_results(screened_dataset, key)[key]  # what screening wrote
    assert info["screening"]["decision"] == written["decision"] == "reject"
    assert info["screening"]["nearest_real_id"] == written["nearest_real_id"]
    assert written["nearest_real_id"] != written["nearest_real_ids"][1]
    assert info["screening"]["score"] == pytest.approx(1.0, abs=1e-4), "a planted exact copy"
    assert info["status"] == "reject (not in accepted shards)"
    assert info["plan"]["row"]["key"] == key and info["plan"]["row_matches_spec"] is True
    run = json.loads((screened_dataset / "run.json").read_text())
    assert info["plan"]["plan_hash"] == run["plan_hash"]
    assert info["spec"]["spec_hash"] == run["spec_hash"]
    assert info["model"]["fingerprint"] == run["model"]["fingerprint"]
    gen = info["generation"]
    assert gen["seed"] == info["plan"]["row"]["seed"] and gen["batch"] == 0
    assert key in gen["call_keys"] and gen["batch_size"] == len(gen["call_keys"])
    assert gen["device"] == "cpu" and gen["threads_per_worker"] == 1
    assert info["shard"]["index"] == 1 and info["shard"]["accepted_tar"] is None
    assert info["shard"]["raw_members"] == [f"{key}.{ext}" for ext in ("cls", "json", "png", "txt")]
    assert info["image"]["matches_record"] is True

    console = Console(record=True, width=200)
    console.print(render_lineage(info))
    text = console.export_text()
    assert written["nearest_real_id"] in text and "1.0000" in text and "reject" in text


def test_lineage_of_an_accepted_sample_names_its_accepted_tar(screened_dataset):
    info = lineage(screened_dataset, "demo-cxr-000000005")
    assert info["screening"]["decision"] == "accept"
    assert info["shard"]["accepted_tar"].endswith("shards/shard-000000.tar")
    assert "demo-cxr-000000005.png" in info["shard"]["accepted_members"]


def test_lineage_refuses_unknown_keys(screened_dataset):
    with pytest.raises(LineageError, match="not a key of dataset"):
        lineage(screened_dataset, "other-000000001")
    with pytest.raises(LineageError, match="has only 48 samples"):
        lineage(screened_dataset, "demo-cxr-000000999")


def test_reproduce_is_identical_for_random_samples(demo_dataset, tiny_generator):
    keys = [f"demo-cxr-{i:09d}" for i in random.Random(4).sample(range(32), 2)]
    for key in keys:
        result = reproduce(demo_dataset, key, generator=tiny_generator)
        assert result.identical, result.summary()
        assert result.max_abs_diff == 0 and result.png_bytes_identical
        assert result.model_matches is True and result.stored_matches_record is True
        assert key in result.call_keys and result.threads == 1


def _tamper(tar_path, key: str) -> None:
    """Rewrite the tar with KEY.png's pixels changed (a valid PNG, different bytes)."""
    with tarfile.open(tar_path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    with open(tar_path, "wb") as f:
        writer = DeterministicTarWriter(f)
        for name, data in members:
            if name == f"{key}.png":
                img = np.array(Image.open(io.BytesIO(data)))
                img[10:14, 10:14] ^= 0x40
                data = encode_png(img)
            writer.add(name, data)
        writer.close()


def test_reproduce_reports_a_tampered_sample_as_different(demo_dataset, tiny_generator, tmp_path):
    root = copy_dataset(demo_dataset, tmp_path / "demo-cxr")
    key = "demo-cxr-000000001"   # in a pipeline call of 2 (effusion): cheap to replay
    _tamper(root / "raw" / "shard-000000.tar", key)
    result = reproduce(root, key, generator=tiny_generator)
    assert not result.identical
    assert result.max_abs_diff == 64 and result.differing_pixels == 4 * 4 * 3
    assert result.stored_matches_record is False and not result.png_bytes_identical
    assert "DIFFERENT" in result.summary()
    untouched = reproduce(root, "demo-cxr-000000000", generator=tiny_generator, check_model=False)
    assert untouched.identical
