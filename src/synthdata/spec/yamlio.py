"""Strict YAML reading: safe loading, no duplicate keys, no aliases, line numbers per field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from synthdata.errors import Problem, SpecError

MAX_SPEC_BYTES = 1_000_000

FieldPath = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first defined on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping
)


def _line_map(node: yaml.Node, path: FieldPath, out: dict[FieldPath, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)


def _refuse_aliases(text: str, source: str) -> None:
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise SpecError([Problem(source, "YAML anchors and aliases are not allowed in specs "
                                     "(write each value out)", line=line)])


def read_yaml(path: str | Path) -> tuple[Any, dict[FieldPath, int]]:
    """Read a YAML file strictly; return the data and a map of field path -> line number."""
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise SpecError([Problem(source, "no such file")])
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError([Problem(source, f"file is larger than {MAX_SPEC_BYTES} bytes; "
                                 "a spec is a short YAML document")])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(source, f"not UTF-8 text ({exc.reason})")]) from None
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str = "<spec>") -> tuple[Any, dict[FieldPath, int]]:
    """Parse YAML text strictly (see read_yaml)."""
    try:
        _refuse_aliases(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(m for m in (exc.context, exc.problem) if m)
        raise SpecError([Problem(source, f"invalid YAML: {msg}", line=line)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(source, f"invalid YAML: {exc}")]) from None
    lines: dict[FieldPath, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return data, lines
