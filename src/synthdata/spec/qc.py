"""The spec's `qc:` section: per-sample quality checks, regeneration attempts and top-up.

Only the schema lives here; the checks themselves are `synthdata.qc`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from synthdata.errors import ModelError
from synthdata.spec.base import StrictModel

CLASSIFIER_CONFIG = "classifier.json"
CLASSIFIER_NORMALIZE = ("unit", "standardize", "imagenet", "xrv")


class BlankCheck(StrictModel):
    """Fail a blank or constant image: its gray-level standard deviation is below `min_std`."""

    check: Literal["blank"]
    min_std: float = Field(2.0, ge=0, description="gray levels (0-255)")


class SaturatedCheck(StrictModel):
    """Fail an image with more than `max_fraction` of its pixels at or below `low` or at or
    above `high`."""

    check: Literal["saturated"]
    max_fraction: float = Field(0.5, ge=0, le=1)
    low: int = Field(0, ge=0, le=255)
    high: int = Field(255, ge=0, le=255)


class NonFiniteCheck(StrictModel):
    """Fail an image whose pipeline output held NaN or infinite values."""

    check: Literal["non_finite"]


class DynamicRangeCheck(StrictModel):
    """Fail an image whose gray levels span less than `min_range` between two percentiles."""

    check: Literal["dynamic_range"]
    min_range: float = Field(32.0, ge=0, le=255)
    low_percentile: float = Field(1.0, ge=0, le=100)
    high_percentile: float = Field(99.0, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> DynamicRangeCheck:
        if self.low_percentile >= self.high_percentile:
            raise ValueError("low_percentile must be below high_percentile")
        return self


class NearDuplicateCheck(StrictModel):
    """Fail a sample whose embedding is within `threshold` cosine of an earlier sample (lower
    plan index) of the same label in the same batch or shard."""

    check: Literal["near_duplicate"]
    threshold: float = Field(0.95, ge=-1, le=1)
    scope: Literal["batch", "shard"] = "shard"
    embedder: Literal["pixel"] = "pixel"


class ClassifierCheck(StrictModel):
    """Fail a sample when a classifier's prediction of an attribute differs from the requested
    value (categorical), or by more than `tolerance` (numeric, e.g. age within 16 years)."""

    check: Literal["classifier"]
    model: str = Field(min_length=1, description="local model folder with classifier.json, "
                                                 "relative to the spec file's folder")
    attribute: str = Field(min_length=1, description="an output named in classifier.json")
    variable: str | None = Field(None, description="the plan variable holding the requested value "
                                                   "(default: the attribute's name)")
    tolerance: float | None = Field(None, ge=0, description="numeric attributes: allowed |error|")
    values: dict[str, str] | None = Field(None, description="requested value -> classifier class, "
                                                            "where their vocabularies differ")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")

    @property
    def target(self) -> str:
        """The plan variable compared with the prediction."""
        return self.variable or self.attribute


CHECK_TAGS = ("blank", "saturated", "non_finite", "dynamic_range", "near_duplicate", "classifier")
QCCheck = Annotated[BlankCheck | SaturatedCheck | NonFiniteCheck | DynamicRangeCheck
                    | NearDuplicateCheck | ClassifierCheck, Field(discriminator="check")]


class QC(StrictModel):
    """Quality checks run on every generated sample; failures are regenerated with derived seeds."""

    checks: list[QCCheck] = []
    max_attempts: int = Field(3, ge=1, le=100, description=(
        "generation attempts per sample, the first included (1: check and record, never regenerate)"))
    top_up: bool = Field(False, description=(
        "replace samples rejected by QC or memorization screening, so accepted per-label counts "
        "equal the planned counts (a shortfall after max_attempts is reported per label)"))


def qc_path_fields(data: dict) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Classifier folders in spec data (for `synthdata.spec.paths`: resolved against the spec
    file's folder, recorded absolute, reduced to their name in the spec hash)."""
    qc = data.get("qc")
    checks = qc.get("checks") if isinstance(qc, dict) else None
    for i, check in enumerate(checks if isinstance(checks, list) else []):
        if isinstance(check, dict) and isinstance(check.get("model"), str) and check["model"]:
            yield ("qc", "checks", i, "model"), check["model"]


def read_classifier_config(folder: str | Path) -> dict:
    """classifier.json of a QC classifier folder (the folder's contract with the spec and with
    `synthdata.qc.classifier`), checked: ModelError naming the file and field."""
    path = Path(folder) / CLASSIFIER_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; a classifier folder needs {CLASSIFIER_CONFIG} naming its outputs") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("outputs"), dict) or not cfg["outputs"]:
        raise ModelError(f"{path}: expected an object with a non-empty `outputs` mapping")
    if cfg.get("normalize", "unit") not in CLASSIFIER_NORMALIZE:
        raise ModelError(f"{path}: normalize must be one of {', '.join(CLASSIFIER_NORMALIZE)}")
    for name, out in cfg["outputs"].items():
        if not isinstance(out, dict) or out.get("type") not in ("categorical", "numeric"):
            raise ModelError(f"{path}: outputs.{name}.type must be 'categorical' or 'numeric'")
        if out["type"] == "categorical" and not (out.get("classes") == "id2label"
                                                 or (isinstance(out.get("classes"), list) and out["classes"])):
            raise ModelError(f"{path}: outputs.{name}.classes must be a list of class names or 'id2label'")
    return cfg
