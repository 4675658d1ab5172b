"""The train spec: what to adapt, on which images and captions, how (pydantic schema + checks).

Read with the same strict YAML reader as generation specs; every problem is a
`Problem(file, line, field, message)` and `load_train_spec` raises `SpecError` with all of them.
`synthdata train --schema` prints the JSON Schema.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from synthdata.errors import Problem, SpecError
from synthdata.spec import problems_at, problems_of
from synthdata.spec.checks import FieldPath, is_local_model, template_slots
from synthdata.spec.paths import url_problems
from synthdata.spec.models import NAME_PATTERN, StrictModel
from synthdata.spec.yamlio import parse_yaml, read_yaml
from synthdata.spec.models import BUILTIN_MODELS
from synthdata.phantoms import LABELS

DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:\d+|mps)$"
Resolution = Annotated[int, Field(ge=16, le=4096, multiple_of=8)]


class PhantomSource(StrictModel):
    """Train on a phantom set made on the fly (`synthdata phantoms`, cached by its parameters)."""

    count: int = Field(ge=1, le=1_000_000)
    seed: int = Field(0, ge=0, lt=2**63)
    size: int = Field(64, ge=32, le=2048)
    labels: list[str] | None = Field(None, description="subset of the phantom labels (default: all)")


class Data(StrictModel):
    """Images and their captions: exactly one source."""

    folder: str | None = Field(None, description="images (recursive); caption from NAME.txt beside "
                                                 "each image, else caption_template ({name}, {folder})")
    csv: str | None = Field(None, description="table with a path column (relative to the table's folder)")
    parquet: str | None = None
    webdataset: list[str] | None = Field(None, description="tar files or glob patterns; members "
                                                           "KEY.png/jpg + KEY.txt (caption) or KEY.json")
    phantoms: PhantomSource | None = None
    path_column: str = "path"
    caption_column: str | None = Field(None, description="default 'caption' when no caption_template")
    caption_template: str | None = Field(None, description="e.g. '{finding}, {view} view' over the "
                                                           "table's columns or the tar's JSON keys")
    filter: dict[str, list[str]] = Field({}, description="keep rows whose column value is listed")
    limit: int | None = Field(None, ge=1, description="use only the first N images (after filter)")
    resolution: Resolution = 64
    center_crop: bool = True
    random_flip: bool = Field(False, description="mirror images at random (off: flips swap sides)")
    caption_dropout: float = Field(0.0, ge=0, le=1, description="share of empty captions (for "
                                                                "classifier-free guidance)")

    def source_kind(self) -> str | None:
        """Which source is set (the first one, if several)."""
        return next((k for k in ("folder", "csv", "parquet", "webdataset", "phantoms")
                     if getattr(self, k) is not None), None)


class Training(StrictModel):
    """Optimisation and checkpointing."""

    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(1e-4, gt=0, le=10)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(1e-2, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    noise_offset: float = Field(0.0, ge=0, le=1)
    snr_gamma: float | None = Field(None, gt=0, description="Min-SNR loss weighting (5.0 is usual)")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    threads: int | None = Field(None, ge=1, le=512, description="torch intra-op threads (pinned "
                                                                "for reproducible floats)")
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1, le=1000)
    cache_latents: bool = Field(True, description="encode each image once (frozen VAE, no flips)")


class VaeStage(StrictModel):
    """Train the VAE first (reconstruction + KL), then the UNet on its latents."""

    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    kl_weight: float = Field(1e-6, ge=0)


class FullOptions(StrictModel):
    """method: full — which modules are trained."""

    unet: bool = True
    text_encoder: bool = False
    text_encoder_learning_rate: float | None = Field(None, gt=0)
    vae: VaeStage | None = None


class LoraOptions(StrictModel):
    """method: lora — low-rank adapters on attention projections (peft)."""

    rank: int = Field(4, ge=1, le=1024)
    alpha: float | None = Field(None, gt=0, description="default: rank")
    target_modules: list[str] = Field(["to_k", "to_q", "to_v", "to_out.0"], min_length=1)
    text_encoder: bool = Field(False, description="also adapt the text encoder's attention")


class TextualInversionOptions(StrictModel):
    """method: textual_inversion — new token vectors in the text encoder's embedding table."""

    token: str = Field(min_length=1, max_length=64, pattern=r"^\S+$")
    initializer: str | None = Field(None, description="text whose token embeddings start the "
                                                      "vectors (mean); default: mean of all")
    vectors: int = Field(1, ge=1, le=64)


class TrainOutput(StrictModel):
    """Where the trained model goes."""

    dir: str | None = None
    clean_checkpoints: bool = Field(False, description="delete DIR/checkpoints once the run has "
                                                       "written its outputs and train.json")


class TrainSpec(StrictModel):
    """A training run: base model, method, data, hyperparameters, output."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63)
    base: str = Field("builtin:tiny", min_length=1,
                      description="builtin:NAME, a local diffusers pipeline folder, or a hub id")
    revision: str | None = None
    method: Literal["full", "lora", "textual_inversion"]
    data: Data
    training: Training
    full: FullOptions = FullOptions()
    lora: LoraOptions = LoraOptions()
    textual_inversion: TextualInversionOptions | None = None
    output: TrainOutput = TrainOutput()

    def output_dir(self) -> str:
        """output.dir (relative to the spec file), or models/<name> in the current folder."""
        return self.output.dir or f"models/{self.name}"


# Fields that change only where or how fast a run goes, never the trained weights' meaning.
NON_IDENTITY_FIELDS = ("output", "description")


def _path_fields(data: dict, base_dir: str | Path | None = None) -> list[tuple[tuple, str]]:
    """(field path, value) of every local path a train spec's data names."""
    out: list[tuple[tuple, str]] = []
    base = data.get("base")
    if isinstance(base, str) and is_local_model(base, base_dir):
        out.append((("base",), base))
    src = data.get("data") or {}
    for key in ("folder", "csv", "parquet"):
        if isinstance(src.get(key), str):
            out.append((("data", key), src[key]))
    for i, pattern in enumerate(src.get("webdataset") or []):
        if isinstance(pattern, str):
            out.append((("data", "webdataset", i), pattern))
    if isinstance((data.get("output") or {}).get("dir"), str):
        out.append((("output", "dir"), data["output"]["dir"]))
    return out


def _locations(data: dict) -> list[tuple[tuple, object]]:
    """Every location a train spec's raw data names (base model, data, output), for the URL
    check; [] when a section is malformed (the schema then reports it)."""
    try:
        return [(("base",), data.get("base")), *_path_fields(data)]
    except AttributeError:
        return []


def resolve_train_paths(data: dict, base_dir: str | Path) -> dict:
    """A copy of train-spec data with relative local paths made absolute against base_dir
    (the spec file's folder), as generation specs do."""
    base = Path(base_dir).expanduser().resolve()
    out = json.loads(json.dumps(data))
    for path, value in _path_fields(out, base):
        p = Path(value).expanduser()
        target = out
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = str(p if p.is_absolute() else base / p)
    return out


def train_spec_hash(spec: TrainSpec) -> str:
    """sha256 of everything that determines the trained weights (resume refuses another hash).

    Local paths count by their last component only (their content is in train.json's
    fingerprints), so the same spec in two checkouts has the same hash."""
    data = {k: v for k, v in spec.model_dump(mode="json").items() if k not in NON_IDENTITY_FIELDS}
    for path, value in _path_fields(data):
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = Path(value).name
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _source_paths(data: Data) -> list[tuple[FieldPath, str]]:
    out: list[tuple[FieldPath, str]] = []
    for key in ("folder", "csv", "parquet"):
        value = getattr(data, key)
        if value is not None:
            out.append((("data", key), value))
    for i, pattern in enumerate(data.webdataset or []):
        out.append((("data", "webdataset", i), pattern))
    return out


def check_train_spec(spec: TrainSpec) -> list[tuple[FieldPath, str]]:
    """Cross-field problems of a structurally valid train spec, as (field path, message)."""
    out: list[tuple[FieldPath, str]] = []
    data = spec.data
    kinds = [k for k in ("folder", "csv", "parquet", "webdataset", "phantoms") if getattr(data, k) is not None]
    if len(kinds) != 1:
        out.append((("data",), "give exactly one image source: folder, csv, parquet, webdataset or "
                    f"phantoms (got {', '.join(kinds) or 'none'})"))
    for path, value in _source_paths(data):
        if path[1] == "webdataset":
            if not glob.glob(str(Path(value).expanduser())):
                out.append((path, f"no tar file matches {value!r}"))
        elif path[1] == "folder" and not Path(value).expanduser().is_dir():
            out.append((path, f"folder {value!r} does not exist"))
        elif path[1] != "folder" and not Path(value).expanduser().is_file():
            out.append((path, f"file {value!r} does not exist"))
    if data.caption_column is not None and data.caption_template is not None:
        out.append((("data", "caption_template"), "give caption_column or caption_template, not both"))
    if data.caption_template is not None:
        try:
            template_slots(data.caption_template)
        except ValueError as exc:
            out.append((("data", "caption_template"), f"bad caption template: {exc}"))
    if data.phantoms is not None and data.phantoms.labels is not None:
        bad = [x for x in data.phantoms.labels if x not in LABELS]
        if bad or not data.phantoms.labels:
            out.append((("data", "phantoms", "labels"), f"expected labels among {list(LABELS)}, got {bad or '[]'}"))
    if data.filter and data.folder is not None:
        out.append((("data", "filter"), "filter needs columns: use it with csv, parquet, webdataset (JSON keys) or phantoms"))
    out += _check_base(spec)
    out += _check_method(spec)
    if spec.training.warmup_steps > spec.training.steps:
        out.append((("training", "warmup_steps"), f"warmup_steps ({spec.training.warmup_steps}) is more "
                    f"than steps ({spec.training.steps})"))
    return out


def _check_base(spec: TrainSpec) -> list[tuple[FieldPath, str]]:
    base = spec.base
    if base.startswith("builtin:"):
        if base.removeprefix("builtin:") not in BUILTIN_MODELS:
            return [(("base",), f"unknown built-in model {base!r}; known: "
                     f"{['builtin:' + m for m in BUILTIN_MODELS]}")]
    elif is_local_model(base) and not Path(base).expanduser().is_dir():
        return [(("base",), f"model folder {base!r} does not exist (expected builtin:tiny, a local "
                 "diffusers pipeline folder, or a hub id org/name)")]
    return []


def _check_method(spec: TrainSpec) -> list[tuple[FieldPath, str]]:
    out: list[tuple[FieldPath, str]] = []
    ti = spec.textual_inversion
    if spec.method == "textual_inversion":
        if ti is None:
            out.append((("textual_inversion",), "method textual_inversion needs a textual_inversion "
                        "section with the new token, e.g. {token: '<effusion>'}"))
        elif spec.data.caption_template is not None and ti.token not in spec.data.caption_template:
            out.append((("data", "caption_template"), f"captions must contain the token {ti.token!r} "
                        "that textual inversion learns"))
    elif ti is not None:
        out.append((("textual_inversion",), f"only used with method: textual_inversion (method is {spec.method})"))
    if spec.method == "full" and not (spec.full.unet or spec.full.text_encoder or spec.full.vae):
        out.append((("full",), "nothing to train: set unet, text_encoder or vae"))
    if spec.method != "full" and spec.full != FullOptions():
        out.append((("full",), f"only used with method: full (method is {spec.method})"))
    if spec.method != "lora" and spec.lora != LoraOptions():
        out.append((("lora",), f"only used with method: lora (method is {spec.method})"))
    return out


def _problems(exc: ValidationError, source: str, lines: dict) -> list[Problem]:
    fixed = []
    for p in problems_of(exc, source, lines):
        msg = p.message.replace("`synthdata schema`", "`synthdata train --schema`")
        fixed.append(Problem(p.file, msg, line=p.line, field=p.field))
    return fixed


def parse_train_spec(data: object, lines: dict | None = None, source: str = "<train spec>",
                     base_dir: str | Path | None = None) -> TrainSpec:
    """Validate parsed YAML into a TrainSpec (structure, then cross-field checks); with base_dir,
    relative paths resolve against it."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Problem(source, "expected a YAML mapping at the top level (name, method, "
                                 f"data, training, ...), got {type(data).__name__}", line=1)])
    urls = url_problems(_locations(data))
    if urls:  # object storage is not supported yet: refused before anything is read or written
        raise SpecError(problems_at(source, lines, urls))
    try:
        spec = TrainSpec.model_validate(data)
        if base_dir is not None:
            spec = TrainSpec.model_validate(resolve_train_paths(spec.model_dump(mode="json"), base_dir))
    except ValidationError as exc:
        raise SpecError(_problems(exc, source, lines)) from None
    problems = problems_at(source, lines, check_train_spec(spec))
    if problems:
        raise SpecError(problems)
    return spec


def load_train_spec(path: str | Path) -> TrainSpec:
    """Read and validate a train spec file; relative paths in it resolve against its folder.
    Raises SpecError naming every problem."""
    data, lines = read_yaml(path)
    return parse_train_spec(data, lines, str(path), base_dir=Path(path).parent)


def load_train_spec_text(text: str, source: str = "<train spec>", base_dir: str | Path | None = None) -> TrainSpec:
    """Validate train-spec YAML given as text (relative paths against base_dir when given)."""
    data, lines = parse_yaml(text, source)
    return parse_train_spec(data, lines, source, base_dir=base_dir)


def train_json_schema() -> dict:
    """The train spec's JSON Schema."""
    schema = TrainSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "synthdata train spec"
    return schema
