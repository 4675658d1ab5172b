"""Memorization screening: every synthetic image against the real reference, by FAISS kNN.

Modules, one concept each: `decoders` (real image formats -> uint8), `reference` (finding
real images, stable ids, streaming), `embedders` and `local_model` (images -> unit vectors),
`index` (FAISS index choice, recall), `cache` (reference embeddings and indexes, reused and
extended), `calibrate` (threshold auto), `decide` (accept / review / reject, near-duplicates),
`shardio` (raw shards in, embeddings and accepted shards out), `report`, and `pipeline`
(what the flow and the CLI call).
"""

from synthdata.screening.embedders import Embedder, get_embedder
from synthdata.screening.pipeline import (
    ScreeningJob,
    ScreeningSummary,
    embed_shard,
    finalize_screening,
    prepare_screening,
    screen_dataset,
    screen_shard,
)
from synthdata.screening.reference import (
    ReferenceSetError,
    iter_reference,
    scan_reference,
)
from synthdata.screening.shardio import embeddings_path, save_shard_embeddings

__all__ = ["Embedder", "ReferenceSetError", "ScreeningJob", "ScreeningSummary", "embed_shard",
           "embeddings_path", "finalize_screening", "get_embedder", "iter_reference",
           "prepare_screening", "save_shard_embeddings", "scan_reference", "screen_dataset",
           "screen_shard"]
