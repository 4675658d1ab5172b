"""Model fingerprints: one sha256 that names exactly which weights generated a dataset.

The fingerprint covers every weights and config file of the pipeline folder (sorted relative
paths and their content hashes; hidden files and documentation skipped), the revision, and the
textual-inversion and LoRA files applied on top. Files are hashed in streaming blocks, so a
multi-GB pipeline costs a few seconds once per run.

Where the folder comes from:
- `builtin:NAME`: the cached built-in pipeline (built on first use by `ensure_builtin`);
  `builtin:procedural` has no weights: a constant and the phantom renderer's version;
- a local folder: that folder;
- a hub id: its local snapshot, resolved with `huggingface_hub` without the network
  (`local_files_only`); a snapshot that is not on disk is an error, never a download. The
  requested revision (a branch, tag or nothing) resolves once to a commit; the generator
  loads from that same snapshot folder and workers are given the commit, so what is
  fingerprinted is what is loaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synthdata.errors import ModelError
from synthdata.fsutil import sha256_file
from synthdata.spec.checks import is_local_model
from synthdata.spec.models import Generator as GeneratorConfig
from synthdata.generation.generators.procedural import (
    RENDERER_VERSION,
    procedural_fingerprint,
    renderer_folder,
)

FINGERPRINT_VERSION = "synthdata-model-fingerprint/v1"
# Files that document a model rather than define it; they never enter the fingerprint.
SKIPPED_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".lock", ".incomplete")
BLOCK = 1 << 20


@dataclass(frozen=True)
class ModelFingerprint:
    """The fingerprint and what went into it (for run.json and lineage)."""

    fingerprint: str
    model: str
    revision: str | None
    folder: str
    files: dict[str, str] = field(default_factory=dict)
    textual_inversion: list[dict] = field(default_factory=list)
    lora: list[dict] = field(default_factory=list)
    commit: str | None = None

    def as_dict(self) -> dict:
        """Plain data (JSON-able)."""
        return asdict(self)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def model_files(folder: str | Path) -> list[str]:
    """The weights and config files of a pipeline folder: sorted POSIX paths relative to it."""
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root)
            if _is_hidden(rel) or name.lower().endswith(SKIPPED_SUFFIXES):
                continue
            out.append(rel.as_posix())
    return sorted(out)


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot folder of a hub model; ModelError when it is not on this machine."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise ModelError(
            f"model {repo_id!r} (revision {revision or 'main'}) is not in the local Hugging Face "
            f"cache, so it cannot be fingerprinted; download it first (e.g. `hf download "
            f"{repo_id}{' --revision ' + revision if revision else ''}`) or point "
            f"generator.model at a local folder ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None


def hub_commit(folder: str | Path) -> str | None:
    """The commit of a hub snapshot folder (.../snapshots/<commit>), else None."""
    p = Path(folder)
    return p.name if p.parent.name == "snapshots" else None


def model_folder(cfg: GeneratorConfig) -> Path:
    """The folder a generator config loads from: built-in cache, local folder or hub snapshot."""
    model = cfg.model
    if model == "builtin:procedural":  # no weights: the phantom renderer's code
        return renderer_folder()
    if model.startswith("builtin:"):
        from synthdata.generation.generators.builtin import ensure_builtin  # deferred: loads diffusers, torch, transformers

        try:
            return ensure_builtin(model.removeprefix("builtin:"))
        except ValueError as exc:
            raise ModelError(str(exc)) from None
    if is_local_model(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model folder {model!r} does not exist")
        return folder
    return hub_snapshot(model, cfg.revision)


def _combine(revision: str | None, files: dict[str, str], tis: list[dict], loras: list[dict]) -> str:
    h = hashlib.sha256()
    h.update(f"{FINGERPRINT_VERSION}\nrevision\t{revision or ''}\n".encode())
    for rel in sorted(files):
        h.update(f"file\t{rel}\t{files[rel]}\n".encode())
    for ti in tis:
        h.update(f"textual_inversion\t{ti['token']}\t{ti['sha256']}\n".encode())
    for lo in loras:
        h.update(f"lora\t{lo['sha256']}\n".encode())
    return h.hexdigest()


def _adapter_hash(path: str, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"{what} file {path!r} does not exist")
    return sha256_file(p)


def model_fingerprint(cfg: GeneratorConfig) -> ModelFingerprint:
    """Fingerprint the model a generator config names (weights, configs, revision, adapters);
    builtin:procedural's is a constant and its renderer version (`generators.procedural`)."""
    if cfg.model == "builtin:procedural":
        return ModelFingerprint(fingerprint=procedural_fingerprint(), model=cfg.model, revision=None,
                                folder=str(renderer_folder()), files={"renderer": RENDERER_VERSION})
    folder = model_folder(cfg)
    files = {rel: sha256_file(folder / rel) for rel in model_files(folder)}
    if not files:
        raise ModelError(f"model folder {str(folder)!r} holds no weights or config files")
    tis = [{"path": ti.path, "token": ti.token, "sha256": _adapter_hash(ti.path, "textual-inversion")}
           for ti in cfg.textual_inversion]
    loras = [{"path": lo.path, "sha256": _adapter_hash(lo.path, "LoRA")} for lo in cfg.lora]
    commit = None if is_local_model(cfg.model) or cfg.model.startswith("builtin:") else hub_commit(folder)
    return ModelFingerprint(
        fingerprint=_combine(cfg.revision, files, tis, loras), model=cfg.model,
        revision=cfg.revision, folder=str(folder), files=files, textual_inversion=tis, lora=loras,
        commit=commit)


def scheduler_config(cfg: GeneratorConfig) -> dict:
    """The model folder's scheduler/scheduler_config.json (what the spec's scheduler starts from)."""
    import json

    path = model_folder(cfg) / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
