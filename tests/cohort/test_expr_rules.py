"""The label expression language and the uncertain/missing rules of wide finding columns.

The wide table here is written by the test (CheXpert-style 1/0/-1/blank columns) to exercise
every rule on known rows; the real tables are in test_cohort_plan.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthdata.plan import rows as plan
from synthdata.plan.cohort import cohort_index, expr
from synthdata.plan.load import load_spec_text

ROWS = [  # Effusion, Pneumonia, Labels, Age, Sex
    ("1", "0", "Effusion|Infiltration", "34", "F"),
    ("1", "1", "Effusion", "71", "M"),
    ("-1", "0", "", "55", "M"),
    ("", "1", "Pneumonia", "", "F"),
    ("0", "-1", "No Finding", "29", "F"),
    ("1.0", "", "Effusion", "80", "M"),
]


def frame() -> expr.Frame:
    cols = list(zip(*ROWS))
    names = ["Effusion", "Pneumonia", "Finding Labels", "Patient Age", "Sex"]
    cells = {n: np.array(c, dtype=object) for n, c in zip(names, cols)}
    return expr.Frame(cells, {n: np.array([not v for v in c]) for n, c in cells.items()})


def run(text: str) -> list[int]:
    f = frame()
    return np.nonzero(expr.evaluate(expr.compile_expression(text, list(f.cells)), f))[0].tolist()


@pytest.mark.parametrize("text,rows", [
    ("Effusion == 1 and Pneumonia != 1", [0, 5]),
    ('"Effusion" in Finding_Labels', [0, 1, 5]),
    ('"Effusion" not in `Finding Labels`', [2, 3, 4]),
    ('"Infiltration" in Finding_Labels or Patient_Age >= 71', [0, 1, 5]),
    ("not Effusion == 1", [2, 3, 4]),
    ("Effusion != 1", [2, 3, 4]),
    ("is_missing(Effusion) or is_missing(Pneumonia)", [3, 5]),
    ('Sex in ["M"] and patient_age < 60', [2]),
    ("Patient_Age in [29, 34]", [0, 4]),
    ('Sex == "F" and (Effusion == 1 or Pneumonia == 1)', [0, 3]),
    ("true", [0, 1, 2, 3, 4, 5]),
    ("false or Pneumonia == -1", [4]),
    ("Patient_Age > Effusion", [0, 1, 2, 4, 5]),
])
def test_expressions_select_rows(text, rows):
    assert run(text) == rows


def test_missing_cells_equal_nothing():
    assert run("Patient_Age == 0") == [] and 3 in run("Patient_Age != 0")
    assert run('Finding_Labels == ""') == [], "a blank cell is missing, not the empty string"


def test_nothing_but_the_grammar_runs():
    for text in ['__import__("os")', "open('x').read() == 1", "Effusion.real == 1", "lambda: 1",
                 "Effusion == 1; x", "[c for c in x] == 1", "Effusion == 1 if 1 else 0"]:
        with pytest.raises(expr.ExprError):
            expr.compile_expression(text, ["Effusion", "x"])


WIDE_SPEC = """\
name: wide
count: {count}
cohort:
  table: {table}
  uncertain: {uncertain}
  missing: {missing}
  columns: {{sex: Sex}}
labels:
  effusion: {{where: 'Effusion == 1', prompts: ["{{sex}} effusion"]}}
  pneumonia: {{where: 'Pneumonia == 1', prompts: ["{{sex}} pneumonia"]}}
  normal: {{where: 'Effusion == 0 and Pneumonia == 0', prompts: ["{{sex}} normal"]}}
generator: {{height: 64, width: 64}}
"""


@pytest.mark.parametrize("uncertain,missing,labels,left_out", [
    ("exclude", "negative", {"effusion": [0, 1, 5], "pneumonia": [3], "normal": []},
     {"uncertain (-1) in Effusion": 1, "uncertain (-1) in Pneumonia": 1}),
    ("negative", "negative", {"effusion": [0, 1, 5], "pneumonia": [3], "normal": [2, 4]}, {}),
    ("positive", "negative", {"effusion": [0, 1, 2, 5], "pneumonia": [3, 4], "normal": []}, {}),
    ("negative", "exclude", {"effusion": [0, 1], "pneumonia": [], "normal": [2, 4]},
     {"blank in Effusion": 1, "blank in Pneumonia": 1}),
])
def test_uncertain_and_missing_rules(tmp_path, uncertain, missing, labels, left_out):
    table = tmp_path / "wide.csv"
    table.write_text("Effusion,Pneumonia,Finding Labels,Patient Age,Sex\n"
                     + "".join(",".join(r) + "\n" for r in ROWS))
    text = WIDE_SPEC.format(count=60, table=table, uncertain=uncertain, missing=missing)
    if not all(labels.values()):
        from synthdata.errors import SpecError

        with pytest.raises(SpecError) as info:
            load_spec_text(text)
        empty = [name for name, rows in labels.items() if not rows]
        assert [p.field for p in info.value.problems] == [f"labels.{n}.where" for n in empty]
        return
    spec = load_spec_text(text)
    index = cohort_index(spec)
    assert {n: r.tolist() for n, r in zip(spec.labels, index.label_rows)} == labels
    assert index.left_out == left_out and index.findings == ["Effusion", "Pneumonia"]
    rows = plan.derive_rows(spec, 0, 60).to_pandas()
    for label, want in labels.items():
        assert set(rows[rows["label"] == label]["source_row"].astype(int)) == set(want)


def test_first_matching_label_wins_and_overlaps_are_counted(tmp_path):
    table = tmp_path / "wide.csv"
    table.write_text("Effusion,Pneumonia,Finding Labels,Patient Age,Sex\n"
                     + "".join(",".join(r) + "\n" for r in ROWS))
    spec = load_spec_text(WIDE_SPEC.format(count=12, table=table, uncertain="negative", missing="negative"))
    index = cohort_index(spec)
    assert index.label_rows[0].tolist() == [0, 1, 5] and 1 not in index.label_rows[1]
    assert index.overlapping_rows == 1
