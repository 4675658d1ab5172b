"""Memorization screening: every synthetic image against the real reference, by FAISS kNN.

Modules, one concept each: `decoders` (real image formats -> uint8 renderings and patient
groups), `reference` (finding real images, stable ids, streaming), `groups` (patient groups
from DICOM, metadata tables beside the images, path layouts), `embedders` and `local_model`
(images -> unit vectors, reference views), `align` (aligned verification of candidates:
search and content views), `registration` (homographies refined from the search's
placements, scored on the registered overlap), `edits` (how copies get edited), `index`
(FAISS index choice, recall), `cache` (the private reference cache, reused and extended),
`match` (retrieve, augment, verify), `duplicates` (near-duplicates across patients in the
reference), `calibrate` and `matchers` (thresholds: target recall on synthesized copies,
false positives on other patients and hard negatives, failing closed), `decide` (accept /
review / reject, fail closed, near-duplicates),
`shardio` (raw shards in, embeddings and accepted shards out), `report`, `pipeline` (what
the flow and `synthdata screen` call) and `audit` (any images, `synthdata audit`).
"""
