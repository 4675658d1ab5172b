"""FAISS index choice, recall measurement, and the reference cache (reuse and extension)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from screening_helpers import pydicom_dir

from synthdata.screening import index as ix
from synthdata.screening.cache import prepare_reference, screening_cache
from synthdata.screening.embedders import l2_normalise
from synthdata.screening.embedder_factory import get_embedder
from synthdata.screening.reference import ReaderOptions


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    centres = np.random.default_rng(1234).standard_normal((clusters, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    return l2_normalise(x.astype(np.float32))


def test_choice_by_size_and_memory_budget():
    assert ix.choose_index(1000, 512, exact_limit=1000).kind == "flat"
    assert ix.choose_index(1001, 512, exact_limit=1000).kind == "hnsw"
    plan = ix.choose_index(10**6, 512, exact_limit=1000, memory_gb=1.0)
    assert plan.kind == "ivfpq" and 512 % plan.params["m"] == 0


def test_hnsw_is_tuned_to_the_recall_target_and_records_it():
    x = clustered(4000, 32)
    plan = ix.choose_index(len(x), 32, exact_limit=100)
    index = ix.build_index(x, plan)
    info = ix.tune(index, x, plan)
    assert info["kind"] == "hnsw" and info["recall_at_1"] >= 0.99
    q = clustered(200, 32, seed=1)
    assert ix.recall_at_1(index, x, queries=q) >= 0.97


def test_ivfpq_is_reranked_exactly_and_its_recall_measured():
    x = clustered(1500, 32)
    plan = ix.IndexChoice("ivfpq", 32, {"nlist": 16, "m": 8, "nbits": 4, "nprobe": 1})
    index = ix.build_index(x, plan)
    info = ix.tune(index, x, plan)
    assert info["recall_at_1"] >= 0.8 and info["recall_sample"] == 1000  # coarse 4-bit codes
    sims, ids = index.search(x[:5], 3)
    assert np.allclose(sims, np.take_along_axis(x[:5] @ x.T, ids, axis=1), atol=1e-5)


def test_search_pads_when_asking_for_more_than_indexed():
    x = clustered(3, 8)
    sims, ids = ix.build_index(x, ix.IndexChoice("flat", 8)).search(x, 5)
    assert ids.shape == (3, 5) and (ids[:, 3:] == -1).all() and np.isneginf(sims[:, 3:]).all()
    assert (ids[:, 0] == np.arange(3)).all()


def _npz_count() -> int:
    return len(list((screening_cache() / "files").rglob("*.npz")))


def test_reference_cache_is_reused_and_extended(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHDATA_CACHE", str(tmp_path / "cache"))  # counts below need a fresh cache
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm"):
        shutil.copy(pydicom_dir() / name, ref / name)
    emb = get_embedder("pixel")
    kwargs = {"options": ReaderOptions(), "exact_limit": 0, "memory_gb": 1.0}  # force HNSW
    before = _npz_count()
    first = prepare_reference([str(ref)], emb, **kwargs)
    assert first.meta["built"]["from"] == "new" and first.meta["index"]["kind"] == "hnsw"
    assert _npz_count() == before + 3
    again = prepare_reference([str(ref)], emb, **kwargs)
    assert again.handle == first.handle and again.meta["built"] == first.meta["built"]
    shutil.copy(pydicom_dir() / "image_dfl.dcm", ref / "image_dfl.dcm")
    grown = prepare_reference([str(ref)], emb, **kwargs)
    assert grown.handle.key != first.handle.key
    assert grown.meta["built"] == {**grown.meta["built"], "from": f"extended {first.handle.key}",
                                   "added": 1}
    assert _npz_count() == before + 4  # only the new file was embedded
    ids = [str(i) for i in np.load(f"{grown.handle.path}/ids.npy")]
    assert ids == ["ref/CT_small.dcm", "ref/MR_small.dcm", "ref/examples_overlay.dcm",
                   "ref/image_dfl.dcm"]
    assert len(grown.nn_sims) == 4  # calibration: each image vs another file
    meta = json.loads(Path(grown.handle.path, "meta.json").read_text())
    assert set(meta["files"]) == {f"ref/{p.name}" for p in ref.iterdir()}


def test_tuning_holds_a_sample_out_of_the_build():
    x = clustered(5000, 32)
    plan = ix.choose_index(len(x), 32, exact_limit=100)
    index, order, info = ix.build_tuned(x, plan)
    assert sorted(order) == list(range(5000)) and index.ntotal == 5000
    assert info["recall_queries"] == "held out" and info["recall_at_1"] >= 0.99
    _, ids = index.search(x[order[-5:]], 1)  # held-out rows were added last
    assert ids[:, 0].tolist() == list(range(4995, 5000))


def test_near_duplicates_through_an_approximate_index():
    from synthdata.screening.decide import near_duplicates

    x = clustered(4500, 32)
    x[4000] = x[17]
    dup_of, _ = near_duplicates(x, [f"k{i}" for i in range(len(x))], 0.999, exact_limit=100)
    assert dup_of[17] == "k4000" and dup_of[4000] == "k17"
