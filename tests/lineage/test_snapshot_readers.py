"""Readers that list a dataset folder's tars and read them later hold their snapshot until exit."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthdata.folder import DatasetFolder
from synthdata.dataset.prepare import acquire_lock
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


def test_a_folder_without_generations_is_read_from_its_view(screened_dataset, tmp_path):
    """A fresh `dvc pull` (or a format 2 folder) has DIR/shards and the tables but no
    generations/: readers read the view under the shared lock; the next screening makes one."""
    import shutil

    from synthdata.dataset.health import status, verify
    from synthdata.loader import load
    from synthdata.folder.snapshot import open_snapshot

    root = copy_dataset(screened_dataset, tmp_path / "demo-cxr")
    shutil.rmtree(root / "generations")
    with open_snapshot(root) as snap:
        assert not snap.pinned and snap.screened
        assert [t.parent for t in snap.accepted_tars()] == [root / "shards"] * len(snap.accepted_tars())
    assert verify(root).ok and status(root)["screening"]["generation"] is None
    dataset, _ = load(root, decode=False)
    assert dataset.snapshot is None and len(list(dataset)) == 29
    screen_with_reference(root, planted_reference(root, tmp_path / "real"))
    generation = DatasetFolder(root).screening_generation()["generation"]
    assert [p.name for p in (root / "generations").iterdir()] == [generation]
    assert verify(root).ok
