"""The base of every spec model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base: unknown fields are errors; values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
