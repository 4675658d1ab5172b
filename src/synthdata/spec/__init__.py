"""The spec: read a YAML file into a validated `Spec`, or raise `SpecError` naming every problem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from synthdata.errors import Problem, SpecError
from synthdata.spec.checks import check_spec, template_slots
from synthdata.spec.models import Spec
from synthdata.spec.yamlio import FieldPath, parse_yaml, read_yaml

__all__ = ["Spec", "load_spec", "parse_spec", "spec_hash", "resolved_yaml", "json_schema",
           "template_slots"]


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


def parse_spec(data: object, lines: dict[FieldPath, int] | None = None, source: str = "<spec>") -> Spec:
    """Validate already-parsed YAML data into a Spec (structure, then cross-field checks)."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Problem(source, "expected a YAML mapping at the top level "
                                 f"(name, count, labels, ...), got {type(data).__name__}", line=1)])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, source, lines)) from None
    problems = [Problem(source, msg, line=_line_for(lines, path), field=_dotted(path))
                for path, msg in check_spec(spec)]
    if problems:
        raise SpecError(problems)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file. Raises SpecError; never writes anything."""
    data, lines = read_yaml(path)
    return parse_spec(data, lines, str(path))


def load_spec_text(text: str, source: str = "<spec>") -> Spec:
    """Validate spec YAML given as text."""
    data, lines = parse_yaml(text, source)
    return parse_spec(data, lines, source)


def resolved_dict(spec: Spec) -> dict:
    """The spec with every default filled in, as plain JSON-able data."""
    return spec.model_dump(mode="json")


def resolved_yaml(spec: Spec) -> str:
    """The resolved spec as YAML (what DIR/spec.yaml holds)."""
    return yaml.safe_dump(resolved_dict(spec), sort_keys=False, allow_unicode=True)


def spec_hash(spec: Spec) -> str:
    """sha256 of what determines the dataset's bytes: all but execution and output settings."""
    data = resolved_dict(spec)
    data.pop("execution", None)
    data.pop("output", None)
    data.pop("memorization", None)
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def json_schema() -> dict:
    """The spec's JSON Schema (for editors and `synthdata schema`)."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "synthdata spec"
    return schema
