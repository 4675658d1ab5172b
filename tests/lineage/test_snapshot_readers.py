"""Readers that list a dataset folder's tars and read them later hold their snapshot until exit."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthdata.folder import DatasetFolder
from synthdata.outputs import acquire_lock
from tests.lineage.conftest import copy_dataset, planted_reference, screen_with_reference


def test_an_audit_of_a_dataset_folder_reads_one_generation_to_its_end(screened_dataset, tmp_path):
    from synthdata.screening.audit import _dataset_tars

    root = copy_dataset(screened_dataset, tmp_path / "demo-cxr")
    folder = DatasetFolder(root)
    tars = _dataset_tars(root)  # what `synthdata audit DIR` lists first, and reads later
    generation = folder.screening_generation()["generation"]
    assert tars and all(t.parent == folder.generation_dir(generation) / "shards" for t in tars)
    scores = sorted(r["similarity"] for r in pq.read_table(root / "screening.parquet").to_pylist()
                    if r["decision"] == "accept")
    screen_with_reference(root, planted_reference(root, tmp_path / "real"), threshold=scores[0])
    acquire_lock(root).release()
    assert folder.screening_generation()["generation"] != generation
    assert all(t.is_file() for t in tars), "held until this process exits"
    assert _dataset_tars(root) == tars, "one snapshot per folder and process"
