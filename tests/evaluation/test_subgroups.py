"""Per-label and per-attribute fidelity: shared attributes, age decades, intervals only where n
allows, and the real table's columns read as attributes (a `synthdata phantoms` set: procedural,
not clinical data). Features are seeded Gaussian draws."""

from __future__ import annotations

import numpy as np

from synthdata.evaluation.fidelity import per_label, separability
from synthdata.evaluation.realset import load_real_set
from synthdata.evaluation.subgroups import MIN_N_FIGURES, MIN_N_INTERVAL, bucket, subgroups


def test_ages_become_decades_and_names_match_loosely():
    assert bucket("Age", "47") == "40-49" and bucket("age", 90.0) == "90-99"
    assert bucket("view", " PA ") == "PA" and bucket("sex", None) is None and bucket("sex", "nan") is None


def test_subgroups_report_n_per_side_and_intervals_only_where_n_allows():
    rng = np.random.default_rng(0)
    n_real, n_syn = 400, 115
    real_attrs = [{"Sex": "female" if i % 2 else "male", "age": str(20 + i % 60), "study_uid": str(i)}
                  for i in range(n_real)]
    syn_attrs = [{"sex": "female" if i < 100 else "male", "age": str(30 + i % 5),
                  "study_uid": str(i)} for i in range(n_syn)]        # 100 female, 15 male
    real_x = rng.normal(size=(n_real, 8))
    syn_x = rng.normal(size=(n_syn, 8))
    syn_x[100:] += 2.0                                   # the model is worse for male patients
    groups = [f"p{i // 2}" for i in range(n_real)]
    out = subgroups(real_x, real_attrs, groups, syn_x, syn_attrs, resamples=30)
    female, male = out["sex"]["female"], out["sex"]["male"]
    assert female["n_real"] == 200 and female["n_synthetic"] == 100 and male["n_synthetic"] == 15
    assert female["fid_ci"] is not None and female["fid_ci"][0] <= female["fid"] <= female["fid_ci"][1]
    assert male["fid_ci"] is None and str(MIN_N_INTERVAL) in male["note"]     # 15 < 20: no interval
    assert male["fid"] > female["fid_ci"][1]
    # at the common n (15 synthetic, 200 real each) the two compare on the same footing
    assert out["sex"]["common_n"] == {"real": 200, "synthetic": 15}
    assert male["fid_common_n"] > female["fid_common_n"] > female["fid"]   # small n inflates FID
    assert set(out["age"]) == {"30-39", "20-29", "40-49", "50-59", "60-69", "70-79"} & set(out["age"])
    assert out["age"]["30-39"]["n_synthetic"] == n_syn
    assert "study_uid" not in out and any("study_uid" in n for n in out["notes"])  # an identifier
    tiny = subgroups(real_x[:20], real_attrs[:20], groups[:20], syn_x[:5], syn_attrs[:5])
    assert tiny["sex"]["female"]["note"].startswith("n too small") and "fid" not in tiny["sex"]["female"]
    assert MIN_N_FIGURES > 5


def test_per_label_says_when_there_is_no_interval():
    rng = np.random.default_rng(1)
    real_x, syn_x = rng.normal(size=(160, 6)), rng.normal(size=(90, 6))
    real_l = ["a"] * 100 + ["b"] * 60
    syn_l = ["a"] * 75 + ["b"] * 15
    out = per_label(real_x, real_l, [str(i) for i in range(160)], syn_x, syn_l, seed=0)
    assert out["a"]["fid_ci"] is not None and out["b"]["fid_ci"] is None
    assert any("no FID interval" in n for n in out["b"]["notes"])


def test_separability_warns_below_the_measured_n_and_when_the_floor_is_reached():
    quiet = separability(200, 30.0, [28.0, 33.0], {"fid": 8.0, "fid_std": 2.0})
    assert quiet["warnings"] == []
    small = separability(10, 30.0, [10.0, 60.0], {"fid": 8.0, "fid_std": 2.0})
    assert len(small["warnings"]) == 3       # n, a wide interval, and the floor within reach


def test_phantom_table_columns_become_real_attributes(tmp_path):
    from synthdata.phantoms import write_phantoms

    write_phantoms(tmp_path / "ph", count=6, seed=2, size=32)
    item = load_real_set(tmp_path / "ph").items[0]
    attrs = item.attributes()
    assert {"sex", "age", "view"} <= set(attrs) and "path" not in attrs and "label" not in attrs
    assert "patient_id" not in attrs                     # the group column is the patient
