"""The catalogue: entries shipped in the package plus a user catalogue; list, get, rank, add.

Shipped entries are YAML files in `synthdata/catalog/entries/`. The user catalogue is a folder
of the same files: `$SYNTHDATA_CATALOG`, else `$SYNTHDATA_CACHE/catalog`, or a path given to
each call. Every file is validated against the entry schema (`models.py`); a bad file is an
error naming the file and the field. Ids are unique across both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from synthdata.catalog.models import LOWER_IS_BETTER, Entry, Evaluation, RealSetRef
from synthdata.errors import SynthdataError
from synthdata.fsutil import cache_root, write_text_atomic

SHIPPED = Path(__file__).parent / "entries"
USER_ENV = "SYNTHDATA_CATALOG"
EVAL_METRICS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")


class CatalogError(SynthdataError):
    """A catalogue file that does not validate, an unknown id, or an entry that cannot be added."""


@dataclass(frozen=True)
class Listed:
    """An entry and where it was read from (shipped | user)."""

    entry: Entry
    file: Path
    origin: str

    def local_path(self) -> Path | None:
        """Absolute folder of a local source (relative paths are taken from the entry's file)."""
        path = self.entry.source.path
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.file.parent / p).resolve()


def user_dir(path: str | Path | None = None) -> Path:
    """The user catalogue folder: `path`, $SYNTHDATA_CATALOG, or $SYNTHDATA_CACHE/catalog."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(USER_ENV) or cache_root() / "catalog")


def load_entry(path: str | Path) -> Entry:
    """Read and validate one entry file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{p}: unreadable catalogue entry ({exc})") from None
    try:
        return Entry.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors(include_url=False))
        raise CatalogError(f"{p}: invalid catalogue entry: {problems}") from None


def entries(user: str | Path | None = None) -> dict[str, Listed]:
    """Every entry by id, shipped first then user; duplicate ids are an error."""
    out: dict[str, Listed] = {}
    folders = [(SHIPPED, "shipped"), (user_dir(user), "user")]
    for folder, origin in folders:
        if not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.yaml")):
            entry = load_entry(file)
            if entry.id in out:
                raise CatalogError(f"{file}: id {entry.id!r} is already defined in {out[entry.id].file}")
            out[entry.id] = Listed(entry, file, origin)
    return out


def get(entry_id: str, user: str | Path | None = None) -> Listed:
    """The entry with this id; CatalogError listing the known ids when there is none."""
    known = entries(user)
    if entry_id not in known:
        raise CatalogError(f"unknown catalogue id {entry_id!r}; known: {', '.join(sorted(known))} "
                           "(`synthdata models list`)")
    return known[entry_id]


def rank(metric: str, *, extractor: str | None = None, real_set: str | None = None,
         user: str | Path | None = None) -> list[tuple[Listed, float, Evaluation]]:
    """Entries that have `metric` (for this extractor / real set), best first.

    Lower is better for fid, kid, kid_std, ms_ssim and nn_similarity; higher for the rest.
    """
    found = []
    for listed in entries(user).values():
        hit = listed.entry.metric(metric, extractor, real_set)
        if hit is not None:
            found.append((listed, hit[0], hit[1]))
    reverse = metric not in LOWER_IS_BETTER
    return sorted(found, key=lambda t: (-t[1] if reverse else t[1], t[0].entry.id))


def _statistics(ev: dict) -> dict[str, float]:
    """Intervals, standard errors, extrapolated and matched figures and n of evaluation.json."""
    out: dict[str, float] = {}
    ci = ev.get("fid_ci") or [None, None]
    if None not in ci:
        out["fid_ci_low"], out["fid_ci_high"] = ci
    for key, name in (("kid_unbiased", "kid_unbiased"), ("cmmd", "cmmd")):
        block = ev.get(key) or {}
        if block.get("value") is not None:
            out[name] = block["value"]
            if block.get("se") is not None:
                out[f"{name}_se"] = block["se"]
    if (ev.get("fd_inf") or {}).get("value") is not None:
        out["fd_inf"] = ev["fd_inf"]["value"]
    floor = ev.get("real_vs_real") or {}
    if floor.get("fid_std") is not None:
        out["real_vs_real_fid_std"] = floor["fid_std"]
    if (ev.get("matched") or {}).get("fid") is not None:
        out["matched_fid"] = ev["matched"]["fid"]
    for side in ("real", "synthetic"):
        if (ev.get("n") or {}).get(side) is not None:
            out[f"n_{side}"] = float(ev["n"][side])
    return out


def evaluation_figures(evaluation_json: dict, real_set_name: str, measured_by: str) -> Evaluation:
    """An entry's Evaluation from a dataset's evaluation/evaluation.json (figures, their
    intervals or standard errors, and n per side)."""
    figures = {k: evaluation_json[k] for k in EVAL_METRICS if evaluation_json.get(k) is not None}
    if evaluation_json.get("real_vs_real", {}).get("fid") is not None:
        figures["real_vs_real_fid"] = evaluation_json["real_vs_real"]["fid"]
    figures.update(_statistics(evaluation_json))
    utility = evaluation_json.get("utility") or {}
    for cond in ("real", "synthetic", "real_plus_synthetic"):
        if (utility.get(cond) or {}).get("auc") is not None:
            figures[f"utility_{cond}_auc"] = utility[cond]["auc"]
            for end in ("ci_low", "ci_high"):
                if utility[cond].get(end) is not None:
                    figures[f"utility_{cond}_auc_{end}"] = utility[cond][end]
    ms = ((evaluation_json.get("diversity") or {}).get("intra_prompt") or {}).get("ms_ssim")
    if ms is not None:
        figures["ms_ssim"] = ms
    real = evaluation_json["real_set"]
    return Evaluation(extractor=evaluation_json["extractor"]["name"],
                      real_set=RealSetRef(name=real_set_name, fingerprint=real["fingerprint"],
                                          images=real.get("images")),
                      metrics=figures, samples=evaluation_json["samples"]["synthetic"],
                      measured_by=measured_by)


def _model_folder(train_dir: Path, train: dict) -> Path:
    recorded = ((train.get("outputs") or {}).get("model") or {}).get("path")
    for candidate in (recorded, "model", "."):
        if isinstance(candidate, str):
            p = Path(candidate)
            p = p if p.is_absolute() else train_dir / p
            if (p / "model_index.json").is_file():
                return p.resolve()
    raise CatalogError(f"{train_dir}: no diffusers pipeline folder (model_index.json) found beside "
                       "train.json; `models add` registers full-pipeline training outputs (use a "
                       "LoRA or textual-inversion output through generator.lora / "
                       "generator.textual_inversion in a spec)")


def add(train_dir: str | Path, *, entry_id: str | None = None, evaluation: str | Path | None = None,
        evaluation_data: dict | None = None, real_set_name: str | None = None,
        user: str | Path | None = None, **fields) -> Listed:
    """Register a `synthdata train` output (DIR/train.json + its pipeline folder) in the user
    catalogue; with `evaluation`, a dataset folder it generated that `synthdata evaluate` scored,
    and `evaluation_data`, that folder's evaluation.json as read by the caller (the evaluation
    package sits above the catalogue).

    `fields` fill descriptive fields (modality, specialty, body_part, license, resolution, ...).
    """
    tdir = Path(train_dir).resolve()
    try:
        train = json.loads((tdir / "train.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{tdir}: no readable train.json ({exc}); expected the --out folder of "
                           "`synthdata train`") from None
    model = _model_folder(tdir, train)
    entry_id = entry_id or str(train.get("name") or tdir.name)
    evaluations = []
    if evaluation is not None:
        data = evaluation_data
        if data is None:
            raise CatalogError(f"{evaluation}: no evaluation/evaluation.json; run `synthdata "
                               f"evaluate {evaluation} --real ...` first")
        name = real_set_name or f"{data['real_set']['layout']}-{data['real_set']['fingerprint'][:8]}"
        evaluations.append(evaluation_figures(data, name, f"synthdata evaluate {evaluation}"))
    base = {"id": entry_id, "name": fields.pop("name", entry_id),
            "description": fields.pop("description", f"trained with synthdata train ({train.get('method')})"),
            "source": {"path": str(model)}, "modality": "unknown", "specialty": "unknown",
            "body_part": "unknown", "license": "unknown", "resolution": 512,
            "training": {k: train[k] for k in ("method", "base", "base_fingerprint",
                                               "data_fingerprint", "images", "spec_hash",
                                               "output_fingerprint") if k in train},
            "evaluations": [e.model_dump(mode="json") for e in evaluations]}
    base.update({k: v for k, v in fields.items() if v is not None})
    try:
        entry = Entry.model_validate(base)
    except ValidationError as exc:
        raise CatalogError(f"models add {tdir}: {exc.errors(include_url=False)[0]['msg']}") from None
    folder = user_dir(user)
    if entry_id in entries(user) and entries(user)[entry_id].origin == "shipped":
        raise CatalogError(f"id {entry_id!r} is a shipped entry; choose another --id")
    path = folder / f"{entry_id}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(entry.model_dump(mode="json", exclude_none=True),
                                           sort_keys=False, allow_unicode=True))
    return Listed(load_entry(path), path, "user")
