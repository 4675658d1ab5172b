"""Prompts from real report text (Indiana University reports): markers cleaned and flagged."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from cohort_helpers import INDIANA, REPO

from synthdata.plan import rows as plan
from synthdata.plan.cohort.columns import clean_text
from synthdata.plan.load import load_spec, load_spec_text
from synthdata.spec.cohort import TextClean


def test_the_indiana_example_cleans_and_flags_markers():
    spec = load_spec(REPO / "specs" / "cohort-indiana.yaml")
    rows = plan.derive_rows(spec, 0, plan.total_count(spec)).to_pandas()
    table = pd.read_csv(spec.cohort.table, dtype=str, keep_default_na=False)
    assert not rows["prompt"].str.contains("XXXX").any()
    raw = table["impression"].iloc[rows["source_row"].astype(int)].reset_index(drop=True)
    assert (rows["deid_markers"] == raw.str.contains("XXXX")).all()
    assert rows["deid_markers"].sum() >= 3, "the example shows flagged samples"
    for prompt, text in zip(rows["prompt"], raw):
        cleaned = re.sub(r" +([.,;:!?])", r"\1", re.sub(r"\s+", " ", text.replace("XXXX", ""))).strip()
        assert prompt == f"chest x-ray. {cleaned}"
    normal = rows[rows["label"] == "normal"]
    assert (table["problems"].iloc[normal["source_row"].astype(int)] == "normal").all()


def test_a_replacement_token_and_whole_extract(tmp_path):
    text = f"""\
name: iu
count: 600
cohort:
  table: {INDIANA}
  columns:
    impression: {{column: impression, text: {{replace_with: "[redacted]"}}}}
    indication: {{column: indication, text: {{}}, missing: none given}}
labels:
  cardiomegaly: {{where: '"Cardiomegaly" in problems or "Cardiomegaly/mild" in problems', prompts: ["{{impression}}"]}}
  other: {{where: 'true', prompts: ["{{indication}}: {{impression}}"]}}
generator: {{height: 64, width: 64}}
"""
    spec = load_spec_text(text)
    rows = plan.derive_rows(spec, 0, 600).to_pandas()
    table = pd.read_csv(INDIANA, dtype=str, keep_default_na=False)
    src = table.iloc[rows["source_row"].astype(int)].reset_index(drop=True)
    had = src["impression"].str.contains("XXXX") | src["indication"].str.contains("XXXX")
    assert (rows["deid_markers"] == had).all() and had.any()
    assert rows["prompt"].str.contains(r"\[redacted\]").sum() >= (src["impression"].str.contains("XXXX")).sum()
    assert not rows["prompt"].str.contains("XXXX").any()
    assert (rows[src["indication"] == ""]["prompt"].str.startswith("none given: ")).all()


@pytest.mark.parametrize("text,markers,replace,cleaned,found", [
    ("Normal chest x-XXXX.", ["xxxx"], "", "Normal chest x-.", True),
    ("Seen by Dr. ___ on ___ .", ["underscores"], "", "Seen by Dr. on.", True),
    ("Compared with [**2150-3-2**] film", ["brackets"], "[date]", "Compared with [date] film", True),
    ("No  acute\n findings .", ["xxxx", "underscores", "brackets"], "", "No acute findings.", False),
    ("XXXX XXXX effusion", ["underscores"], "", "XXXX XXXX effusion", False),
])
def test_clean_text(text, markers, replace, cleaned, found):
    assert clean_text(text, TextClean(markers=markers, replace_with=replace)) == (cleaned, found)
