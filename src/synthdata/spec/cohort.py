"""The spec's `cohort:` section: a table of real metadata that drives labels and variables.

Only the schema lives here; reading the table, evaluating label expressions and drawing rows
are `synthdata.plan.cohort`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from synthdata.spec.base import StrictModel

MARKERS = ("underscores", "xxxx", "brackets")
VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class TextClean(StrictModel):
    """How a report-text column is cleaned before it goes into a prompt."""

    markers: list[Literal[MARKERS]] = Field(  # type: ignore[valid-type]
        list(MARKERS), description="de-identification markers to remove: underscores (`___`, "
        "MIMIC), xxxx (`XXXX`, Open-i Indiana), brackets (`[**...**]`, MIMIC-II/III)")
    replace_with: str = Field("", description="put in place of each marker ('' removes it)")
    whitespace: bool = Field(True, description="collapse runs of whitespace and trim")


def _text_keys(raw: Any) -> Any:
    """YAML reads `1: male` with an integer key; table cells are text, so keys become text."""
    if isinstance(raw, dict):
        return {("true" if k is True else "false" if k is False else str(k)): v for k, v in raw.items()}
    return raw


class ColumnMap(StrictModel):
    """How one template variable takes its value from a table column."""

    column: str = Field(min_length=1, description="the table column")
    values: Annotated[dict[str, str] | None, BeforeValidator(_text_keys)] = Field(
        None, description="cell text -> variable value (e.g. M: male); other cells are errors "
        "unless `other` is set")
    other: str | None = Field(None, description="value for cells not listed in `values`")
    bins: Literal["decade"] | list[float] | None = Field(
        None, description="numeric binning: 'decade' (40-49) or edges [a, b, c] (bins [a, b), [b, c))")
    bin_labels: list[str] | None = Field(None, description="names of the bins (one per bin)")
    text: TextClean | None = Field(None, description="clean a report-text column "
                                                     "(de-identification markers, whitespace)")
    missing: str | None = Field(None, description="value for blank cells; unset: such rows are "
                                                  "left out of the cohort (and counted in the report)")

    @model_validator(mode="after")
    def _one_transform(self) -> ColumnMap:
        used = [k for k in ("values", "bins", "text") if getattr(self, k) is not None]
        if len(used) > 1:
            raise ValueError(f"give one of values, bins, text (got {', '.join(used)})")
        if self.other is not None and self.values is None:
            raise ValueError("`other` needs `values`")
        if self.bin_labels is not None:
            if not isinstance(self.bins, list):
                raise ValueError("`bin_labels` needs `bins` as a list of edges")
            if len(self.bin_labels) != len(self.bins) - 1:
                raise ValueError(f"{len(self.bins)} bin edges make {len(self.bins) - 1} bins, "
                                 f"but {len(self.bin_labels)} bin_labels are given")
        if isinstance(self.bins, list):
            if len(self.bins) < 2 or any(b >= a for a, b in zip(self.bins[1:], self.bins)):
                raise ValueError("bins needs at least two increasing edges")
        return self


def _to_column_map(raw: Any) -> Any:
    return {"column": raw} if isinstance(raw, str) else raw


class Stratify(StrictModel):
    """Draw rows within each label stratum by stratum, so the strata's shares come out exact."""

    by: list[Annotated[str, Field(pattern=VAR_NAME)]] = Field(
        min_length=1, description="cohort variables (keys of `columns`) whose combinations are strata")
    allocation: Literal["proportional", "equal"] = Field(
        "proportional", description="proportional: each stratum's share of the label's rows; "
        "equal: the same number of samples for each stratum present")


class CohortReport(StrictModel):
    """Which cohort variables the requested-vs-realized report crosses with the label."""

    sex: str | None = Field(None, description="default: the variable `sex`, when there is one")
    age: str | None = Field(None, description="numeric age variable, reported by decade "
                                              "(default: `age`, when there is one)")


class Cohort(StrictModel):
    """A table of real metadata (CSV or Parquet): each sample is drawn from one of its rows."""

    table: str = Field(min_length=1, description="CSV (.csv, .csv.gz, .tsv) or Parquet file, "
                                                 "relative to the spec file's folder")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "the table's sha256; filled in when the spec is resolved, so a changed table is refused"))
    mode: Literal["mirror", "explicit"] = Field(
        "mirror", description="mirror: label counts follow the table's label shares; explicit: "
        "labels' count/weight as in any spec, rows drawn within each label")
    columns: dict[Annotated[str, Field(pattern=VAR_NAME)],
                  Annotated[ColumnMap, BeforeValidator(_to_column_map)]] = Field(
        default_factory=dict, description="template variable -> column (a name, or a mapping)")
    patient_column: str | None = Field(None, description=(
        "column of patient ids: plan.parquet's source_row and source_patient become pseudonyms"))
    separator: str = Field("|", min_length=1, description="item separator of multi-label text columns")
    findings: Literal["auto"] | list[str] = Field(
        "auto", description="wide finding columns (1 positive, 0 negative, -1 uncertain, blank); "
        "auto: columns used in a label's `where` whose values are all -1, 0, 1 or blank")
    uncertain: Literal["negative", "positive", "exclude"] = Field(
        "exclude", description="a -1 in a finding column used by a `where`: read as 0, as 1, "
        "or leave the row out")
    missing: Literal["negative", "exclude"] = Field(
        "negative", description="a blank in a finding column used by a `where`: read as 0, "
        "or leave the row out")
    filter: str | None = Field(None, description="expression: only rows where it holds are used")
    stratify: Stratify | None = None
    report: CohortReport = CohortReport()


def cohort_path_fields(data: dict) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """The cohort table's path in spec data (for `synthdata.spec.paths`: resolved against the
    spec file's folder, recorded absolute, reduced to its name in the spec hash, where the
    table's sha256 stands for its content)."""
    cohort = data.get("cohort")
    if isinstance(cohort, dict) and isinstance(cohort.get("table"), str) and cohort["table"]:
        yield ("cohort", "table"), cohort["table"]
