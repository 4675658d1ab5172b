"""The spec's pydantic models: the schema users write and editors validate against."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from synthdata.spec.base import StrictModel
from synthdata.spec.cohort import Cohort
from synthdata.spec.qc import QC

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"

# The `builtin:NAME` models: diffusers pipelines (synthdata.generation.generators.builtin builds
# them; also training bases), and those drawn by code with no weights (generators.procedural).
BUILTIN_MODELS = ("tiny", "phantom")
PROCEDURAL_MODELS = ("procedural",)
# The findings the procedural phantoms draw (synthdata.phantoms; builtin:procedural's labels).
PHANTOM_FINDINGS = ("normal", "effusion", "consolidation", "nodule", "cardiomegaly")
SCHEDULERS = ("ddim", "ddpm", "pndm", "dpm++", "euler", "euler_a", "heun", "unipc")


class IntRange(StrictModel):
    """Uniform integer in [min, max], both ends included."""

    min: int
    max: int


class Categorical(StrictModel):
    """Weighted choice among string values."""

    values: tuple[str, ...]
    weights: tuple[float, ...]


def _to_variable(raw: Any) -> Any:
    """Accept the three user forms: [a, b], {a: 0.7, b: 0.3}, {min: 20, max: 90}."""
    if isinstance(raw, (IntRange, Categorical)):
        return raw
    if isinstance(raw, list):
        if not raw:
            raise ValueError("a variable needs at least one value")
        for v in raw:
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise ValueError(f"list values must be strings or numbers, got {v!r}")
        values = tuple(str(v) for v in raw)
        if len(set(values)) != len(values):
            raise ValueError("list values must be distinct")
        return Categorical(values=values, weights=tuple(1.0 for _ in values))
    if isinstance(raw, dict):
        if set(raw) == {"min", "max"}:
            lo, hi = raw["min"], raw["max"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
                raise ValueError("a range needs integer min and max")
            if lo > hi:
                raise ValueError(f"range min ({lo}) is greater than max ({hi})")
            return IntRange(min=lo, max=hi)
        if not raw:
            raise ValueError("a variable needs at least one value")
        weights = []
        for k, w in raw.items():
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise ValueError(f"weight of {k!r} must be a number >= 0, got {w!r}")
            weights.append(float(w))
        if sum(weights) <= 0:
            raise ValueError("weights must not all be zero")
        return Categorical(values=tuple(str(k) for k in raw), weights=tuple(weights))
    raise ValueError("expected a list of values, a mapping value -> weight, or {min: int, max: int}")


_VARIABLE_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
        {"type": "object", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
         "required": ["min", "max"], "additionalProperties": False},
        {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
    ],
    "description": "list (uniform), mapping value -> weight, or integer range {min, max}",
}

def _from_variable(var: IntRange | Categorical) -> dict:
    """Back to the user's syntax, so a resolved spec reads (and re-validates) like the original."""
    if isinstance(var, IntRange):
        return {"min": var.min, "max": var.max}
    return dict(zip(var.values, var.weights))


Variable = Annotated[
    IntRange | Categorical, BeforeValidator(_to_variable), PlainSerializer(_from_variable),
    WithJsonSchema(_VARIABLE_SCHEMA),
]
def _is_none(value: Any) -> bool:
    """Unset optional sections stay out of the resolved spec, so older specs hash as before."""
    return value is None


Dim = Annotated[int, Field(ge=16, le=4096, multiple_of=8)]


class GeneratorOverride(StrictModel):
    """Per-label generation settings that may differ from the spec-wide generator."""

    steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = None


class TextualInversion(StrictModel):
    """A textual-inversion embedding (A1111 .pt or diffusers .bin/.safetensors) and its token."""

    path: str
    token: str = Field(min_length=1)


class Lora(StrictModel):
    """LoRA weights (.safetensors) applied to the pipeline at the given scale."""

    path: str
    scale: float = Field(1.0, ge=-4, le=4)


class Generator(StrictModel):
    """Which text-to-image model generates, and how."""

    model: str = Field("builtin:tiny", min_length=1,
                       description="builtin:tiny, builtin:phantom, builtin:procedural, catalog:ID, a local pipeline folder, or a hub id")
    revision: str | None = None
    scheduler: Literal[SCHEDULERS] = "ddim"  # type: ignore[valid-type]
    steps: int = Field(25, ge=1, le=1000)
    guidance_scale: float = Field(4.0, ge=0, le=50)
    height: Dim = 512
    width: Dim = 512
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    batch_size: int = Field(8, ge=1, le=512)
    negative_prompt: str = ""
    textual_inversion: list[TextualInversion] = []
    lora: list[Lora] = []


class Label(StrictModel):
    """One class of the dataset: how many, and how its prompts are made."""

    weight: float | None = Field(None, ge=0)
    count: int | None = Field(None, ge=0)
    prompts: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    vars: dict[str, Variable] = {}
    generator: GeneratorOverride = GeneratorOverride()
    where: str | None = Field(None, exclude_if=_is_none, description=(
        "cohort specs: expression over the table's columns selecting this label's rows "
        "(a row takes the first label whose `where` holds)"))


class Shards(StrictModel):
    """How samples are grouped into tar files."""

    size: int = Field(1000, ge=1, le=1_000_000)


ThresholdValue = Literal["auto"] | Annotated[float, Field(ge=-1, le=1)]
DEFAULT_MATCHERS = ("aligned",)
DEFAULT_RETRIEVERS = ("efficientnet-lite0",)
EMBEDDER_DEPRECATED = ("memorization.embedder is the deprecated old name of memorization.matchers "
                       "(it selects the deciding matchers, and `aligned` is no embedder): rename it")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Memorization(StrictModel):
    """Screening of synthetic images against real reference images (see docs/screening.md)."""

    reference: list[str] = Field([], description=(
        "real images: folders (searched recursively) or files of PNG/JPEG/TIFF/BMP, DICOM, "
        "NIfTI, WebDataset tars and Parquet tables; 'from-training': the images the generator's "
        "model and adapters were trained on (their train.json from `synthdata train`)"))
    matchers: Annotated[list[str], BeforeValidator(_as_list), WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                        "minItems": 1}]})] = Field(
        list(DEFAULT_MATCHERS), min_length=1, description=(
            "the matchers that decide, each with its own threshold; a sample is rejected when "
            "any of them says reject, reviewed when any says review. 'aligned' verifies the "
            "candidates of the retrievers by aligned band-pass correlation (flips, rotations, "
            "inversion, renderings, crops); 'pixel' (32x32 thumbnails) and "
            "'efficientnet-lite0' score by cosine; a folder holds a local model. "
            "A single name is accepted. Formerly `embedder` (deprecated old name, still read)"))
    retrievers: list[str] = Field(list(DEFAULT_RETRIEVERS), description=(
        "embedders that only propose candidates (their k nearest real images) for 'aligned'; "
        "their scores are recorded but do not vote. Embedders listed in `matchers` propose "
        "candidates too"))
    threshold: ThresholdValue | dict[str, ThresholdValue] = Field("auto", description=(
        "'auto' (calibrated on the reference: target_recall on synthesized copies within "
        "max_false_positive on other-patient pairs), a number for every matcher, or a mapping "
        "matcher -> auto | number"))
    review_band: float = Field(0.0, ge=0, le=1, description=(
        "'review' in [threshold - review_band, threshold), 'reject' at or above"))
    k: int = Field(5, ge=1, le=100, description="nearest real images kept (and verified) per sample")
    slice_axis: int = Field(-1, ge=-3, le=2,
                            description="NIfTI references: spatial axis the 2-D slices are taken along")
    image_column: str | None = Field(None, description="Parquet references: column of image bytes "
                                                       "(default: detected)")
    group_column: str | None = Field(None, description=(
        "patient column: of Parquet tables of images, of each WebDataset sample's .json, or of "
        "metadata tables beside the images (CSV/TSV/Parquet, e.g. metadata.csv); by default a "
        "column called like a patient id (patient_id, PatientID, subject_id, ...) is used. "
        "DICOM PatientID wins where present"))
    group_pattern: str | None = Field(None, description=(
        "patient group from the image id (root name/path inside, e.g. 'cohort/p0042/s1.png') "
        "by a regular expression: its group named 'group', else its first group, else the match"))
    target_recall: float = Field(0.99, gt=0, lt=1, description=(
        "threshold auto: share of the copies synthesized from the reference that must be caught"))
    min_recall: float = Field(0.9, gt=0, le=1, description=(
        "threshold auto: floor of the calibrated recall; a matcher whose threshold, raised to "
        "the false-positive budget, catches fewer synthesized copies accepts nothing (every "
        "sample goes to review, with the reason)"))
    reference_duplicates: Literal["merge", "error"] = Field("merge", description=(
        "near-duplicates inside the reference across patient groups (one study exported under "
        "two patient ids): 'merge' counts each cluster as one patient for the false-positive "
        "estimate (and the report lists them); 'error' refuses the reference"))
    max_false_positive: float = Field(0.01, gt=0, lt=1, description=(
        "threshold auto: budget of other-patient pairs flagged, split between the deciding "
        "matchers; a threshold that would exceed it is raised and the recall reached reported"))
    calibration_images: int = Field(300, ge=1, description=(
        "calibration: real images sampled (copies and hard negatives are made of them; each, "
        "screened against other patients only, is a false-positive trial)"))
    calibration_copies: int = Field(400, ge=10, description=(
        "calibration: edited copies synthesized for the recall target"))
    calibration_negatives: int = Field(400, ge=0, description=(
        "calibration: hard negatives, sampled real images edited like the copies and screened "
        "against other patients only (false-positive trials besides the images themselves)"))
    exact_limit: int = Field(100_000, ge=0, description=(
        "exact search up to this many reference rows (views of images); an approximate index above"))
    index_memory_gb: float = Field(16.0, gt=0, description=(
        "memory budget of an approximate index; above it a compressed (IVF-PQ) index"))
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    batch_size: int | None = Field(None, ge=1, le=4096, description=(
        "images per embedder forward pass; default: the embedder's own (torch models 16 on "
        "a CPU, 64 on a GPU; pixel 256). Performance only"))

    @model_validator(mode="before")
    @classmethod
    def _embedder_is_the_old_name(cls, data: Any) -> Any:
        """`embedder` is read as `matchers` (its deprecated old name), with a warning."""
        if not isinstance(data, dict) or "embedder" not in data:
            return data
        if "matchers" in data:
            raise ValueError("give memorization.matchers only: embedder is its deprecated old name")
        warnings.warn(EMBEDDER_DEPRECATED, FutureWarning, stacklevel=2)
        data = dict(data)
        data["matchers"] = data.pop("embedder")
        return data

    @property
    def candidate_embedders(self) -> list[str]:
        """Embedders that search the reference: the deciding ones (not 'aligned') then the
        retrievers, each once; retrievers only when 'aligned' decides."""
        out = [e for e in self.matchers if e != "aligned"]
        if "aligned" in self.matchers:
            out += [r for r in self.retrievers if r not in out and r != "aligned"]
        return out

    def threshold_for(self, name: str) -> str | float:
        """The configured threshold of one matcher: 'auto' or a number."""
        if isinstance(self.threshold, dict):
            return self.threshold.get(name, "auto")
        return self.threshold


class Output(StrictModel):
    """Where the dataset is written and whether DVC tracks it."""

    dir: str | None = None
    dvc: bool = False


ATTENTION_BACKENDS = ("default", "math", "efficient", "flash", "cudnn")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


class Speed(StrictModel):
    """Speed knobs of the generator. They never change which samples are in which pipeline call
    (the plan decides that), but some change float results: every knob that is not at its
    default is recorded in each shard's marker, is part of the folder's identity (a resume with
    other knobs is refused) and is replayed by `reproduce`. See docs/throughput.md for which
    knobs changed pixels on which device."""

    attention: Literal[ATTENTION_BACKENDS] = Field(  # type: ignore[valid-type]
        "default", description="attention kernel: default (diffusers' choice), math, efficient, "
                               "flash, cudnn (torch scaled-dot-product backends)")
    channels_last: bool = Field(False, description="UNet and VAE in channels-last memory format")
    compile: Literal[COMPILE_MODES] = Field(  # type: ignore[valid-type]
        "off", description="torch.compile the UNet with this mode (artefacts cached under "
                           "$SYNTHDATA_CACHE/inductor across workers and runs)")
    fuse_qkv: bool = Field(False, description="fused query/key/value projections")
    vae_slicing: bool = Field(False, description="decode one image at a time (less memory)")
    vae_tiling: bool = Field(False, description="decode in tiles (less memory at large sizes)")
    tf32: bool = Field(False, description="TF32 matrix multiplication on Ampere+ GPUs")

    def changed(self) -> dict:
        """The knobs that are not at their default (what markers record)."""
        return self.model_dump(mode="json", exclude_defaults=True)


class Execution(StrictModel):
    """Where and how fast the generation runs. Engine, workers and threads never change the
    bytes of the dataset; `speed` knobs may, and are recorded per shard (see Speed)."""

    engine: Literal["local", "dask", "ray"] = "local"
    workers: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"
    address: str | None = None
    threads_per_worker: int = Field(1, ge=1, le=256)
    speed: Speed = Speed()


class Spec(StrictModel):
    """A synthetic dataset: labels and their proportions, prompts, model, sharding, screening."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63)
    count: int | None = Field(None, ge=1, le=1_000_000_000)
    labels: dict[Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)], Label] = Field(min_length=1)
    vars: dict[str, Variable] = {}
    generator: Generator = Generator()
    shards: Shards = Shards()
    memorization: Memorization = Memorization()
    output: Output = Output()
    execution: Execution = Execution()
    cohort: Cohort | None = Field(None, exclude_if=_is_none, description=(
        "draw labels and variables from rows of a table of real metadata"))
    qc: QC | None = Field(None, exclude_if=_is_none, description=(
        "per-sample quality checks, regeneration attempts and top-up"))

    @property
    def label_names(self) -> list[str]:
        """Labels in spec order; a label's index is its position here."""
        return list(self.labels)

    def screens_while_generating(self) -> bool:
        """True when `qc.top_up` and a real reference make memorization screening a QC check in
        the generation worker (near-copies regenerated)."""
        return self.qc is not None and self.qc.top_up and bool(self.memorization.reference)

    def output_dir(self) -> str:
        """The output folder: output.dir, or datasets/<name> in the current folder."""
        return self.output.dir or f"datasets/{self.name}"
