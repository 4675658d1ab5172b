"""Concept blends: weighted mixtures of prompts (or learned tokens), applied to text embeddings.

In the manner of "healthy:30% AND diseased:70%" (textual inversion on a budget; composable
prompts in A1111), a prompt made of parts joined by ` AND `, each ending in a weight, is a blend:

    "PA chest x-ray, clear lungs :rest AND PA chest x-ray with <pneumonia> :{severity}"
    "normal lungs :30% AND <effusion> :70%"

A weight is a number in [0, 1], a percentage, or `rest` (1 minus the other weights; at most one
part); weights are relative (normalised to add up to 1). Template variables fill weights like any other slot, so a variable sweeps a severity
(`severity: ["0.25", "0.5", "0.75"]`). The generator encodes every part with the pipeline's
text encoder and gives the UNet the weighted sum of the part embeddings (and of the negative
prompt's for guidance). A prompt with ` AND ` whose parts carry no weights is an ordinary prompt.
The plan keeps the blend text as the sample's prompt; KEY.json lists the parts and weights, and
`reproduce` replays them from the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEPARATOR = " AND "
_WEIGHT = re.compile(r"^(?P<text>.*?)\s*:\s*(?P<w>rest|[0-9]*\.?[0-9]+%?|\{[A-Za-z_]\w*\}%?)\s*$", re.S)


@dataclass(frozen=True)
class BlendPart:
    """One part of a blend: its prompt text and weight."""

    prompt: str
    weight: float


def _weights_of(prompt: str) -> list[tuple[str, str]] | None:
    """(text, weight token) of each part when every part carries a weight, else None."""
    parts = prompt.split(SEPARATOR)
    if len(parts) < 2:
        return None
    found = [_WEIGHT.match(p) for p in parts]
    if not all(found):
        return None
    return [(m.group("text").strip(), m.group("w")) for m in found]  # type: ignore[union-attr]


def is_blend(prompt: str) -> bool:
    """True when the prompt (or template) is written as a blend."""
    return _weights_of(prompt) is not None


def template_weight_slots(template: str) -> list[str]:
    """Variables used as weights in a blend template ({severity} in 'x :{severity}')."""
    parts = _weights_of(template) or []
    return [w.rstrip("%")[1:-1] for _, w in parts if w.startswith("{")]


def parse_blend(prompt: str) -> list[BlendPart] | None:
    """The parts of a blend prompt with their weights, or None for an ordinary prompt.

    Raises ValueError when the weights are not numbers in [0, 1], more than one part is `rest`,
    they add up to more than 1 with `rest`, or to 0.
    """
    parts = _weights_of(prompt)
    if parts is None:
        return None
    weights: list[float | None] = []
    for text, token in parts:
        if not text:
            raise ValueError(f"blend part with an empty prompt in {prompt!r}")
        if token == "rest":
            weights.append(None)
            continue
        if token.startswith("{"):
            raise ValueError(f"blend weight {token} was not filled by a variable")
        value = float(token[:-1]) / 100 if token.endswith("%") else float(token)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"blend weight {token} is outside [0, 1] in {prompt!r}")
        weights.append(value)
    rest = [i for i, w in enumerate(weights) if w is None]
    if len(rest) > 1:
        raise ValueError(f"at most one blend part may weigh `rest` in {prompt!r}")
    given = sum(w for w in weights if w is not None)
    if rest:
        if given > 1.0 + 1e-9:
            raise ValueError(f"blend weights add up to {given:g} > 1 beside `rest` in {prompt!r}")
        weights[rest[0]] = max(0.0, 1.0 - given)
    total = sum(w for w in weights if w is not None)
    if total <= 0:
        raise ValueError(f"blend weights add up to 0 in {prompt!r}")
    return [BlendPart(text, float(w) / total) for (text, _), w in zip(parts, weights)]  # type: ignore[arg-type]
