"""The extractor spec of `synthdata train-extractor`: which labelled images, which encoder, how.

Read with the same strict YAML reader as the other specs; problems name file, line and field.

    name: phantom-encoder
    seed: 2026
    data:
      phantoms: {count: 2000, seed: 2026, size: 64}    # or  real: path/to/labelled/set
      validation_fraction: 0.2                         # held-out patients
    encoder: {hidden_sizes: [32, 64, 128, 256], depths: [1, 1, 1, 1], input_size: 64}
    training: {objective: both, epochs: 15, batch_size: 64, learning_rate: 0.002, threads: 1}
    output: {dir: ../src/synthdata/evaluation/phantom_encoder}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from synthdata.errors import Problem, SpecError
from synthdata.spec import problems_at, problems_of
from synthdata.spec.models import NAME_PATTERN, StrictModel
from synthdata.spec.yamlio import parse_yaml, read_yaml
from synthdata.training.spec import DEVICE_PATTERN, PhantomSource


class ExtractorData(StrictModel):
    """Labelled images: exactly one of phantoms (made on the fly) or a real labelled set."""

    phantoms: PhantomSource | None = None
    real: str | None = Field(None, description="a labelled set in any layout `synthdata evaluate "
                                               "--real` reads (table with path,label[,patient_id], "
                                               "WebDataset tars, one folder per label)")
    validation_fraction: float = Field(0.2, ge=0.0, le=0.5, description="share of patients held "
                                       "out for validation (whole patients, stratified by label)")


class Encoder(StrictModel):
    """A small ResNet (transformers `ResNetModel`, basic blocks) on gray images."""

    hidden_sizes: list[int] = Field([32, 64, 128, 256], min_length=1, max_length=6)
    depths: list[int] = Field([1, 1, 1, 1], min_length=1, max_length=6)
    input_size: int = Field(64, ge=16, le=1024, multiple_of=8, description="square input; images "
                            "are resized to it by the shared preprocessing")


class Augment(StrictModel):
    """Augmentations of the standardised image (no flips: they move findings to the other side)."""

    shift: int = Field(4, ge=0, le=64, description="random translation, pixels")
    contrast: float = Field(0.2, ge=0, le=1, description="random contrast scale, +- half of it")
    noise: float = Field(0.3, ge=0, le=5, description="max std of added Gaussian noise")
    blur: float = Field(0.0, ge=0, le=1, description="probability of a 5x5 binomial blur (off by "
                        "default: an extractor that ignores blur cannot see a blurry generator)")


class ExtractorTraining(StrictModel):
    """Objective and optimisation."""

    objective: Literal["supervised", "self_supervised", "both"] = Field(
        "both", description="cross-entropy on labels, SimCLR on two augmented views, or their sum")
    epochs: int = Field(15, ge=1, le=10_000)
    batch_size: int = Field(64, ge=4, le=4096)
    learning_rate: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    temperature: float = Field(0.2, gt=0, le=10, description="SimCLR softmax temperature")
    keep: Literal["best", "last"] = Field("best", description="the epoch with the lowest "
                                          "validation loss, or the last one")
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    threads: int | None = Field(1, ge=1, le=512, description="torch intra-op threads (pinned "
                                                             "for reproducible floats)")


class ExtractorOutput(StrictModel):
    """Where the extractor folder and its train.json go."""

    dir: str | None = None


class ExtractorSpec(StrictModel):
    """A `synthdata train-extractor` run."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63)
    data: ExtractorData
    encoder: Encoder = Encoder()
    augment: Augment = Augment()
    training: ExtractorTraining = ExtractorTraining()
    output: ExtractorOutput = ExtractorOutput()

    def output_dir(self) -> str:
        """output.dir (relative to the spec file), or models/<name> in the current folder."""
        return self.output.dir or f"models/{self.name}"


def extractor_spec_hash(spec: ExtractorSpec) -> str:
    """sha256 of everything that determines the weights (not output or description; a real
    set's path by its last component, its content is in train.json's fingerprint)."""
    data = spec.model_dump(mode="json", exclude={"output", "description"})
    if data["data"].get("real"):
        data["data"]["real"] = Path(data["data"]["real"]).name
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _checks(spec: ExtractorSpec) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    given = [k for k in ("phantoms", "real") if getattr(spec.data, k) is not None]
    if len(given) != 1:
        out.append((("data",), f"give exactly one of phantoms or real (got {', '.join(given) or 'none'})"))
    if spec.data.real is not None and not Path(spec.data.real).expanduser().exists():
        out.append((("data", "real"), f"{spec.data.real!r} does not exist"))
    if len(spec.encoder.depths) != len(spec.encoder.hidden_sizes):
        out.append((("encoder", "depths"), f"one depth per stage: {len(spec.encoder.hidden_sizes)} "
                    f"hidden sizes, {len(spec.encoder.depths)} depths"))
    return out


def parse_extractor_spec(data: object, lines: dict | None = None, source: str = "<extractor spec>",
                         base_dir: str | Path | None = None) -> ExtractorSpec:
    """Validate parsed YAML into an ExtractorSpec; relative paths resolve against base_dir."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError([Problem(source, "expected a YAML mapping (name, data, encoder, training)", line=1)])
    try:
        spec = ExtractorSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_of(exc, source, lines)) from None
    if base_dir is not None:
        base = Path(base_dir).expanduser().resolve()
        update = {}
        if spec.data.real is not None and not Path(spec.data.real).expanduser().is_absolute():
            update["data"] = spec.data.model_copy(update={"real": str(base / spec.data.real)})
        if spec.output.dir is not None and not Path(spec.output.dir).expanduser().is_absolute():
            update["output"] = ExtractorOutput(dir=str(base / spec.output.dir))
        spec = spec.model_copy(update=update)
    problems = problems_at(source, lines, _checks(spec))
    if problems:
        raise SpecError(problems)
    return spec


def load_extractor_spec(path: str | Path) -> ExtractorSpec:
    """Read and validate an extractor spec file (relative paths against its folder)."""
    data, lines = read_yaml(path)
    return parse_extractor_spec(data, lines, str(path), base_dir=Path(path).parent)


def load_extractor_spec_text(text: str, source: str = "<extractor spec>",
                             base_dir: str | Path | None = None) -> ExtractorSpec:
    """Validate extractor-spec YAML given as text."""
    data, lines = parse_yaml(text, source)
    return parse_extractor_spec(data, lines, source, base_dir=base_dir)
