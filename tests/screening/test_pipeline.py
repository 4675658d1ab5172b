"""Screening a dataset folder: staged per-shard work, atomic commit, re-screening, no reference."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from screening_helpers import (
    augmented_copies,
    near_exact_copies,
    phantom,
    real_images,
    write_raw_dataset,
)

from synthdata.screening.pipeline import (
    finalize_screening,
    prepare_screening,
    screen_dataset,
    screen_shard,
)
from synthdata.screening.shardio import read_members
from synthdata.spec.models import Memorization


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (_sha(p), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def dataset(reference_dir, tmp_path):
    reference = real_images([str(reference_dir / "dicom")])
    images = []
    for i, (rid, img) in enumerate(reference[:8]):
        images.append((f"copy:exact:{rid}", near_exact_copies(img, i)["exact"]))
        images.append((f"aug:rotate5:{rid}", augmented_copies(img, i)["rotate5"]))
    images += [(f"distinct:phantom:{s}", phantom(s)) for s in range(20)]
    images.append(("distinct:phantom:3-again", phantom(3)))  # mode collapse
    tags = write_raw_dataset(tmp_path / "ds", images, shard_size=16)
    return tmp_path / "ds", tags


def _decisions(out: Path) -> dict[str, str]:
    rows = pq.read_table(out / "screening.parquet", columns=["key", "decision"]).to_pylist()
    return {r["key"]: r["decision"] for r in rows}


def _accepted_members(out: Path) -> dict[str, bytes]:
    return {name: data for tar in sorted((out / "shards").glob("*.tar"))
            for name, data in read_members(tar)}


def test_rescreen_with_new_threshold_changes_shards_without_regenerating(dataset, reference_dir):
    out, tags = dataset
    # A threshold set by hand: pixel alone fails calibration on geometric copies (it would
    # send every sample to review; test_planted_copies.py).
    cfg = Memorization(reference=[str(reference_dir / "dicom")], matchers="pixel", k=3,
                       threshold=0.9)
    first = screen_dataset(out, cfg)
    raw_before = _snapshot(out / "raw")
    decisions = _decisions(out)
    assert all(decisions[k] == "reject" for k, t in tags.items() if t.startswith("copy:"))
    assert all(decisions[k] == "accept" for k, t in tags.items() if t.startswith("distinct:"))
    members = _accepted_members(out)
    raw_members = {n: d for tar in sorted((out / "raw").glob("*.tar")) for n, d in read_members(tar)}
    accepted = {k for k, d in decisions.items() if d == "accept"}
    assert {n.split(".")[0] for n in members} == accepted
    assert all(members[n] == raw_members[n] for n in members)  # bytes copied, not re-encoded
    assert {n.rsplit(".", 1)[1] for n in members} == {"cls", "json", "png", "txt"}

    second = screen_dataset(out, cfg, threshold=0.3)  # stricter: far more rejected
    assert second.threshold == 0.3
    assert second.threshold_info["pixel"]["method"] == "given on the command line"
    assert second.decisions["reject"] > first.decisions["reject"]
    assert _snapshot(out / "raw") == raw_before  # nothing regenerated, embeddings reused
    after = _decisions(out)
    assert {n.split(".")[0] for n in _accepted_members(out)} == \
        {k for k, d in after.items() if d == "accept"}
    assert not (out / ".screening").exists()
    report = json.loads((out / "screening_report.json").read_text())
    assert report["threshold"] == 0.3 and report["decisions"] == second.decisions


def test_screening_twice_writes_identical_bytes(dataset, reference_dir):
    out, _ = dataset
    cfg = Memorization(reference=[str(reference_dir / "dicom")], matchers="pixel",
                       review_band=0.2)
    screen_dataset(out, cfg)
    names = ["screening.parquet", "screening_report.json", "screening_report.png"]
    before = {n: _sha(out / n) for n in names}
    shards_before = {p.name: _sha(p) for p in (out / "shards").glob("*.tar")}
    summary = screen_dataset(out, cfg)
    assert {n: _sha(out / n) for n in names} == before
    assert {p.name: _sha(p) for p in (out / "shards").glob("*.tar")} == shards_before
    assert summary.decisions["review"] > 0  # the rotated copies fall in the band
    table = pq.read_table(out / "screening.parquet")
    assert table.column_names == ["key", "shard", "label", "label_index", "decision",
                                  "similarity", "decided_by", "nearest_real_id", "nearest_group",
                                  "nearest_real_ids", "similarities", "similarity_pixel", "note",
                                  "near_duplicate_of", "near_duplicate_similarity"]
    row = table.slice(0, 1).to_pylist()[0]
    assert len(row["nearest_real_ids"]) == len(row["similarities"]) == 5
    assert row["similarities"] == sorted(row["similarities"], reverse=True)
    assert row["similarity"] == row["similarity_pixel"] == row["similarities"][0]
    assert row["nearest_real_id"] == row["nearest_real_ids"][0]
    # Real ids are pseudonyms (keyed hashes) in everything written to the folder.
    assert all(i.startswith("p-") and len(i) == 18 for i in row["nearest_real_ids"])
    assert row["nearest_group"].startswith("p-")
    for name in names:
        data = (out / name).read_bytes()
        assert b"dicom/" not in data and b"CT_small" not in data and b"cohort" not in data


def test_only_ids_and_scores_are_written(dataset, reference_dir):
    out, _ = dataset
    screen_dataset(out, Memorization(reference=[str(reference_dir / "dicom")],
                                     retrievers=["pixel"], calibration_images=50,
                                     calibration_copies=100))
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
               and not str(p.relative_to(out)).startswith(("raw/", "embeddings/"))}
    view = {"screening.parquet", "screening_report.json", "screening_report.png",
            "shards/.screening.json", *(f"shards/{p.name}" for p in (out / "shards").glob("*.tar"))}
    generation = json.loads((out / "shards" / ".screening.json").read_text())["generation"]
    assert written == {".screening.lock", *view, *(f"generations/{generation}/{n}" for n in view)}
    assert all(os.path.samefile(out / n, out / "generations" / generation / n) for n in view), \
        "the published view is hard links to the generation's files"
    assert {p.name for p in (out / "raw").iterdir()} == {
        f"shard-00000{i}{s}" for i in range(3) for s in (".tar", ".parquet", ".done.json")}, \
        "screening never writes into raw/"
    embeddings = [p.name for p in (out / "embeddings").iterdir()]
    assert embeddings and all(".emb-" in name and name.endswith(".npz") for name in embeddings)
    schema = pq.read_schema(out / "screening.parquet")
    assert not any("binary" in str(t) for t in schema.types)


def test_no_reference_marks_all_not_screened_copies_raw_shards_and_flags_near_duplicates(dataset):
    """Nothing to compare with: every sample is `not-screened` (never `accept`), yet the
    consumers' shards hold them, and the report says it was not screened against real images."""
    out, tags = dataset
    summary = screen_dataset(out, Memorization(matchers="pixel"))
    raw = sorted((out / "raw").glob("*.tar"))
    assert [_sha(p) for p in raw] == [_sha(out / "shards" / p.name) for p in raw]
    table = pq.read_table(out / "screening.parquet").to_pylist()
    assert {r["decision"] for r in table} == {"not-screened"}
    assert {r["note"] for r in table} == {"not screened against real images: no memorization.reference"}
    assert summary.decisions == {"accept": 0, "review": 0, "reject": 0, "not-screened": len(table)}
    report = json.loads((out / "screening_report.json").read_text())
    assert report["notes"][0].startswith("NOT SCREENED AGAINST REAL IMAGES") and report["reference"] is None
    assert summary.threshold_info["pixel"]["method"].startswith("no reference configured")
    by_tag = {tags[r["key"]]: r for r in table}
    twin = by_tag["distinct:phantom:3-again"]
    assert twin["near_duplicate_of"] == by_tag["distinct:phantom:3"]["key"]
    assert twin["near_duplicate_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert summary.near_duplicates >= 2


def test_per_shard_tasks_resume_and_a_fully_rejected_shard_is_not_written(dataset,
                                                                          reference_dir):
    out, _ = dataset
    cfg = Memorization(reference=[str(reference_dir / "dicom")], retrievers=["pixel"],
                       threshold=-1.0)  # reject all
    plan = prepare_screening(out, cfg)
    assert plan.shards == (0, 1, 2)
    assert screen_shard(plan, 0)["reused"] is False
    again = screen_shard(plan, 0)
    assert {k: again[k] for k in ("shard", "samples", "reused", "accepted")} == \
        {"shard": 0, "samples": 16, "reused": True, "accepted": 0}
    assert again["decisions"] == {"reject": 16} and again["seconds"] >= 0
    summary = finalize_screening(plan)  # screens shards 1 and 2 itself
    assert summary.decisions == {"accept": 0, "review": 0, "reject": 37}
    assert summary.accepted_shards == [] and list((out / "shards").glob("*.tar")) == []
    with tarfile.open(out / "raw" / "shard-000000.tar") as tar:
        assert len(tar.getnames()) == 64


def test_readers_never_see_a_mix_of_two_screenings(dataset, reference_dir):
    """A reader during re-screening (the snapshot reader, no lock held while it reads) sees the
    old or the new accepted shards with their matching screening.parquet, never a mix, never a
    missing file; DIR/shards (what plain readers open) is never missing either."""
    import threading

    from synthdata.folder import DatasetFolder
    from synthdata.folder.snapshot import open_snapshot

    out, _ = dataset
    folder = DatasetFolder(out)
    ref = [str(reference_dir / "dicom")]
    screen_dataset(out, Memorization(reference=ref, retrievers=["pixel"], threshold=0.5))
    seen: list[tuple[int, int]] = []
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if not folder.shards_dir.is_dir():
                problems.append("DIR/shards missing")
            try:
                with open_snapshot(out) as snap:
                    in_shards = {name.split(".", 1)[0] for tar in snap.accepted_tars()
                                 for name, _ in read_members(tar)}
                    rows = pq.read_table(snap.screening_file, columns=["key", "decision"]).to_pylist()
                    says = {r["key"] for r in rows if r["decision"] == "accept"}
                    token = pq.read_schema(snap.screening_file).metadata[b"token"].decode()
                    generation = snap.screening_generation()
            except OSError as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            if in_shards != says or token != generation["token"] or \
                    generation["generation"] != snap.generation:
                problems.append(f"mixed: {len(in_shards)} in shards, {len(says)} accepted, "
                                f"tokens {token} / {generation['token']}")
            seen.append((len(in_shards), len(says)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for threshold in (0.99, 0.5, 0.99, 0.5):
            screen_dataset(out, Memorization(reference=ref, retrievers=["pixel"],
                                             threshold=threshold))
    finally:
        stop.set()
        thread.join(30)
    assert not problems, problems[:3]
    assert len({n for n, _ in seen}) == 2, "the reader saw both screenings"
    assert not folder.staging_dir.exists()


def test_a_pinned_generation_outlives_a_rescreening_until_released(dataset, reference_dir):
    from synthdata.folder import DatasetFolder
    from synthdata.dataset.prepare import acquire_lock
    from synthdata.folder.snapshot import open_snapshot

    out, _ = dataset
    folder = DatasetFolder(out)
    ref = [str(reference_dir / "dicom")]
    screen_dataset(out, Memorization(reference=ref, retrievers=["pixel"], threshold=0.99))
    snap = open_snapshot(out)  # e.g. a training job's epoch
    old, old_tars = snap.generation, {t.name: _sha(t) for t in snap.accepted_tars()}
    screen_dataset(out, Memorization(reference=ref, retrievers=["pixel"], threshold=0.5))
    new = folder.screening_generation()["generation"]
    assert new != old and sorted(p.name for p in folder.generations_dir.iterdir()) == sorted([old, new])
    assert {t.name: _sha(t) for t in snap.accepted_tars()} == old_tars, "the pinned bytes stay"
    assert open_snapshot(out).generation == new, "a new reader gets the new screening"
    snap.close()
    acquire_lock(out).release()  # the next writer removes what no reader pins
    assert [p.name for p in folder.generations_dir.iterdir()] == [new]
    assert not folder.pins_dir.exists()


def test_a_dead_readers_pin_holds_nothing(dataset, reference_dir):
    import subprocess
    import sys

    from synthdata.folder import DatasetFolder
    from synthdata.dataset.prepare import acquire_lock

    out, _ = dataset
    folder = DatasetFolder(out)
    ref = [str(reference_dir / "dicom")]
    screen_dataset(out, Memorization(reference=ref, retrievers=["pixel"], threshold=0.99))
    old = folder.screening_generation()["generation"]
    died = subprocess.run([sys.executable, "-c", "import os, sys; from synthdata.folder.snapshot import "
                           "open_snapshot; s = open_snapshot(sys.argv[1]); os._exit(9)", str(out)],
                          check=False)
    assert died.returncode == 9 and list((folder.pins_dir / old).glob("*.pin")), "it left its pin"
    screen_dataset(out, Memorization(reference=ref, retrievers=["pixel"], threshold=0.5))
    acquire_lock(out).release()
    assert old not in {p.name for p in folder.generations_dir.iterdir()}
    assert not folder.pins_dir.exists(), "the stale pin went with it"


def test_staged_decisions_count_only_beside_their_staged_tar(dataset, reference_dir):
    """The crash window of issue 18: staged decisions beside other accepted tars (an earlier
    commit's, or none) must not be reused."""
    from synthdata.screening.staging import staged_tar

    out, _ = dataset
    cfg = Memorization(reference=[str(reference_dir / "dicom")], retrievers=["pixel"], threshold=0.99)
    job = prepare_screening(out, cfg)
    first = screen_shard(job, 2)  # distinct phantoms: accepted
    assert first["reused"] is False and first["accepted"] > 0
    staged = staged_tar(job.staging, 2)
    good = staged.read_bytes()
    # other bytes under the staged name: another file, as a crash leaves one (a fully accepted
    # staged tar is a hard link to the raw tar, and nothing writes into a tar in place)
    staged.unlink()
    staged.write_bytes(good[:512] + bytes(len(good) - 512))
    assert screen_shard(job, 2)["reused"] is False, "another tar: decided again"
    assert staged.read_bytes() == good
    staged.unlink()
    assert screen_shard(job, 2)["reused"] is False, "no tar where one was accepted: decided again"
    assert screen_shard(job, 2)["reused"] is True
