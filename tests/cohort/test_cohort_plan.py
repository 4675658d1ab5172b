"""Cohort plans on the real NIH ChestX-ray14 extract: distributions, source rows, determinism."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from cohort_helpers import NIH, nih_spec_text
from scipy.stats import chisquare

from synthdata import privacy
from synthdata.plan import rows as plan
from synthdata.spec import resolved_yaml, spec_hash
from synthdata.plan.load import load_spec_text
from tests.conftest import DEMO_SPEC

TABLE = pd.read_csv(NIH, dtype=str, keep_default_na=False)


def table_label(findings: str) -> str:
    """The label the spec's first-match rule gives a row, computed independently here."""
    items = findings.split("|")
    if findings == "No Finding":
        return "normal"
    return "effusion" if "Effusion" in items else "infiltration" if "Infiltration" in items else "other"


def decade(age: str) -> str:
    lo = int(age) // 10 * 10
    return f"{lo}-{lo + 9}"


@pytest.fixture(scope="module")
def mirror():
    spec = load_spec_text(nih_spec_text(5000))
    return spec, plan.derive_rows(spec, 0, 5000).to_pandas()


def test_golden_demo_plan_and_spec_hash_unchanged():
    """Specs without a cohort plan byte-for-byte as before cohorts existed."""
    from synthdata.plan.load import load_spec

    spec = load_spec(DEMO_SPEC)
    assert plan.plan_hash(spec) == "f7b2c5aa39f05371347de0e81c1eecb2457749ad08aa20547767dea5526c71ca"
    assert spec_hash(spec) == "fbe6e97a64ddc24742b223714fdbeccd7a3a3fe545e7b6b65cf75ef0050e8f91"
    assert plan.plan_schema(spec) == plan.PLAN_SCHEMA


def test_mirror_matches_the_table_label_sex_age_decade_distribution(mirror):
    """Chi-square goodness of fit of the plan's label x sex x decade cells to the table's."""
    _, rows = mirror
    variables = rows["vars"].map(json.loads)
    planned = Counter(zip(rows["label"], variables.map(lambda v: v["sex"]),
                          variables.map(lambda v: v["decade"])))
    sex = TABLE["Patient Gender"].map({"M": "male", "F": "female"})
    table = Counter(zip(TABLE["Finding Labels"].map(table_label), sex, TABLE["Patient Age"].map(decade)))
    big = sorted(c for c in table if table[c] * 5000 / len(TABLE) >= 5)
    observed = [planned.get(c, 0) for c in big] + [5000 - sum(planned.get(c, 0) for c in big)]
    expected = [table[c] * 5000 / len(TABLE) for c in big]
    expected.append(5000 - sum(expected))
    assert set(planned) <= set(table), "no sample outside the table's cells"
    assert len(big) > 40
    stat, p = chisquare(observed, expected)
    assert p > 0.05, (stat, p)
    shares = np.array(observed) / 5000 - np.array(expected) / 5000
    assert 0.5 * np.abs(shares).sum() < 0.02, "total variation distance"


def test_each_sample_takes_its_source_rows_values(mirror):
    _, rows = mirror
    sex = {"M": "male", "F": "female"}
    for r in rows.sample(400, random_state=0).itertuples():
        src = TABLE.iloc[int(r.source_row)]
        v = json.loads(r.vars)
        assert v == {"sex": sex[src["Patient Gender"]], "age": src["Patient Age"],
                     "decade": decade(src["Patient Age"]), "view": src["View Position"]}
        assert r.label == table_label(src["Finding Labels"])
        assert r.prompt.startswith(f"{src['View Position']} x-ray, {src['Patient Age']}")
    assert rows["source_patient"].isna().all() and not rows["deid_markers"].any()


def test_every_row_is_used_before_any_is_reused(mirror):
    """5000 samples over 3000 rows: each row once or twice, never three times."""
    _, rows = mirror
    uses = Counter(rows["source_row"])
    assert len(uses) == len(TABLE) and set(uses.values()) == {1, 2}


def test_mirror_without_count_uses_each_row_once():
    spec = load_spec_text(nih_spec_text(None))
    rows = plan.derive_rows(spec, 0, plan.total_count(spec)).to_pandas()
    assert len(rows) == len(TABLE) and rows["source_row"].astype(int).is_unique
    assert Counter(rows["label"]) == Counter(TABLE["Finding Labels"].map(table_label))


def test_cohort_plan_is_deterministic_and_chunk_independent(tmp_path):
    spec = load_spec_text(nih_spec_text(700, shards=64))
    h_small = plan.write_plan(spec, tmp_path / "a.parquet", chunk_rows=13)
    h_big = plan.write_plan(spec, tmp_path / "b.parquet", chunk_rows=65536)
    assert h_small == h_big == plan.plan_hash(spec) == plan.plan_hash(load_spec_text(nih_spec_text(700, shards=64)))
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.equals(b) and "source_row" in a.column_names and "deid_markers" in a.column_names
    full = a.to_pylist()
    for i in (0, 1, 350, 699):
        assert plan.derive_rows(spec, i, i + 1).to_pylist() == [full[i]]
    other_seed = plan.derive_rows(load_spec_text(nih_spec_text(700, seed=8, shards=64)), 0, 700)
    assert other_seed.column("source_row").to_pylist() != a.column("source_row").to_pylist()


def test_patient_tables_give_pseudonyms_outside_the_plan_hash(tmp_path, monkeypatch):
    extra = "patient_column: Patient ID\n"
    monkeypatch.setenv(privacy.KEY_ENV, "11" * 32)
    spec = load_spec_text(nih_spec_text(300, extra_cohort=extra))
    h1 = plan.write_plan(spec, tmp_path / "p1.parquet")
    rows1 = pq.read_table(tmp_path / "p1.parquet").to_pandas()
    monkeypatch.setenv(privacy.KEY_ENV, "22" * 32)
    h2 = plan.write_plan(spec, tmp_path / "p2.parquet")
    rows2 = pq.read_table(tmp_path / "p2.parquet").to_pandas()
    plain = plan.derive_rows(load_spec_text(nih_spec_text(300)), 0, 300).to_pandas()
    assert h1 == h2 == plan.plan_hash(load_spec_text(nih_spec_text(300))), \
        "the plan hash does not depend on the machine's pseudonym key"
    assert (rows1["source_row"] != rows2["source_row"]).all()
    assert rows2["source_row"].str.match(r"^p-[0-9a-f]{16}$").all()
    assert rows2["vars"].equals(plain["vars"]) and rows2["seed"].equals(plain["seed"])
    raw_text = (tmp_path / "p2.parquet").read_bytes()
    assert b"00000034_000.png" not in raw_text
    for r, number in zip(rows2.head(20).itertuples(), plain["source_row"].head(20)):
        kind, value = privacy.reveal(r.source_row)
        assert kind == "cohort-row" and value == f"{spec.cohort.sha256}:{number}"
        patient = TABLE.iloc[int(number)]["Patient ID"]
        assert r.source_patient == privacy.pseudonymize(patient, "patient")
        assert privacy.reveal(r.source_patient) == ("patient", patient)


def test_explicit_counts_with_stratified_draws_are_exact():
    extra = "mode: explicit\nstratify: {by: [sex], allocation: equal}\n"
    labels = """\
labels:
  effusion: {count: 41, where: '"Effusion" in Finding_Labels', prompts: ["{sex} {age}"]}
  normal: {count: 40, where: 'Finding_Labels == "No Finding"', prompts: ["{sex} {age}"]}
"""
    spec = load_spec_text(nih_spec_text(None, extra_cohort=extra, labels=labels))
    rows = plan.derive_rows(spec, 0, 81).to_pandas()
    sexes = Counter(zip(rows["label"], rows["vars"].map(lambda v: json.loads(v)["sex"])))
    assert sexes == {("effusion", "female"): 21, ("effusion", "male"): 20,
                     ("normal", "female"): 20, ("normal", "male"): 20}
    prop = load_spec_text(nih_spec_text(None, labels=labels, extra_cohort=extra.replace("equal", "proportional")))
    rows = plan.derive_rows(prop, 0, 81).to_pandas()
    eff = TABLE[TABLE["Finding Labels"].str.split("|").map(lambda s: "Effusion" in s)]
    want = plan.apportion(41, [int((eff["Patient Gender"] == "F").sum()), int((eff["Patient Gender"] == "M").sum())])
    got = Counter(json.loads(v)["sex"] for v, lbl in zip(rows["vars"], rows["label"]) if lbl == "effusion")
    assert [got["female"], got["male"]] == want


def test_table_content_is_part_of_the_spec_hash(tmp_path):
    table = tmp_path / "nih.csv"
    table.write_bytes(NIH.read_bytes())
    spec = load_spec_text(nih_spec_text(100, table=table))
    assert spec.cohort.sha256 and spec.cohort.table == str(table)
    again = load_spec_text(resolved_yaml(spec))
    assert spec_hash(again) == spec_hash(spec), "the resolved spec reloads as the same dataset"
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "nih.csv"
    moved.write_bytes(NIH.read_bytes())
    assert spec_hash(load_spec_text(nih_spec_text(100, table=moved))) == spec_hash(spec), \
        "the table's folder is not part of the hash (its name and content are)"
    table.write_text(NIH.read_text().replace("00000034_000.png,Emphysema,0,34,73,",
                                             "00000034_000.png,Emphysema,0,34,74,"))
    assert spec_hash(load_spec_text(nih_spec_text(100, table=table))) != spec_hash(spec)
    from synthdata.errors import SpecError

    with pytest.raises(SpecError) as info:
        load_spec_text(resolved_yaml(spec), source="DIR/spec.yaml")
    problem = info.value.problems[0]
    assert problem.field == "cohort.sha256" and "changed since the spec was resolved" in problem.message


def test_table_path_is_taken_from_the_spec_files_folder(tmp_path):
    from synthdata.plan.load import load_spec

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_bytes(NIH.read_bytes())
    (tmp_path / "s.yaml").write_text(nih_spec_text(10, table="data/t.csv"))
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.cohort.table == str(tmp_path / "data" / "t.csv")


def test_attempt_seeds_extend_the_planned_seed():
    spec = load_spec_text(nih_spec_text(50))
    rows = plan.derive_rows(spec, 0, 50).to_pandas()
    idx = rows["index"].to_numpy()
    assert (plan.attempt_seed(spec.seed, idx, 0) == rows["seed"].to_numpy()).all()
    assert plan.attempt_seed(spec.seed, 3, 0) == int(rows["seed"][3])
    seeds = {plan.attempt_seed(spec.seed, i, a) for i in range(50) for a in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert plan.attempt_seed(spec.seed, 7, 2) == plan.attempt_seed(spec.seed, 7, 2)
    assert plan.attempt_seed(spec.seed + 1, 7, 2) != plan.attempt_seed(spec.seed, 7, 2)
    assert (plan.attempt_seed(spec.seed, idx, 2) == [plan.attempt_seed(spec.seed, int(i), 2) for i in idx]).all()
