"""synthdata: declarative synthetic medical-image datasets.

YAML spec -> deterministic plan -> Prefect-orchestrated diffusers generation ->
WebDataset shards -> memorization screening -> manifest, lineage and DVC.
"""

from synthdata.version import VERSION as __version__  # noqa: F401  (public)


def __getattr__(name: str):
    """`synthdata.load` without importing webdataset and torch on `import synthdata`."""
    if name in ("load", "loader"):
        import synthdata.loader  # deferred: loads webdataset

        return synthdata.loader.load if name == "load" else synthdata.loader
    raise AttributeError(f"module 'synthdata' has no attribute {name!r}")
