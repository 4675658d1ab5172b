"""Evaluation of a synthetic dataset against real images: fidelity, diversity, alignment, utility.

Modules, one concept each: `realset` (real labelled images in three layouts), `features`
(extractors and cached features), `metrics` (FID, KID, PRDC, nearest-neighbour similarity),
`diversity` (intra-prompt MS-SSIM), `alignment` (CLIP-style image-text scores), `utility` (the
classifier protocol), `report` (evaluation.json's shape, card section, artifacts), `plots`, and
`flow` (the `synthdata-evaluate` Prefect flow the CLI runs).
"""

from synthdata.dataset.evaluation_section import evaluation_section, read_evaluation

__all__ = ["evaluation_section", "read_evaluation"]
