"""Public entry point kept where users import it (`synthdata.loader.collate`,
`synthdata.loader.load`, `SPLITS`); the loader itself is `synthdata.dataset.loader`."""

from synthdata.dataset.loader import SPLITS, collate, load

__all__ = ["SPLITS", "collate", "load"]
