"""Real labels in three layouts, label mapping, and the utility protocol's numbers.

Images are the constructed pictures of helpers.py (not clinical data)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import labelled_images, write_imagefolder, write_table, write_webdataset
from sklearn.metrics import roc_auc_score

from synthdata.evaluation.realset import RealSetError, load_real_set, read_images, split_items
from synthdata.evaluation.utility import LabelMappingError, auc_matrix, match_labels, utility

ITEMS = labelled_images(4, seed=1)


def _by_label(real) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for item, image in zip(real.items, read_images(real.items)):
        out.setdefault(item.label, []).append(image.tobytes())
    return {k: sorted(v) for k, v in out.items()}


def test_three_layouts_give_the_same_labelled_images(tmp_path):
    expected = {}
    for _, label, image in ITEMS:
        expected.setdefault(label, []).append(image.tobytes())
    expected = {k: sorted(v) for k, v in expected.items()}
    layouts = {
        "imagefolder": write_imagefolder(tmp_path / "folder", ITEMS),
        "table": write_table(tmp_path / "table", ITEMS),                     # folder with metadata.csv
        "table-parquet": write_table(tmp_path / "parquet", ITEMS, "parquet"),  # a .parquet file
        "webdataset": write_webdataset(tmp_path / "wds", ITEMS, per_tar=5),
        "webdataset-cls": write_webdataset(tmp_path / "wds-cls", ITEMS, per_tar=7, label_in="cls"),
    }
    for name, ref in layouts.items():
        real = load_real_set(ref)
        assert real.layout == name.split("-")[0], name
        assert real.counts() == {"effusion": 4, "normal": 4, "pneumonia": 4}, name
        assert _by_label(real) == expected, name
        assert len(real.fingerprint) == 64
    assert load_real_set(layouts["table"]).fingerprint == load_real_set(tmp_path / "table").fingerprint


def test_table_groups_by_patient_and_split_keeps_patients_together(tmp_path):
    real = load_real_set(write_table(tmp_path / "t", labelled_images(10, seed=2)))
    a, b = split_items(real.items, 0.3, seed=0)
    assert sorted(a + b) == list(range(len(real.items)))
    groups_a = {real.items[i].group for i in a}
    assert groups_a.isdisjoint({real.items[i].group for i in b})
    assert {real.items[i].label for i in b} == {"effusion", "normal", "pneumonia"}
    assert split_items(real.items, 0.3, seed=0) == (a, b)


def test_fingerprint_follows_content(tmp_path):
    ref = write_imagefolder(tmp_path / "f", ITEMS)
    before = load_real_set(ref).fingerprint
    path = next((ref / "normal").glob("*.png"))
    path.write_bytes(path.read_bytes() + b"\0")
    assert load_real_set(ref).fingerprint != before


def test_bad_tables_are_named(tmp_path):
    import pandas as pd

    (tmp_path / "bad").mkdir()
    pd.DataFrame({"file": ["a.png"], "label": ["x"]}).to_csv(tmp_path / "bad" / "metadata.csv")
    with pytest.raises(RealSetError, match=r"metadata.csv: missing column\(s\) path"):
        load_real_set(tmp_path / "bad")
    with pytest.raises(RealSetError, match="not found"):
        load_real_set(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RealSetError, match="no labelled images"):
        load_real_set(tmp_path / "empty")


def test_labels_match_by_name_and_unmatched_are_named():
    assert match_labels(["Pleural-Effusion", "normal"], ["normal", "pleural_effusion", "nodule"]) == \
        {"Pleural-Effusion": "pleural_effusion", "normal": "normal"}
    with pytest.raises(LabelMappingError, match="pneumonia, tumour have no real counterpart"):
        match_labels(["normal", "pneumonia", "tumour"], ["normal", "effusion"])


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((5, 60)), 1)            # many ties
    labels = rng.random((5, 60)) < 0.4
    ours = auc_matrix(scores, labels)
    for row in range(5):
        assert ours[row] == pytest.approx(roc_auc_score(labels[row], scores[row]), abs=1e-12)
    assert np.isnan(auc_matrix(scores[:1], np.zeros((1, 60), bool))[0])


def _blobs(seed: int, n: int, shift: float):
    rng = np.random.default_rng(seed)
    labels = [("a", "b", "c")[i % 3] for i in range(n)]
    centre = {"a": 0.0, "b": 1.0, "c": 2.0}
    x = rng.normal(size=(n, 12)) + np.array([[centre[v] * shift] * 12 for v in labels])
    return x, labels


def test_utility_is_deterministic_and_sees_signal():
    xr, yr = _blobs(0, 90, 0.6)
    xt, yt = _blobs(1, 60, 0.6)
    xs, ys = _blobs(2, 120, 0.6)
    first = utility(xr, yr, xt, yt, xs, ys, seed=5, bootstrap=200)
    again = utility(xr, yr, xt, yt, xs, ys, seed=5, bootstrap=200)
    assert first == again
    for name in ("real", "synthetic", "real_plus_synthetic"):
        v = first[name]
        assert v["ci_low"] <= v["auc"] <= v["ci_high"]
        assert v["auc"] > 0.8
        assert set(v["per_label"]) == {"a", "b", "c"}
    assert set(first["real_limited"]) == {"10%", "25%"}
    assert first["real_limited"]["10%"]["n_train"] == 9 and first["real_limited"]["25%"]["n_train"] == 24
    assert first["real_plus_synthetic"]["n_train"] == 210
    swapped = [{"a": "c", "c": "a"}.get(v, v) for v in ys]   # synthetic images of the wrong label
    wrong = utility(xr, yr, xt, yt, xs, swapped, seed=5, bootstrap=200)
    assert wrong["synthetic"]["ci_high"] < 0.5 < first["synthetic"]["ci_low"]
    assert wrong["real"] == first["real"]
    other_seed = utility(xr, yr, xt, yt, xs, ys, seed=6, bootstrap=200)
    assert other_seed["real"]["ci_low"] != first["real"]["ci_low"]


def test_synthdata_phantoms_output_works_as_is(tmp_path):
    """`synthdata phantoms` (procedural phantoms, not clinical data) is a table-layout real set."""
    from synthdata.phantoms import write_phantoms

    write_phantoms(tmp_path / "phantoms", count=40, seed=3, size=64)
    real = load_real_set(tmp_path / "phantoms")
    assert real.layout == "table" and len(real.items) == 40
    assert set(real.labels) == {"normal", "effusion", "consolidation", "nodule", "cardiomegaly"}
    assert all(item.group.startswith("PH") for item in real.items)        # patient ids
    a, b = split_items(real.items, 0.5, seed=1)
    assert {real.items[i].group for i in a}.isdisjoint({real.items[i].group for i in b})
    assert next(read_images(real.items[:1])).shape == (64, 64)
