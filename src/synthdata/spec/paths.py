"""File paths written in a spec: resolved against the spec file's folder, recorded absolute.

A spec names files and folders (a local model, textual-inversion and LoRA files, reference
data, an embedder folder, the output folder). A relative path means "relative to the folder
of the spec file that wrote it", whatever the current folder, and the resolved spec
(`DIR/spec.yaml`) records it absolute, so `synthdata screen DIR` or `reproduce` find the
same files from anywhere on that machine. The default output folder (`datasets/<name>`,
used when `output.dir` is not set) is relative to the current folder.

URLs (`s3://bucket/x`, `gs://`, `file://`, any `scheme://`) are refused wherever a location is
expected, until object storage is supported: `url_problems` names each such field of a spec
(`parse_spec` and the train spec report them as spec problems, exit 2, before anything is
written), and the CLI's path options use `refuse_url`. Left alone, a URL would be taken for a
relative path (`s3://bucket/demo` is the folder `s3:/bucket/demo`).

Locations are not part of a dataset's identity: the spec hash covers `location_free` data,
where local paths are reduced to their last component, because the content of the model and
adapters is covered by the model fingerprint. The same spec in two checkouts makes the same
bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from synthdata.spec.checks import SPECIAL_REFERENCES, is_local_model
from synthdata.fsutil import is_url, refuse_url, url_message  # noqa: F401  (the spec's URL rule)

PathRef = tuple[tuple[str | int, ...], str]  # (field path, value)
def url_problems(fields: Iterable[tuple[tuple[str | int, ...], object]]) -> list[tuple[tuple, str]]:
    """(field path, message) for every field whose value is a URL."""
    return [(path, url_message(value)) for path, value in fields if is_url(value)]


def location_fields(data: dict) -> Iterator[tuple[tuple[str | int, ...], object]]:
    """Every field of spec data that names a location, whatever its form (local path, hub id,
    builtin name or URL): what `url_problems` checks. Tolerates malformed data."""
    def items(value: object) -> list:
        return value if isinstance(value, list) else []

    gen = data.get("generator") if isinstance(data.get("generator"), dict) else {}
    yield ("generator", "model"), gen.get("model")
    for key in ("textual_inversion", "lora"):
        for i, item in enumerate(items(gen.get(key))):
            if isinstance(item, dict):
                yield ("generator", key, i, "path"), item.get("path")
    mem = data.get("memorization") if isinstance(data.get("memorization"), dict) else {}
    for i, ref in enumerate(items(mem.get("reference"))):
        yield ("memorization", "reference", i), ref
    for key in ("matchers", "embedder", "retrievers"):  # embedder: the old name of matchers
        value = mem.get(key)
        if isinstance(value, list):
            yield from ((("memorization", key, i), v) for i, v in enumerate(value))
        else:
            yield ("memorization", key), value
    out = data.get("output") if isinstance(data.get("output"), dict) else {}
    yield ("output", "dir"), out.get("dir")
    yield from _extra_fields(data)


def _get(data: dict, path: tuple) -> object:
    for part in path:
        data = data[part]
    return data


def _set(data: dict, path: tuple, value: object) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _is_file_value(value: object) -> bool:
    return isinstance(value, str) and bool(value) and ":" not in value.split("/")[0] \
        and value not in SPECIAL_REFERENCES


def _is_folder_name(value: object) -> bool:
    """An embedder value naming a folder: written as a path (contains / or starts with . or ~);
    a bare word is a built-in embedder's name."""
    return _is_file_value(value) and ("/" in value or value.startswith((".", "~")))


def path_fields(data: dict, base_dir: str | Path | None = None) -> Iterator[PathRef]:
    """Every (field path, value) of a spec's data that names a local file or folder."""
    gen = data.get("generator") or {}
    model = gen.get("model")
    if isinstance(model, str) and is_local_model(model, base_dir):
        yield ("generator", "model"), model
    for key in ("textual_inversion", "lora"):
        for i, item in enumerate(gen.get(key) or []):
            if isinstance(item, dict) and _is_file_value(item.get("path")):
                yield ("generator", key, i, "path"), item["path"]
    mem = data.get("memorization") or {}
    for i, ref in enumerate(mem.get("reference") or []):
        if _is_file_value(ref):
            yield ("memorization", "reference", i), ref
    key = "embedder" if "embedder" in mem else "matchers"  # embedder: the old name of matchers
    matchers = mem.get(key)
    if isinstance(matchers, list):
        for i, emb in enumerate(matchers):
            if _is_folder_name(emb):
                yield ("memorization", key, i), emb
    elif _is_folder_name(matchers):
        yield ("memorization", key), matchers
    for i, emb in enumerate(mem.get("retrievers") or []):
        if _is_folder_name(emb):
            yield ("memorization", "retrievers", i), emb
    out = data.get("output") or {}
    if _is_file_value(out.get("dir")):
        yield ("output", "dir"), out["dir"]
    yield from _extra_fields(data)


# Sections added by other packages register their path fields here (data -> refs).
EXTRA_PATH_FIELDS: list[Callable[[dict], Iterator[PathRef]]] = []


def _extra_fields(data: dict) -> Iterator[PathRef]:
    for finder in EXTRA_PATH_FIELDS:
        yield from finder(data)


def resolve_paths(data: dict, base_dir: str | Path) -> dict:
    """A copy of spec data with every relative local path made absolute against base_dir."""
    base = Path(base_dir).expanduser().resolve()
    out = copy.deepcopy(data)
    for path, value in list(path_fields(out, base)):
        p = Path(value).expanduser()
        _set(out, path, str(p if p.is_absolute() else (base / p).resolve()))
    return out


def location_free(data: dict) -> dict:
    """A copy of spec data with local paths reduced to their last component (for hashing)."""
    out = copy.deepcopy(data)
    for path, value in list(path_fields(out)):
        if path[0] != "output":
            _set(out, path, Path(value).name)
    return out
