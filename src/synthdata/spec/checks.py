"""Checks that span fields: template slots, label counts, model and file paths."""

from __future__ import annotations

import re
import string
from pathlib import Path

from synthdata.spec.models import Memorization, Spec

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
    problems += _check_counts(spec)
    problems += _check_builtin(spec)
    if check_files:
        problems += _check_paths(spec)
    return problems


def _check_builtin(spec: Spec) -> list[tuple[FieldPath, str]]:
    model = spec.generator.model
    if not model.startswith("builtin:"):
        return []
    from synthdata.generators import BUILTIN_MODELS

    if model.removeprefix("builtin:") in BUILTIN_MODELS:
        return []
    return [(("generator", "model"), f"unknown built-in model {model!r}; "
             f"known: {['builtin:' + m for m in BUILTIN_MODELS]}")]


def _check_templates(spec: Spec) -> list[tuple[FieldPath, str]]:
    out = []
    for label, cfg in spec.labels.items():
        known = set(spec.vars) | set(cfg.vars)
        for i, template in enumerate(cfg.prompts):
            path: FieldPath = ("labels", label, "prompts", i)
            try:
                slots = template_slots(template)
            except ValueError as exc:
                out.append((path, f"bad prompt template {template!r}: {exc}"))
                continue
            for slot in slots:
                if slot not in known:
                    out.append((path, f"unknown template variable {{{slot}}}; "
                                      f"known variables: {sorted(known) or 'none'}"))
    return out


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
                    "(expected builtin:tiny, a local diffusers pipeline folder, or a hub id org/name)"))
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


def memorization_problems(mem: Memorization) -> list[tuple[FieldPath, str]]:
    """Cross-field checks of the screening section (also used by `synthdata audit`)."""
    out: list[tuple[FieldPath, str]] = []
    if len(set(mem.embedder)) != len(mem.embedder):
        out.append((("memorization", "embedder"), "each matcher may be listed once"))
    if "aligned" in mem.embedder and not mem.candidate_embedders:
        out.append((("memorization", "retrievers"), "'aligned' verifies the candidates of an "
                    "embedder: list one in embedder or retrievers (e.g. efficientnet-lite0)"))
    if isinstance(mem.threshold, dict):
        for name in mem.threshold:
            if name not in mem.embedder:
                out.append((("memorization", "threshold", name),
                            f"not a deciding matcher (expected one of {', '.join(mem.embedder)})"))
    if mem.group_pattern is not None:
        try:
            re.compile(mem.group_pattern)
        except re.error as exc:
            out.append((("memorization", "group_pattern"), f"not a regular expression: {exc}"))
    return out
