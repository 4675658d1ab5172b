"""Patient groups from what the reference says: metadata tables beside the images (what
`synthdata phantoms` writes, CheXpert's CSV, NIH's table), path layouts, an explicit column.

Images: `synthdata phantoms` output (procedural phantoms, not clinical data) and pydicom's
CT_small; only the grouping is under test here.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from screening_helpers import phantom

from synthdata.phantoms import write_phantoms
from synthdata.screening.cache import prepare_reference
from synthdata.screening.embedder_factory import get_embedder
from synthdata.screening.groups import group_of, path_group
from synthdata.screening.reference import (
    ReaderOptions,
    ReferenceSetError,
    iter_reference,
    scan_reference,
)
from synthdata.folder.shards import encode_png


def _prepare(paths: list[str], **options):
    return prepare_reference(paths, get_embedder("pixel"), options=ReaderOptions(**options),
                             exact_limit=1000, memory_gb=1.0)


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    """`synthdata phantoms` output: images/, metadata.csv with a patient_id column."""
    out = tmp_path_factory.mktemp("phantoms") / "set"
    write_phantoms(out, count=24, seed=7, size=64)
    return out


def test_phantoms_are_grouped_by_their_patient_column_without_flags(phantom_set):
    rows = list(csv.DictReader((phantom_set / "metadata.csv").open()))
    patients = {r["path"]: r["patient_id"] for r in rows}
    assert len(set(patients.values())) < len(patients)  # follow-up studies share a patient
    files, skipped = scan_reference([str(phantom_set)])
    assert not any(s.id.endswith("metadata.csv") for s in skipped)  # a table, not an image
    images = list(iter_reference([str(phantom_set)]))
    assert {im.group for im in images} == {f"metadata:{p}" for p in patients.values()}
    for im in images:
        assert im.group == f"metadata:{patients[im.id.split('/', 1)[1]]}"
    prepared = _prepare([str(phantom_set)])
    assert prepared.meta["group_sources"] == {"metadata": len(set(patients.values()))}
    table, = prepared.meta["group_tables"]
    assert table["patient_column"] == "patient_id" and table["path_column"] == "path"
    assert table["images"] == len(rows) and table["table"] == "set/metadata.csv"


def test_single_files_find_the_table_of_their_set(phantom_set):
    """`from-training` lists training images one by one: their set's metadata.csv counts."""
    paths = sorted(str(p) for p in (phantom_set / "images").glob("*.png"))[:6]
    groups = {im.group for im in iter_reference(paths)}
    assert all(g.startswith("metadata:") for g in groups)


def test_chexpert_layout_nih_table_and_an_explicit_column(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    for p in range(3):
        for s in range(2):
            folder = root / "train" / f"patient{p:05d}" / f"study{s + 1}"
            folder.mkdir(parents=True)
            (folder / "view1_frontal.png").write_bytes(encode_png(phantom(p * 10 + s)))
    # No table: the path says the patient.
    groups = {im.group for im in iter_reference([str(root)])}
    assert groups == {f"path:patient{p:05d}" for p in range(3)}
    assert path_group("x/p10/p10000032/s50414267/a.jpg") == "path:p10000032"
    assert path_group("ds/sub-07/anat/sub-07_T1w.png") == "path:sub-07"
    # NIH style: file names in one column ("Image Index"), the patient in "Patient ID".
    nih = tmp_path / "nih"
    (nih / "images").mkdir(parents=True)
    with (nih / "Data_Entry.csv").open("w") as f:
        f.write("Image Index,Finding Labels,Patient ID\n")
        for i in range(6):
            name = f"{i:08d}_000.png"
            (nih / "images" / name).write_bytes(encode_png(phantom(100 + i)))
            f.write(f"{name},No Finding,{i // 2}\n")
    assert {im.group for im in iter_reference([str(nih)])} == {"metadata:0", "metadata:1",
                                                                 "metadata:2"}
    # A column named on purpose; one that names no image's patient is an error.
    with (nih / "extra.csv").open("w") as f:
        f.write("file,site\n" + "".join(f"{i:08d}_000.png,S{i % 3}\n" for i in range(6)))
    images = list(iter_reference([str(nih)], ReaderOptions(group_column="site")))
    assert {im.group for im in images} == {"metadata:S0", "metadata:S1", "metadata:S2"}
    with pytest.raises(ReferenceSetError, match="group_column"):
        _prepare([str(nih)], group_column="ward")


def test_dicom_patient_wins_and_a_study_uid_yields_to_a_table():
    assert group_of("a/b.dcm", "a/b.dcm", "patient:P1", None, "metadata:X") == "patient:P1"
    assert group_of("a/b.dcm", "a/b.dcm", "study:1.2.3", None, "metadata:X") == "metadata:X"
    assert group_of("a/b.png", "a/b.png", None, r"/(?P<group>b)", None) == "pattern:b"
    assert group_of("a/b.png", "a/b.png", None, None, None) == "file:a/b.png"


def test_tables_change_the_cache_key(phantom_set, tmp_path):
    """Editing a patient column regroups the reference (a new build, not a stale cache)."""
    copy = tmp_path / "set"
    shutil.copytree(phantom_set, copy)
    first = _prepare([str(copy)])
    text = (copy / "metadata.csv").read_text().replace(",PH", ",XX", 1)
    (copy / "metadata.csv").write_text(text)
    second = _prepare([str(copy)])
    assert first.handle.key != second.handle.key
    g1, g2 = (set(np.load(f"{p.handle.path}/groups.npy")) for p in (first, second))
    assert g1 != g2
