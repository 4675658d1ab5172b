"""Generation: plan rows in, raw shards out. The Prefect subflow's worker (`worker`), the
per-shard loop (`shardgen`), execution engines (`engines`), model fingerprints (`fingerprint`),
what a trained model was made from (`trained`), batch-size tuning (`tune`) and the
text-to-image generators (`generators/`). Nothing here imports torch at package import."""
