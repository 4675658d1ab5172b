"""The spec: read a YAML file into a validated `Spec`, or raise `SpecError` naming every problem."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from synthdata.errors import Problem, SpecError
from synthdata.spec.checks import check_spec, template_slots
from synthdata.spec.models import Spec
from synthdata.spec.qc import CHECK_TAGS
from synthdata.spec.yamlio import FieldPath, parse_yaml, read_yaml

__all__ = ["Spec", "NON_DATA_SECTIONS", "data_view", "dataset_dict", "load_spec", "parse_spec",
           "resolve_input_paths", "spec_hash", "resolved_yaml", "json_schema", "template_slots"]


def _line_for(lines: dict[FieldPath, int], path: FieldPath) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _dotted(path: FieldPath) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _pydantic_problems(exc: ValidationError, source: str, lines: dict) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after", "[key]")
                    and not (isinstance(p, str) and p.startswith(("function-", "literal[", "int", "float"))))
        # a tagged union (qc.checks) puts the tag in the path: checks.3.dynamic_range.min_range
        loc = tuple(p for i, p in enumerate(loc)
                    if not (p in CHECK_TAGS and i >= 2 and loc[i - 2] == "checks" and isinstance(loc[i - 1], int)))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `synthdata schema` lists the allowed fields)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        problems.append(Problem(source, msg, line=_line_for(lines, loc), field=_dotted(loc)))
    # a union reports one error per branch at the same place; keep the first per field
    unique: dict[str, Problem] = {}
    for p in problems:
        unique.setdefault(p.field or "", p)
    return list(unique.values())


def _absolute(value: object, base: Path) -> object:
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return value
    return os.path.normpath(base / value)


def resolve_input_paths(data: dict, base_dir: str | Path | None) -> dict:
    """A copy of the spec data with the cohort table and QC model folders made absolute, taken
    from `base_dir` (the spec file's folder; default: the current folder)."""
    base = Path(os.path.abspath(base_dir if base_dir is not None else Path.cwd()))
    data = copy.deepcopy(data)
    cohort = data.get("cohort")
    if isinstance(cohort, dict) and "table" in cohort:
        cohort["table"] = _absolute(cohort["table"], base)
    qc = data.get("qc")
    if isinstance(qc, dict) and isinstance(qc.get("checks"), list):
        for check in qc["checks"]:
            if isinstance(check, dict) and "model" in check:
                check["model"] = _absolute(check["model"], base)
    return data


def parse_spec(data: object, lines: dict[FieldPath, int] | None = None, source: str = "<spec>",
               base_dir: str | Path | None = None) -> Spec:
    """Validate already-parsed YAML data into a Spec (structure, then cross-field checks, then
    the cohort table). Relative cohort/QC input paths are taken from `base_dir`."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Problem(source, "expected a YAML mapping at the top level "
                                 f"(name, count, labels, ...), got {type(data).__name__}", line=1)])
    try:
        spec = Spec.model_validate(resolve_input_paths(data, base_dir))
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, source, lines)) from None
    found = check_spec(spec)
    if not found and spec.cohort is not None:
        from synthdata.cohort import check_cohort

        spec, found = check_cohort(spec)
    problems = [Problem(source, msg, line=_line_for(lines, path), field=_dotted(path))
                for path, msg in found]
    if problems:
        raise SpecError(problems)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file. Raises SpecError; never writes anything.

    Relative paths of the cohort table and QC models are taken from the spec file's folder.
    """
    data, lines = read_yaml(path)
    return parse_spec(data, lines, str(path), base_dir=Path(path).parent)


def load_spec_text(text: str, source: str = "<spec>", base_dir: str | Path | None = None) -> Spec:
    """Validate spec YAML given as text (relative cohort/QC paths from `base_dir`, default cwd)."""
    data, lines = parse_yaml(text, source)
    return parse_spec(data, lines, source, base_dir=base_dir)


def resolved_dict(spec: Spec) -> dict:
    """The spec with every default filled in, as plain JSON-able data."""
    return spec.model_dump(mode="json")


def resolved_yaml(spec: Spec) -> str:
    """The resolved spec as YAML (what DIR/spec.yaml holds)."""
    return yaml.safe_dump(resolved_dict(spec), sort_keys=False, allow_unicode=True)


# Sections that never change the generated bytes: where and how it runs, and its screening.
NON_DATA_SECTIONS = ("execution", "output", "memorization")


def data_view(resolved: dict) -> dict:
    """A resolved spec dict without NON_DATA_SECTIONS and machine-local input paths (the cohort
    table, which its sha256 stands for; QC model folders): what determines the dataset's bytes."""
    data = {k: v for k, v in resolved.items() if k not in NON_DATA_SECTIONS}
    if isinstance(data.get("cohort"), dict):
        data["cohort"] = {k: v for k, v in data["cohort"].items() if k != "table"}
    if isinstance(data.get("qc"), dict):
        data["qc"] = {**data["qc"], "checks": [{k: v for k, v in c.items() if k != "model"}
                                               for c in data["qc"].get("checks", [])]}
    return data


def dataset_dict(spec: Spec) -> dict:
    """The resolved spec without NON_DATA_SECTIONS and machine-local paths (`data_view`)."""
    return data_view(resolved_dict(spec))


def spec_hash(spec: Spec) -> str:
    """sha256 of what determines the dataset's bytes (`dataset_dict`)."""
    data = dataset_dict(spec)
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def json_schema() -> dict:
    """The spec's JSON Schema (for editors and `synthdata schema`)."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "synthdata spec"
    return schema
