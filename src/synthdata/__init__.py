"""synthdata: declarative synthetic medical-image datasets.

YAML spec -> deterministic plan -> Prefect-orchestrated diffusers generation ->
WebDataset shards -> memorization screening -> manifest, lineage and DVC.
"""

__version__ = "0.1.0"
