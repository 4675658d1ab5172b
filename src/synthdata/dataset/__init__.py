"""What a dataset folder says about itself, above generation and screening: preparing and
locking an output folder (`prepare`), the manifest, stats and run record (`records`), the card
(`card`), the report folder (`report`), the cohort summary (`cohort_summary`), lineage and
reproduction of a sample (`lineage`, `reproduce`), status and verify (`health`) and the
consumer's loader (`loader`; public as `synthdata.load` and `synthdata.loader`)."""
