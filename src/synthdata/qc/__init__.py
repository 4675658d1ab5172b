"""Per-sample quality checks: built-in image checks and classifier checks, each with a reason.

`build_checks(spec.qc)` turns the spec's `qc.checks` into check objects; `run_checks(checks,
images, rows)` runs them over a group of generated samples (a batch or a shard: the
near-duplicate check compares samples within the group) and says, per sample, whether it
passed and why not. Everything is a function of the images and plan rows, so the generation
worker can regenerate failures with `synthdata.plan.rows.attempt_seed(spec_seed, index, attempt)`
and record every attempt. See docs/qc.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from synthdata.qc.checks import (
    CheckResult,
    blank,
    dynamic_range,
    near_duplicates,
    non_finite,
    saturated,
)
from synthdata.qc.classifier import QCError, classify, load_classifier, read_config
from synthdata.spec.qc import QC

__all__ = ["Check", "CheckResult", "QCError", "SampleQC", "blank", "build_checks", "dynamic_range",
           "near_duplicates", "non_finite", "read_config", "run_checks", "saturated"]


@dataclass
class Check:
    """A configured check: runs over a group of samples and gives one result per sample."""

    name: str
    params: dict
    run: Callable[[Sequence[np.ndarray], Sequence[Mapping]], list[CheckResult]] = field(repr=False)


@dataclass(frozen=True)
class SampleQC:
    """All check results of one sample; it passes when every check passes."""

    key: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(r.passed for r in self.results)

    @property
    def reason(self) -> str:
        """The failed checks' reasons joined ('' when it passed)."""
        return "; ".join(f"{r.check}: {r.reason}" for r in self.results if not r.passed)

    def as_dict(self) -> dict:
        """JSON-able form for lineage: passed, reason and every result."""
        return {"passed": self.passed, "reason": self.reason,
                "results": [r.as_dict() for r in self.results]}


def _per_image(fn: Callable[..., CheckResult], **params) -> Callable:
    def run(images: Sequence[np.ndarray], rows: Sequence[Mapping]) -> list[CheckResult]:
        return [fn(image, **params) for image in images]
    return run


def build_checks(qc: QC | None, device: str | None = None) -> list[Check]:
    """The spec's checks as callables (classifiers are loaded here, once per process)."""
    checks: list[Check] = []
    for cfg in (qc.checks if qc is not None else []):
        params = cfg.model_dump(exclude={"check"})
        if cfg.check == "blank":
            run = _per_image(blank, **params)
        elif cfg.check == "saturated":
            run = _per_image(saturated, **params)
        elif cfg.check == "non_finite":
            run = _per_image(non_finite)
        elif cfg.check == "dynamic_range":
            run = _per_image(dynamic_range, **params)
        elif cfg.check == "near_duplicate":
            run = partial(near_duplicates, **params)
        elif cfg.check == "classifier":
            model = load_classifier(cfg.model, device or cfg.device)
            run = partial(classify, model, attribute=cfg.attribute, variable=cfg.variable,
                          tolerance=cfg.tolerance, values=cfg.values)
            params["fingerprint"] = model.fingerprint
        else:  # the spec's discriminated union makes this unreachable
            raise QCError(f"unknown check {cfg.check!r}")
        checks.append(Check(cfg.check if cfg.check != "classifier" else f"classifier:{cfg.attribute}",
                            params, run))
    return checks


def run_checks(checks: Sequence[Check], images: Sequence[np.ndarray],
               rows: Sequence[Mapping]) -> list[SampleQC]:
    """Every check over a group of samples; one SampleQC per sample, in the given order."""
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} images but {len(rows)} rows")
    per_check = [check.run(images, rows) for check in checks]
    return [SampleQC(str(row.get("key")), tuple(results[i] for results in per_check))
            for i, row in enumerate(rows)]
