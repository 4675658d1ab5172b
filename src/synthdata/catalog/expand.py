"""`generator.model: catalog:ID` in a spec: the entry's source and recommended settings.

Expansion happens on the spec's YAML data before validation, so "the spec's own fields win"
means exactly the fields written in the file: the entry fills `model` (and `revision`), and
`scheduler`, `steps`, `guidance_scale`, `dtype`, `negative_prompt`, `height` and `width` (its
resolution) only where the spec leaves them out. The resolved spec (DIR/spec.yaml) holds the
expanded values, so a dataset never depends on the catalogue afterwards.

A hub entry without a pinned revision is refused unless the spec pins `generator.revision`:
an unpinned hub id would make the dataset depend on whatever the hub serves that day.
"""

from __future__ import annotations

from synthdata.catalog.store import CatalogError, get
from synthdata.errors import Problem, SpecError

PREFIX = "catalog:"
FILLED = ("scheduler", "steps", "guidance_scale", "dtype", "negative_prompt")


def expand_catalog(data: object, source: str = "<spec>", line: int | None = None) -> object:
    """The spec data with a `catalog:` model expanded (unchanged when there is none)."""
    if not isinstance(data, dict) or not isinstance(data.get("generator"), dict):
        return data
    gen = data["generator"]
    model = gen.get("model")
    if not isinstance(model, str) or not model.startswith(PREFIX):
        return data

    def problem(message: str) -> SpecError:
        return SpecError([Problem(source, message, line=line, field="generator.model")])

    try:
        listed = get(model[len(PREFIX):])
    except CatalogError as exc:
        raise problem(str(exc)) from None
    entry, src = listed.entry, listed.entry.source
    if src.kind == "hub" and not src.revision and not gen.get("revision"):
        raise problem(f"catalog entry {entry.id!r} ({src.hub}) has no pinned revision; set "
                      "generator.revision to the commit id you have checked (40 hex), so the "
                      "dataset does not depend on what the hub serves today")
    out = dict(gen)
    out["model"] = src.builtin or src.hub or str(listed.local_path())
    if src.kind == "hub" and "revision" not in gen:
        out["revision"] = src.revision
    for key in FILLED:
        value = getattr(entry.recommended, key)
        if key not in gen and value is not None:
            out[key] = value
    for key in ("height", "width"):
        out.setdefault(key, entry.resolution)
    return {**data, "generator": out}
