"""The spec: read a YAML file into a validated `Spec`, or raise `SpecError` naming every problem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from synthdata.errors import Problem, SpecError
from synthdata.spec.checks import check_spec, spec_warnings as _warnings, template_slots
from synthdata.spec.cohort import cohort_path_fields
from synthdata.spec.models import EMBEDDER_DEPRECATED, Spec
from synthdata.spec.paths import (
    EXTRA_PATH_FIELDS,
    location_fields,
    location_free,
    refuse_url,
    resolve_paths,
    url_problems,
)
from synthdata.spec.qc import CHECK_TAGS, qc_path_fields
from synthdata.spec.yamlio import FieldPath, read_yaml

__all__ = ["Spec", "NON_DATA_SECTIONS", "data_sections", "dataset_dict", "dotted", "json_schema",
           "line_of", "problems_at", "problems_of", "resolved_yaml", "spec_hash", "spec_warnings", "template_slots",
           "validate_spec", "with_overrides"]


EXTRA_PATH_FIELDS.extend(f for f in (cohort_path_fields, qc_path_fields) if f not in EXTRA_PATH_FIELDS)


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


def problems_of(exc: ValidationError, source: str, lines: dict[FieldPath, int]) -> list[Problem]:
    """The Problems of a pydantic ValidationError, each with its line (for other YAML schemas)."""
    return _pydantic_problems(exc, source, lines)


def problems_at(source: str, lines: dict[FieldPath, int],
                found: list[tuple[FieldPath, str]]) -> list[Problem]:
    """(field path, message) pairs as Problems naming the file, the field's line and the field."""
    return [Problem(source, msg, line=_line_for(lines, path), field=_dotted(path))
            for path, msg in found]


def line_of(lines: dict[FieldPath, int], path: FieldPath) -> int | None:
    """Line of a field path, or of its nearest enclosing field."""
    return _line_for(lines, path)


def dotted(path: FieldPath) -> str:
    """A field path as `a.b.0.c`."""
    return _dotted(path)


def validate_spec(data: object, lines: dict[FieldPath, int] | None = None, source: str = "<spec>",
                  *, base_dir: str | Path | None = None, check_files: bool = True) -> Spec:
    """Validate already-parsed YAML data of the spec language into a Spec (URLs refused,
    structure, cross-field checks, named files), or raise SpecError naming every problem.

    With `base_dir`, relative file paths are resolved against it and recorded absolute
    (`spec.paths`). `check_files=False` skips the checks that named files exist. What the spec
    names outside itself (a `catalog:` model, the cohort table) is resolved by
    `synthdata.plan.load`, which everything that runs or audits a dataset uses.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Problem(source, "expected a YAML mapping at the top level "
                                 f"(name, count, labels, ...), got {type(data).__name__}", line=1)])
    urls = url_problems(location_fields(data))
    if urls:  # before anything reads or resolves them as local paths
        raise SpecError(problems_at(source, lines, urls))
    try:
        spec = Spec.model_validate(data)
        if base_dir is not None:
            spec = Spec.model_validate(resolve_paths(spec.model_dump(mode="json"), base_dir))
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, source, lines)) from None
    found = check_spec(spec, check_files)
    if found:
        raise SpecError(problems_at(source, lines, found))
    return spec


def spec_warnings(path: str | Path, spec: Spec) -> list[Problem]:
    """Warnings about a valid spec file (e.g. no real reference: not screened against real
    images), each naming the file, line and field like an error."""
    _, lines = read_yaml(path)
    out = []
    if ("memorization", "embedder") in lines:
        out.append(Problem(str(path), EMBEDDER_DEPRECATED, line=lines[("memorization", "embedder")],
                           field="memorization.embedder"))
    for field, msg in _warnings(spec):  # the field's line, else its section's, if written
        line = next((lines[field[:n]] for n in range(len(field), 0, -1) if field[:n] in lines), None)
        out.append(Problem(str(path), msg, line=line, field=_dotted(field)))
    return out


def with_overrides(spec: Spec, out_dir: str | Path | None = None, engine: str | None = None,
                   workers: int | None = None, dvc: bool | None = None) -> Spec:
    """The spec with command-line overrides (output folder, made absolute; engine; workers; DVC).
    An output folder given as a URL is refused (object storage is not supported yet)."""
    refuse_url(out_dir, "output folder (--out)")
    execution = spec.execution.model_copy(update={k: v for k, v in
                                                  (("engine", engine), ("workers", workers)) if v})
    out = str(Path(out_dir).resolve()) if out_dir is not None else None
    output = spec.output.model_copy(update={k: v for k, v in (("dir", out), ("dvc", dvc))
                                            if v is not None})
    return spec.model_copy(update={"execution": execution, "output": output})


def resolved_dict(spec: Spec) -> dict:
    """The spec with every default filled in, as plain JSON-able data."""
    return spec.model_dump(mode="json")


def resolved_yaml(spec: Spec) -> str:
    """The resolved spec as YAML (what DIR/spec.yaml holds)."""
    return yaml.safe_dump(resolved_dict(spec), sort_keys=False, allow_unicode=True)


# Sections outside the spec hash: where and how it runs, and its screening. Of these,
# execution.speed knobs can change generated bytes; shard markers record them and a folder
# refuses shards made with other knobs (outputs.check_generation_identity). With qc.top_up and a
# real reference, memorization decides which samples are regenerated, so it is a data section
# then (`data_sections`), less its performance-only fields.
NON_DATA_SECTIONS = ("execution", "output", "memorization")
MEMORIZATION_PERFORMANCE_ONLY = ("device", "batch_size")


def screens_while_generating(data: dict) -> bool:
    """Spec data's `Spec.screens_while_generating`: qc.top_up with a real reference."""
    qc, mem = data.get("qc") or {}, data.get("memorization") or {}
    return bool(qc.get("top_up")) and bool(mem.get("reference"))


def data_sections(data: dict) -> dict:
    """What determines the raw shards' bytes, from resolved spec data: every section but
    NON_DATA_SECTIONS, plus memorization (less device and batch size) when the generation
    worker screens (qc.top_up), with local paths reduced to their names (the model
    fingerprint and the shard markers' generation identity cover their content)."""
    free = location_free(data)
    out = {k: v for k, v in free.items() if k not in NON_DATA_SECTIONS}
    if screens_while_generating(data):
        # hashed under the field's old name, so renaming `embedder` to `matchers` moved no hash
        out["memorization"] = {("embedder" if k == "matchers" else k): v
                               for k, v in free["memorization"].items()
                               if k not in MEMORIZATION_PERFORMANCE_ONLY}
    return out


def dataset_dict(spec: Spec) -> dict:
    """What determines the raw shards' bytes: `data_sections` of the resolved spec."""
    return data_sections(resolved_dict(spec))


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
