"""Checks that span fields: template slots, label counts, model and file paths."""

from __future__ import annotations

import re
import string
from pathlib import Path

from synthdata.spec.models import (
    BUILTIN_MODELS,
    PHANTOM_FINDINGS,
    PROCEDURAL_MODELS,
    Categorical,
    IntRange,
    Memorization,
    Spec,
)
from synthdata.spec.qc import read_classifier_config
from synthdata.errors import ModelError
from synthdata.spec.blend import is_blend, parse_blend, template_weight_slots

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FieldPath = tuple[str | int, ...]
# memorization.reference values that name no file (resolved by other packages).
SPECIAL_REFERENCES = ("from-training",)


def template_slots(template: str) -> list[str]:
    """The {name} slots of a prompt template; raise ValueError on anything but plain names."""
    slots = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"slot {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                             "is not allowed; write slots as {variable_name}")
        slots.append(name)
    return slots


def is_local_model(model: str, base_dir: str | Path | None = None) -> bool:
    """True when the model string names a local folder rather than a builtin or hub id.

    `org/name` is a hub id unless a folder of that name exists (relative to `base_dir`, the
    spec file's folder, when given; else the current folder).
    """
    if model.startswith(("builtin:", "catalog:")):
        return False
    if model.startswith(("/", "./", "../", "~")):
        return True
    candidate = Path(model).expanduser()
    if (Path(base_dir) / candidate if base_dir is not None else candidate).exists():
        return True
    return not HUB_ID.match(model)


def check_spec(spec: Spec, check_files: bool = True) -> list[tuple[FieldPath, str]]:
    """Every cross-field problem of a structurally valid spec, as (field path, message).

    `check_files=False` leaves out the checks that named files exist (a dataset folder's
    recorded spec is read on machines that have neither the model nor the real data).
    """
    problems: list[tuple[FieldPath, str]] = []
    problems += _check_templates(spec)
    problems += _check_cohort(spec) if spec.cohort is not None else _check_no_cohort(spec)
    if spec.cohort is None or spec.cohort.mode == "explicit":
        problems += _check_counts(spec)
    problems += _check_builtin(spec)
    problems += _check_qc(spec, check_files)
    if check_files:
        problems += _check_paths(spec)
    return problems


def _check_builtin(spec: Spec) -> list[tuple[FieldPath, str]]:
    model = spec.generator.model
    if not model.startswith("builtin:"):
        return []

    name = model.removeprefix("builtin:")
    if name in PROCEDURAL_MODELS:
        return _check_procedural(spec)
    if name in BUILTIN_MODELS:
        return []
    return [(("generator", "model"), f"unknown built-in model {model!r}; "
             f"known: {['builtin:' + m for m in BUILTIN_MODELS + PROCEDURAL_MODELS]}")]


def _check_procedural(spec: Spec) -> list[tuple[FieldPath, str]]:
    """builtin:procedural draws phantom findings: every label must be one, and no adapters."""
    out: list[tuple[FieldPath, str]] = [
        (("labels", name), f"builtin:procedural draws phantom findings only: {name!r} is not one "
         f"(expected one of {', '.join(PHANTOM_FINDINGS)})") for name in spec.labels
        if name not in PHANTOM_FINDINGS]
    for part in ("textual_inversion", "lora"):
        if getattr(spec.generator, part):
            out.append((("generator", part), f"builtin:procedural has no text encoder or UNet to "
                        f"adapt; remove generator.{part}"))
    return out


def _check_no_cohort(spec: Spec) -> list[tuple[FieldPath, str]]:
    return [(("labels", name, "where"), "`where` selects rows of a cohort table; add a `cohort:` "
             "section or remove it") for name, cfg in spec.labels.items() if cfg.where is not None]


def _check_cohort(spec: Spec) -> list[tuple[FieldPath, str]]:
    """Cohort checks that need no table (the table's own are in synthdata.plan.cohort)."""
    cohort = spec.cohort
    out: list[tuple[FieldPath, str]] = []
    columns = set(cohort.columns)
    for var in sorted(columns & set(spec.vars)):
        out.append((("vars", var), f"{var!r} is also a cohort column variable; rename one of them"))
    for name, cfg in spec.labels.items():
        for var in sorted(columns & set(cfg.vars)):
            out.append((("labels", name, "vars", var), f"{var!r} is also a cohort column variable; "
                        "rename one of them"))
        if cohort.mode == "mirror" and (cfg.weight is not None or cfg.count is not None):
            out.append((("labels", name), "cohort.mode is mirror: label counts follow the table; "
                        "remove weight/count, or set cohort.mode: explicit"))
    for role in ("sex", "age"):
        var = getattr(cohort.report, role)
        if var is not None and var not in columns:
            out.append((("cohort", "report", role), f"{var!r} is not a cohort column variable "
                        f"(known: {', '.join(sorted(columns)) or 'none'})"))
    if cohort.stratify is not None:
        unknown = [v for v in cohort.stratify.by if v not in columns]
        if unknown:
            out.append((("cohort", "stratify", "by"), f"not cohort column variables: {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(columns)) or 'none'})"))
    return out


NO_REFERENCE_WARNING = (
    "empty: the dataset will NOT be screened against real images. Its samples get the decision "
    "'not-screened' (never 'accept'), and the run's output, `synthdata status`, stats.json and "
    "the dataset card say so. Name real images (or from-training) to screen for near-copies")


def spec_warnings(spec: Spec) -> list[tuple[FieldPath, str]]:
    """What a valid spec will do that its author should know, as (field path, message): a
    spec without a real reference is not screened against real images."""
    if spec.memorization.reference:
        return []
    return [(("memorization", "reference"), NO_REFERENCE_WARNING)]


def _check_qc(spec: Spec, check_files: bool = True) -> list[tuple[FieldPath, str]]:
    if spec.qc is None:
        return []
    out: list[tuple[FieldPath, str]] = []
    if spec.qc.top_up and not spec.memorization.reference and check_files:
        out.append((("qc", "top_up"), "top_up replaces samples that memorization screening "
                    "rejects, but memorization.reference is empty: name the real images to screen "
                    "against (or from-training), or set top_up: false"))
    cohort_vars = set(spec.cohort.columns) if spec.cohort is not None else set()
    for i, check in enumerate(spec.qc.checks):
        if check.check != "classifier":
            continue
        path: FieldPath = ("qc", "checks", i)
        for name, cfg in spec.labels.items():
            known = set(spec.vars) | set(cfg.vars) | cohort_vars
            if check.target not in known:
                out.append((path + ("variable",), f"label {name!r} has no variable {check.target!r} "
                            f"to compare the classifier's {check.attribute!r} with "
                            f"(known: {', '.join(sorted(known)) or 'none'})"))
                break
        if not check_files:
            continue
        if not Path(check.model).is_dir():
            out.append((path + ("model",), f"classifier folder {check.model!r} does not exist "
                        "(taken from the spec file's folder)"))
            continue
        out += _check_classifier_config(check, path)
    return out


def _check_classifier_config(check, path: FieldPath) -> list[tuple[FieldPath, str]]:

    try:
        outputs = read_classifier_config(check.model)["outputs"]
    except ModelError as exc:
        return [(path + ("model",), str(exc))]
    if check.attribute not in outputs:
        return [(path + ("attribute",), f"the classifier has no output {check.attribute!r} "
                 f"(outputs: {', '.join(outputs)})")]
    if outputs[check.attribute]["type"] == "numeric" and check.tolerance is None:
        return [(path + ("tolerance",), f"{check.attribute!r} is numeric: give a tolerance "
                 "(e.g. 16 for age in years)")]
    return []


def _check_templates(spec: Spec) -> list[tuple[FieldPath, str]]:
    out = []
    cohort_vars = set(spec.cohort.columns) if spec.cohort is not None else set()
    for label, cfg in spec.labels.items():
        known = set(spec.vars) | set(cfg.vars) | cohort_vars
        for i, template in enumerate(cfg.prompts):
            path: FieldPath = ("labels", label, "prompts", i)
            try:
                slots = template_slots(template)
            except ValueError as exc:
                out.append((path, f"bad prompt template {template!r}: {exc}"))
                continue
            unknown = [slot for slot in slots if slot not in known]
            for slot in unknown:
                out.append((path, f"unknown template variable {{{slot}}}; "
                                  f"known variables: {sorted(known) or 'none'}"))
            if not unknown:
                # cohort values come from the table: a placeholder that reads as text or a weight
                placeholders = {v: Categorical(values=("0.5",), weights=(1.0,)) for v in cohort_vars}
                out += [(path, msg) for msg in _check_blend(template, {**placeholders, **spec.vars,
                                                                       **cfg.vars})]
    return out


def _check_blend(template: str, variables: dict) -> list[str]:
    """Problems of a blend template (spec/blend.py) for the values its weight slots take."""
    import itertools


    if not is_blend(template):
        return []
    weight_slots = sorted(set(template_weight_slots(template)))
    options = {name: ([str(var.min), str(var.max)] if isinstance(var, IntRange) else list(var.values))
               for name, var in variables.items()}
    fixed = {name: values[0] for name, values in options.items()}
    for combo in itertools.islice(itertools.product(*(options[w] for w in weight_slots)), 256):
        values = {**fixed, **dict(zip(weight_slots, combo))}
        try:
            if parse_blend(template.format(**values)) is None:
                raise ValueError("a weight is not a number, a percentage or `rest`")
        except ValueError as exc:
            where = ", ".join(f"{w}={v}" for w, v in zip(weight_slots, combo))
            return [f"bad blend{' with ' + where if where else ''}: {exc} "
                    "(weights: numbers in [0, 1], percentages, or `rest`)"]
    return []


def _check_counts(spec: Spec) -> list[tuple[FieldPath, str]]:
    out: list[tuple[FieldPath, str]] = []
    counted = {k: v.count for k, v in spec.labels.items() if v.count is not None}
    for name, cfg in spec.labels.items():
        if cfg.count is not None and cfg.weight is not None:
            out.append((("labels", name), "give either weight or count, not both"))
    weighted = [k for k in spec.labels if k not in counted]
    fixed = sum(counted.values())
    if not weighted:
        if spec.count is not None and spec.count != fixed:
            out.append((("count",), f"count is {spec.count} but the label counts add up to {fixed}"))
        if fixed == 0:
            out.append((("labels",), "label counts add up to 0; expected at least one sample"))
        return out
    if spec.count is None:
        out.append((("count",), "count is required when any label is given by weight"))
        return out
    if fixed > spec.count:
        out.append((("count",), f"label counts add up to {fixed}, more than count ({spec.count})"))
    weights = [spec.labels[k].weight if spec.labels[k].weight is not None else 1.0 for k in weighted]
    if spec.count - fixed > 0 and sum(weights) <= 0:
        out.append((("labels",), "label weights must not all be zero"))
    return out


def _check_paths(spec: Spec) -> list[tuple[FieldPath, str]]:
    out: list[tuple[FieldPath, str]] = []
    gen = spec.generator
    if is_local_model(gen.model) and not Path(gen.model).expanduser().is_dir():
        out.append((("generator", "model"), f"model folder {gen.model!r} does not exist "
                    "(expected builtin:tiny, builtin:phantom, builtin:procedural, catalog:ID, "
                    "a local diffusers pipeline folder, or a hub id org/name)"))
    for i, ti in enumerate(gen.textual_inversion):
        if not Path(ti.path).expanduser().is_file():
            out.append((("generator", "textual_inversion", i, "path"), f"file {ti.path!r} does not exist"))
        elif not ti.path.endswith((".pt", ".bin", ".safetensors")):
            out.append((("generator", "textual_inversion", i, "path"),
                        "expected a .pt, .bin or .safetensors embedding"))
    for i, lora in enumerate(gen.lora):
        if not lora.path.endswith(".safetensors"):
            out.append((("generator", "lora", i, "path"), "expected a .safetensors LoRA file"))
        elif not Path(lora.path).expanduser().is_file():
            out.append((("generator", "lora", i, "path"), f"file {lora.path!r} does not exist"))
    for i, ref in enumerate(spec.memorization.reference):
        if ref not in SPECIAL_REFERENCES and not Path(ref).expanduser().exists():
            out.append((("memorization", "reference", i), f"reference path {ref!r} does not exist"))
    out += memorization_problems(spec.memorization)
    return out


CALIBRATION_PAIRS = 100_000


def memorization_problems(mem: Memorization) -> list[tuple[FieldPath, str]]:
    """Cross-field checks of the screening section (also used by `synthdata audit`)."""
    out: list[tuple[FieldPath, str]] = []
    if len(set(mem.matchers)) != len(mem.matchers):
        out.append((("memorization", "matchers"), "each matcher may be listed once"))
    if "aligned" in mem.matchers and not mem.candidate_embedders:
        out.append((("memorization", "retrievers"), "'aligned' verifies the candidates of an "
                    "embedder: list one in matchers or retrievers (e.g. efficientnet-lite0)"))
    if isinstance(mem.threshold, dict):
        for name in mem.threshold:
            if name not in mem.matchers:
                out.append((("memorization", "threshold", name),
                            f"not a deciding matcher (expected one of {', '.join(mem.matchers)})"))
    if mem.group_pattern is not None:
        try:
            re.compile(mem.group_pattern)
        except re.error as exc:
            out.append((("memorization", "group_pattern"), f"not a regular expression: {exc}"))
    if mem.min_recall > mem.target_recall:
        out.append((("memorization", "min_recall"), f"the floor {mem.min_recall} is above "
                    f"target_recall {mem.target_recall}"))
    pairs = (mem.calibration_images + mem.calibration_negatives) * mem.k
    if pairs > CALIBRATION_PAIRS:
        out.append((("memorization", "calibration_negatives"),
                    f"calibration would verify {pairs} (trial, candidate) pairs; the cap is "
                    f"{CALIBRATION_PAIRS} ((calibration_images + calibration_negatives) x k)"))
    return out
