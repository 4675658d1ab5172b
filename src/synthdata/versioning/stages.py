"""What the root `dvc.yaml` needs from synthdata besides its verbs: per-stage views of the
spec, the check that `params.yaml` names every local file the spec reads, and content stamps.

DVC 3.67 cannot take a stage's dependencies from a list (`deps: ${list}` is "Cannot interpolate
data of type 'list'", treeverse/dvc#8171) and a spec names a varying number of local files (a
model folder, textual-inversion and LoRA files, reference folders, an embedder folder). So
`params.yaml` names them, by role, in two mappings:

    generate_inputs: {model: models/roentgen, lora: loras/cxr.safetensors}   # what generation reads
    screen_inputs: {cxr: data/real/cxr}                                       # what screening reads

(With qc.top_up generation screens too, so the reference belongs in both mappings.)

A `foreach` stage per mapping depends on each path and writes its content stamp
(`WORK/generate/input-NAME.json`, `WORK/screen/input-NAME.json`); the later stages depend on
the folders `WORK/generate` and `WORK/screen`, which hold the stamps and the spec views that
`resolve` writes. DVC notices a changed file itself (its hash cache makes `dvc status` a stat
per file, not a re-hash); a stamp holds content only, so moving a file reruns nothing.
`resolve` refuses a `params.yaml` whose mappings differ from what the spec reads, naming
what to add or remove, so the two lists cannot drift apart silently.

Rejected: `always_changed: true` on a stage that fingerprints the model (one source of truth,
but it reruns on every `dvc repro`, so a pipeline is never up to date and a multi-GB model is
re-hashed each time); `vars` loaded from a file that `resolve` writes (read once, before
`resolve` runs: a spec edit would take effect one `dvc repro` late).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import yaml

from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.fsutil import sha256_file, write_text_atomic
from synthdata.spec import Spec, dataset_dict, resolved_dict
from synthdata.plan.load import load_spec
from synthdata.spec.paths import path_fields

ROLES = ("generate", "screen")
PARAM_KEYS = {"generate": "generate_inputs", "screen": "screen_inputs"}
VIEWS = {"generate": "dataset.json", "screen": "screening.json"}
STAMP_PREFIX = "input-"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class PipelineError(SynthdataError):
    """The DVC pipeline's parameters do not match the spec, or a stamped path is missing."""


def role_of(field: tuple) -> str | None:
    """Which stage reads a spec path field: "screen" (memorization), None (the output folder),
    else "generate" (the generator's model and adapters, and sections other packages add)."""
    if field[0] == "output":
        return None
    return "screen" if field[0] == "memorization" else "generate"


def spec_inputs(spec: Spec) -> dict[str, dict[str, Path]]:
    """role -> {spec field as dotted text: absolute path} of every local file the spec reads.

    With qc.top_up the generation worker screens too, so screening's files (the reference, a
    local embedder) are generation's inputs as well: they decide which samples are regenerated.
    """
    out: dict[str, dict[str, Path]] = {role: {} for role in ROLES}
    top_up = spec.screens_while_generating()
    for field, value in path_fields(resolved_dict(spec)):
        role = role_of(field)
        if role is None:
            continue
        name, path = ".".join(str(p) for p in field), Path(value).expanduser().resolve()
        out[role][name] = path
        if role == "screen" and top_up:
            out["generate"][name] = path
    return out


def read_params(params_file: str | Path) -> dict[str, dict[str, str]]:
    """role -> {name: path as written} from params.yaml's generate_inputs / screen_inputs."""
    path = Path(params_file)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = {}
    for role, key in PARAM_KEYS.items():
        value = data.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise PipelineError(f"{path}: {key} must be a mapping of name: path, got {value!r}")
        bad = [str(k) for k in value if not _NAME.match(str(k))]
        if bad:
            raise PipelineError(f"{path}: {key}: names may hold letters, digits, - and _ only "
                                f"(they name stages and files); got {', '.join(bad)}")
        out[role] = {str(k): v for k, v in value.items()}
    return out


def _suggest(path: Path, base: Path, taken: set[str], field: str) -> str:
    rel = os.path.relpath(path, base)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-") or field.split(".")[-1]
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name)
    return f"{name}: {rel}"


def check_inputs(spec: Spec, params_file: str | Path) -> None:
    """Refuse when params.yaml's input mappings differ from the local files the spec reads."""
    base = Path(params_file).resolve().parent
    wanted, given = spec_inputs(spec), read_params(params_file)
    problems = []
    for role, key in PARAM_KEYS.items():
        listed = {(base / Path(p).expanduser()).resolve(): name for name, p in given[role].items()}
        taken = set(given[role])
        missing = [_suggest(p, base, taken, f) for f, p in wanted[role].items() if p not in listed]
        extra = [f"{name}: {given[role][name]}" for p, name in listed.items()
                 if p not in set(wanted[role].values())]
        if missing:
            problems.append(f"{key} lacks files the spec reads; add {{{', '.join(missing)}}}")
        if extra:
            problems.append(f"{key} names files the spec does not read; remove {{{', '.join(extra)}}}")
    if problems:
        raise PipelineError(f"{params_file}: " + "; ".join(problems) + " (DVC reruns a stage when "
                            "a file named there changes, so it must list exactly what the spec reads)")


def generate_view(spec: Spec) -> dict:
    """What generation's bytes depend on besides the model files (WORK/generate/dataset.json):
    the spec hash's sections (with qc.top_up, memorization among them) and the speed knobs."""
    return {**dataset_dict(spec), "execution": {"speed": spec.execution.speed.changed()}}


# Outputs that only some specs make, by stage: DVC cannot declare an optional output, so a
# spec that makes them needs them added to the stage (checked by `check_optional_outputs`).
OPTIONAL_OUTPUTS = {"cohort": {"plan": DatasetFolder.COHORT, "report": DatasetFolder.COHORT_REPORT}}


def _declared(stage: dict) -> set[str]:
    outs = (stage or {}).get("outs") or []
    return {next(iter(o)) if isinstance(o, dict) else str(o) for o in outs}


def check_optional_outputs(spec: Spec, dvc_file: str | Path) -> None:
    """Refuse a spec that writes outputs `dvc_file` does not declare (a cohort spec writes
    DIR/cohort.json with the plan and DIR/cohort_report.json with the report)."""
    path = Path(dvc_file)
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    missing = [f"{stage}: outs: ${{out}}/{name}"
               for section, outs in OPTIONAL_OUTPUTS.items() if getattr(spec, section) is not None
               for stage, name in outs.items() if f"${{out}}/{name}" not in _declared(stages.get(stage))]
    if missing:
        raise PipelineError(f"{path}: this spec also writes files no stage declares; add "
                            f"{'; '.join(missing)} (and each as a dep of the stages after it; DVC "
                            "requires a declared output to exist, so dvc.yaml cannot declare them "
                            "for every spec)")


def resolve(spec_path: str | Path, work: str | Path, params_file: str | Path | None = None
            ) -> tuple[Path, Path]:
    """Write WORK/generate/dataset.json and WORK/screen/screening.json; check params.yaml.

    `dataset.json`: what shapes the raw shards' bytes besides the model files: every resolved
    field the spec hash covers (with qc.top_up, the memorization section too: it decides what
    is regenerated), and the `execution.speed` knobs not at their default (they may change
    float results and are part of a folder's identity); `screening.json`: the resolved
    memorization section. Engine, workers, threads and the output section are left out, so
    changing them reruns nothing. Each file is rewritten only when its content changes.
    Stamps of inputs no longer named in `params_file` are removed. Neither the model nor the
    reference data is read here.
    """
    spec = load_spec(spec_path, check_files=False)
    if params_file is not None:
        check_inputs(spec, params_file)
        dvc_file = Path(params_file).parent / "dvc.yaml"
        if dvc_file.is_file():
            check_optional_outputs(spec, dvc_file)
    views = {"generate": generate_view(spec), "screen": resolved_dict(spec)["memorization"]}
    paths = []
    for role in ROLES:
        path = Path(work) / role / VIEWS[role]
        text = json.dumps(views[role], indent=2, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text() != text:
            write_text_atomic(path, text)
        paths.append(path)
    if params_file is not None:
        _drop_stale_stamps(Path(work), read_params(params_file))
    return paths[0], paths[1]


def stamp_path(work: str | Path, role: str, name: str) -> Path:
    """WORK/ROLE/input-NAME.json."""
    return Path(work) / role / f"{STAMP_PREFIX}{name}.json"


def _drop_stale_stamps(work: Path, given: dict[str, dict[str, str]]) -> None:
    for role in ROLES:
        keep = {stamp_path(work, role, name).name for name in given[role]}
        folder = work / role
        for old in folder.glob(f"{STAMP_PREFIX}*.json") if folder.is_dir() else []:
            if old.name not in keep:
                old.unlink()


def content_digest(path: str | Path) -> dict:
    """What a file or folder holds, without where it is: sha256 over sorted relative paths and
    file hashes (hidden files and folders skipped, as in model fingerprints)."""
    root = Path(path)
    if root.is_file():
        return {"kind": "file", "files": 1, "bytes": root.stat().st_size, "sha256": sha256_file(root)}
    if not root.is_dir():
        raise PipelineError(f"{path}: no such file or folder (named in params.yaml)")
    h, files, size = hashlib.sha256(), 0, 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            h.update(f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}\n".encode())
            files, size = files + 1, size + p.stat().st_size
    return {"kind": "folder", "files": files, "bytes": size, "sha256": h.hexdigest()}


def stamp(path: str | Path, out: str | Path) -> Path:
    """Write the content digest of `path` to `out` (rewritten only when it changes)."""
    text = json.dumps(content_digest(path), indent=2, sort_keys=True) + "\n"
    target = Path(out)
    if not target.is_file() or target.read_text() != text:
        write_text_atomic(target, text)
    return target
