"""Loading a spec for a run: the spec language (`synthdata.spec`) resolved against what it names
outside itself. A `catalog:` model is expanded from the catalogue before validation, and a
cohort table is read, checked and fingerprinted after it (its sha256 is filled in). Everything
that plans, runs, versions or audits a dataset loads its spec here; it never writes anything.
"""

from __future__ import annotations

from pathlib import Path

from synthdata.catalog.expand import PREFIX, expand_catalog
from synthdata.errors import SpecError
from synthdata.plan.cohort import check_cohort
from synthdata.spec import Spec, line_of, problems_at, validate_spec
from synthdata.spec.yamlio import FieldPath, parse_yaml, read_yaml


def parse_spec(data: object, lines: dict[FieldPath, int] | None = None, source: str = "<spec>",
               *, base_dir: str | Path | None = None, check_files: bool = True) -> Spec:
    """Validate already-parsed YAML data into a Spec: the catalogue entry expanded, the spec
    language checked (`synthdata.spec.validate_spec`), then the cohort table.

    `check_files=False` skips the checks that named files exist and the cohort table (a
    recorded spec already holds its sha256).
    """
    lines = lines or {}
    gen = data.get("generator") if isinstance(data, dict) else None
    if isinstance(gen, dict) and str(gen.get("model", "")).startswith(PREFIX):
        data = expand_catalog(data, source, line_of(lines, ("generator", "model")))
    spec = validate_spec(data, lines, source, base_dir=base_dir, check_files=check_files)
    if spec.cohort is None or not check_files:
        return spec
    spec, found = check_cohort(spec)  # reads the table; fills in cohort.sha256
    if found:
        raise SpecError(problems_at(source, lines, found))
    return spec


def load_spec(path: str | Path, *, check_files: bool = True) -> Spec:
    """Read and validate a spec file; relative paths in it resolve against its folder.

    Raises SpecError; never writes anything. `check_files=False` reads a spec structurally,
    without requiring the model, adapters or reference data to exist (auditing a copy).
    """
    data, lines = read_yaml(path)
    return parse_spec(data, lines, str(path), base_dir=Path(path).parent, check_files=check_files)


def load_spec_text(text: str, source: str = "<spec>", *, base_dir: str | Path | None = None) -> Spec:
    """Validate spec YAML given as text (relative paths against `base_dir` when given)."""
    data, lines = parse_yaml(text, source)
    return parse_spec(data, lines, source, base_dir=base_dir)
