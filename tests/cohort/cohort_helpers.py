"""Shared pieces of the cohort tests: the vendored real tables and spec text around them."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NIH = REPO / "tests" / "data" / "nih_cxr14_3000.csv"      # real NIH ChestX-ray14 rows (README there)
INDIANA = REPO / "tests" / "data" / "indiana_reports_300.csv"  # real Indiana University reports

NIH_LABELS = """\
labels:
  normal: {where: 'Finding_Labels == "No Finding"', prompts: ["{view} x-ray, {age} year old {sex}, normal"]}
  effusion: {where: '"Effusion" in Finding_Labels', prompts: ["{view} x-ray, {age} year old {sex}, effusion"]}
  infiltration: {where: '"Infiltration" in `Finding Labels`', prompts: ["{view} x-ray, {age} {sex}, infiltrates"]}
  other: {where: 'true', prompts: ["{view} x-ray, {age} year old {sex}, other"]}
"""

NIH_COLUMNS = """\
  columns:
    sex: {column: Patient Gender, values: {M: male, F: female}}
    age: Patient Age
    decade: {column: Patient Age, bins: decade}
    view: View Position
"""


def nih_spec_text(count: int | None = 5000, table: Path | str = NIH, extra_cohort: str = "",
                  labels: str = NIH_LABELS, seed: int = 7, shards: int = 1000,
                  columns: str = NIH_COLUMNS) -> str:
    """A mirror-mode spec over the NIH extract."""
    count_line = f"count: {count}\n" if count is not None else ""
    return (f"name: nih\nseed: {seed}\n{count_line}cohort:\n  table: {table}\n{columns}"
            f"{textwrap.indent(extra_cohort, '  ')}{labels}"
            f"generator: {{height: 64, width: 64, batch_size: 8}}\nshards: {{size: {shards}}}\n")
