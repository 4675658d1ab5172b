"""Bad cohort specs and tables: every problem names the spec field and line, and the table's
file, column and row; `synthdata validate` prints them and exits 2 without a traceback."""

from __future__ import annotations

import pytest
from cohort_helpers import NIH, NIH_LABELS, nih_spec_text
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.errors import SpecError
from synthdata.plan.load import load_spec_text


def problems(text: str) -> list:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, source="s.yaml")
    return info.value.problems


def edited_table(tmp_path, old: str, new: str, name: str = "nih.csv"):
    text = NIH.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("where,fragment", [
    ('Findng_Labels == "No Finding"', "no column 'Findng_Labels' in the table; did you mean 'Finding Labels'"),
    ('Finding_Labels = "No Finding"', "at character 16: unexpected character '=' (compare with ==)"),
    ('Finding_Labels == ', "the expression ends too early"),
    ('Finding_Labels', "the expression ends too early"),
    ('__import__("os").system("true")', "at character 11: unexpected '('"),
    ('Finding_Labels.__class__ == 1', "unexpected character '.'"),
    ('`Patient Age` > "old"', "compares numbers; got text"),
])
def test_expression_errors_name_the_label_field_line_and_position(where, fragment):
    labels = NIH_LABELS.replace("""'Finding_Labels == "No Finding"'""", repr(where), 1)
    found = problems(nih_spec_text(100, labels=labels))
    assert [p.field for p in found] == ["labels.normal.where"]
    assert fragment in found[0].message and found[0].line is not None


def test_a_non_numeric_cell_compared_with_a_number_names_table_column_row(tmp_path):
    table = edited_table(tmp_path, "00000034_001.png,No Finding,1,34,75,", "00000034_001.png,No Finding,1,34,old,")
    labels = NIH_LABELS.replace("where: 'true'", "where: '`Patient Age` >= 0'")
    columns = "  columns: {sex: Patient Gender, age: Patient Age, view: View Position}\n"
    found = problems(nih_spec_text(100, table=table, labels=labels, columns=columns))
    assert found[0].field == "labels.other.where"
    assert "table nih.csv: column 'Patient Age', row 1: 'old' is not a number" in found[0].message


def test_unmapped_value_names_table_column_rows_and_the_fix(tmp_path):
    table = edited_table(tmp_path, "00000034_001.png,No Finding,1,34,75,M,", "00000034_001.png,No Finding,1,34,75,O,")
    found = problems(nih_spec_text(100, table=table))
    assert found[0].field == "cohort.columns.sex"
    assert ("table nih.csv, column 'Patient Gender', row 1: value 'O' is not in `values` (M, F)"
            in found[0].message) and "set `other`" in found[0].message


def test_binning_errors_name_rows(tmp_path):
    table = edited_table(tmp_path, "00000034_001.png,No Finding,1,34,75,", "00000034_001.png,No Finding,1,34,,")
    found = problems(nih_spec_text(100, table=table).replace("age: Patient Age", "age: {column: Patient Age, missing: unknown}")
                     .replace("bins: decade", "bins: [0, 50, 60]"))
    assert found[0].field == "cohort.columns.decade"
    assert "column 'Patient Age', rows 0, 2, 3 and 661 more: '73'" in found[0].message and "outside the bins [0, 60)" in found[0].message


def test_blank_cells_leave_rows_out_unless_a_missing_value_is_given(tmp_path):
    from synthdata.plan import rows as plan
    from synthdata.plan.cohort import cohort_index

    table = edited_table(tmp_path, "00000034_001.png,No Finding,1,34,75,M,PA", "00000034_001.png,No Finding,1,34,75,M,")
    spec = load_spec_text(nih_spec_text(None, table=table))
    assert cohort_index(spec).left_out == {"blank View Position (view)": 1}
    assert plan.total_count(spec) == 2999
    spec = load_spec_text(nih_spec_text(None, table=table).replace("view: View Position",
                                                                    "view: {column: View Position, missing: unknown}"))
    assert plan.total_count(spec) == 3000


@pytest.mark.parametrize("content,fragment", [
    (None, "no such file (cohort.table is taken from the spec file's folder)"),
    ("a,b\n1,2\n3\n", "row 1 (line 3) has 1 cells; the header has 2"),
    ("a,a\n1,2\n", "column 'a' appears twice in the header"),
    ("a,b\n", "the table has a header but no rows"),
    (b"a,b\n\xff,1\n", "not UTF-8 text"),
])
def test_unreadable_tables_are_named(tmp_path, content, fragment):
    table = tmp_path / "t.csv"
    if isinstance(content, bytes):
        table.write_bytes(content)
    elif content is not None:
        table.write_text(content)
    found = problems(nih_spec_text(100, table=table))
    assert found[0].field == "cohort.table" and str(table) in found[0].message and fragment in found[0].message


def test_cohort_section_checks_that_need_no_table():
    text = nih_spec_text(100).replace("prompts: [\"{view} x-ray, {age} year old {sex}, normal\"]",
                                      "weight: 2, prompts: [\"{view} {race}\"]")
    text += "vars: {sex: [a, b]}\n"
    text = text.replace("cohort:\n", "cohort:\n  stratify: {by: [sex, ethnicity]}\n")
    fields = {p.field: p.message for p in problems(text)}
    assert "unknown template variable {race}" in fields["labels.normal.prompts.0"]
    assert "is also a cohort column variable" in fields["vars.sex"]
    assert "mirror" in fields["labels.normal"]
    assert "ethnicity" in fields["cohort.stratify.by"]


def test_where_needs_a_cohort_and_a_cohort_needs_where():
    no_cohort = ("name: x\ncount: 4\nlabels:\n  a: {where: 'true', prompts: [p]}\n"
                 "generator: {height: 64, width: 64}\n")
    assert "add a `cohort:` section" in problems(no_cohort)[0].message
    labels = NIH_LABELS.replace("where: 'true', ", "")
    found = problems(nih_spec_text(100, labels=labels))
    assert found[0].field == "labels.other" and "need `where:`" in found[0].message


def test_a_label_without_rows_is_an_error():
    labels = NIH_LABELS.replace('"Effusion" in Finding_Labels', '"Efusion" in Finding_Labels')
    found = problems(nih_spec_text(100, labels=labels))
    assert found[0].field == "labels.effusion.where" and "no row of table nih_cxr14_3000.csv" in found[0].message


def test_validate_prints_every_problem_and_exits_2(tmp_path):
    table = edited_table(tmp_path, "00000034_001.png,No Finding,1,34,75,M,", "00000034_001.png,No Finding,1,34,75,X,")
    spec = tmp_path / "s.yaml"
    spec.write_text(nih_spec_text(100, table="nih.csv").replace('"Effusion" in Finding', '"Effusion" in Findng'))
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    out = " ".join(result.output.split())
    assert f"{spec}:" in out and "cohort.columns.sex" in out and "value 'X'" in out
    assert "labels.effusion.where" in out and "'Findng_Labels'" in out
