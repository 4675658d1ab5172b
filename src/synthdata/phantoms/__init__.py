"""Procedural, labelled chest-radiograph-like phantoms: a stand-in for real data, never clinical.

    from synthdata.phantoms import render_phantom, write_phantoms
    phantom = render_phantom(seed=7, index=0, size=128)      # .image (uint8 HxW), .attrs (dict)
    write_phantoms("data/phantoms", count=1000, seed=7)      # PNGs + metadata.csv + README.md

Each phantom is a pure function of (seed, index, size, labels): byte-identical on every run.
Labels: normal, effusion, consolidation, nodule, cardiomegaly. `synthdata phantoms OUT` is the
command-line form; `docs/phantoms.md` the user guide.
"""

from __future__ import annotations

from synthdata.phantoms.params import LABELS, SIZES
from synthdata.phantoms.writer import (
    Phantom,
    nearest_centroid_accuracy,
    render_phantom,
    thumbnails,
    write_phantoms,
)

__all__ = ["LABELS", "SIZES", "Phantom", "nearest_centroid_accuracy", "render_phantom",
           "thumbnails", "write_phantoms"]
