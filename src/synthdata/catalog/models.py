"""The catalogue entry schema (pydantic; `entry_schema()` exports it as JSON Schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synthdata.spec.models import NAME_PATTERN, SCHEDULERS

COMMIT = r"^[0-9a-f]{40}$"
# Metrics where lower is better; every other metric ranks higher-first.
LOWER_IS_BETTER = ("fid", "kid", "kid_std", "ms_ssim", "nn_similarity", "fd_inf", "kid_unbiased",
                   "cmmd", "matched_fid", "real_vs_real_fid")


class Strict(BaseModel):
    """Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    """Where the weights come from: exactly one of builtin, hub (with revision) or path."""

    builtin: str | None = Field(None, pattern=r"^builtin:[a-z0-9_-]+$",
                                description="a built-in model, e.g. builtin:tiny")
    hub: str | None = Field(None, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$",
                            description="a Hugging Face hub id (owner/name)")
    revision: str | None = Field(None, pattern=COMMIT, description=(
        "the pinned commit (40 hex) of a hub model; null = unpinned (catalog: then needs "
        "generator.revision in the spec)"))
    path: str | None = Field(None, description="a local diffusers folder (relative to the "
                                               "catalogue file)")

    @model_validator(mode="after")
    def _one(self) -> Source:
        given = [k for k in ("builtin", "hub", "path") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of builtin, hub, path (got {given or 'none'})")
        if self.revision and not self.hub:
            raise ValueError("revision only applies to a hub source")
        return self

    @property
    def kind(self) -> str:
        """builtin | hub | local."""
        return "builtin" if self.builtin else "hub" if self.hub else "local"


class Recommended(Strict):
    """Generation settings the model's authors recommend; a spec's own fields win."""

    scheduler: Literal[SCHEDULERS] | None = None  # type: ignore[valid-type]
    steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None
    negative_prompt: str | None = None
    prompt_template: str | None = Field(None, description="how the model was prompted in training "
                                                          "(documentation for spec authors)")


class RealSetRef(Strict):
    """The real set an evaluation was measured against."""

    name: str
    fingerprint: str | None = Field(None, description="real_set.fingerprint of evaluation.json")
    images: int | None = Field(None, ge=0)


class Evaluation(Strict):
    """Measured figures of a model: which extractor, which real set, how it was measured."""

    extractor: str
    real_set: RealSetRef
    metrics: dict[str, float] = Field(description=(
        "e.g. fid, kid, precision, recall, density, coverage, utility_synthetic_auc; an interval "
        "as METRIC_ci_low / METRIC_ci_high, a standard error as METRIC_se, n per side as n_real "
        "/ n_synthetic"))
    samples: int | None = Field(None, ge=0, description="synthetic images evaluated")
    measured_by: str = Field(description="the command, or the publication that reported it")

    def interval(self, name: str) -> tuple[float, float] | None:
        """(low, high) of a figure: its recorded 95% interval, else value ± 1.96 SE; or None."""
        m = self.metrics
        if f"{name}_ci_low" in m and f"{name}_ci_high" in m:
            return m[f"{name}_ci_low"], m[f"{name}_ci_high"]
        if name in m and f"{name}_se" in m:
            return m[name] - 1.96 * m[f"{name}_se"], m[name] + 1.96 * m[f"{name}_se"]
        return None


class Entry(Strict):
    """One model of the catalogue."""

    id: str = Field(pattern=NAME_PATTERN, max_length=64)
    name: str
    description: str = ""
    source: Source
    modality: str
    specialty: str
    body_part: str
    license: str
    gated: bool = False
    resolution: int = Field(ge=16, le=4096, multiple_of=8)
    recommended: Recommended = Recommended()
    citation: str = ""
    links: list[str] = []
    evaluations: list[Evaluation] = []
    training: dict | None = Field(None, description="for `synthdata models add`: method, base "
                                                    "and data fingerprints from train.json")

    def metric(self, name: str, extractor: str | None = None, real_set: str | None = None
               ) -> tuple[float, Evaluation] | None:
        """The first evaluation figure `name` (matching extractor / real set name), if any."""
        for ev in self.evaluations:
            if name in ev.metrics and extractor in (None, ev.extractor) and \
                    real_set in (None, ev.real_set.name, ev.real_set.fingerprint):
                return ev.metrics[name], ev
        return None


def entry_schema() -> dict:
    """JSON Schema of a catalogue entry (YAML files under catalog/entries validate against it)."""
    schema = Entry.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "synthdata model catalogue entry"
    return schema
