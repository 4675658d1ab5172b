"""The generator interface: load once per worker, turn a batch of plan rows into images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleRequest:
    """What a generator needs to know of one planned sample."""

    key: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    label: str = ""  # the plan row's label (builtin:procedural draws from it)


class ImageGenerator(ABC):
    """Turns batches of sample requests into uint8 images (H x W x C)."""

    @abstractmethod
    def load(self) -> None:
        """Load weights onto the device; called once per worker."""

    @abstractmethod
    def generate(self, batch: Sequence[SampleRequest]) -> list[np.ndarray]:
        """Images for the batch, in order. The batch shares steps and guidance scale."""

    @abstractmethod
    def describe(self) -> dict:
        """What ran: model id, revision, scheduler, dtype, device (for lineage)."""
