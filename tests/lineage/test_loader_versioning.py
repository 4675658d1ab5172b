"""The loader in a multi-worker DataLoader, and DVC versioning in a real git + DVC repository."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from synthdata.folder import DatasetFolder
from synthdata.loader import collate, load
from synthdata.versioning import (
    VersioningError,
    find_dvc_root,
    prepare_folder,
    pull_outputs,
    reset_dataset,
    track_outputs,
)
from tests.lineage.conftest import DEMO_SPEC, REJECTED, copy_dataset


def accepted_keys(root: Path) -> set[str]:
    import pyarrow.parquet as pq

    return {r["key"] for r in pq.read_table(root / "manifest.parquet").to_pylist() if r["accepted"]}


def test_loader_feeds_every_accepted_sample_once_per_epoch(screened_dataset):
    dataset, label_map = load(screened_dataset)
    assert label_map == {"normal": 0, "pneumonia": 1, "effusion": 2}
    # spawn, not fork: a Prefect flow run earlier in this test process leaves a thread-shutdown
    # hook that makes forked children exit 1 (a trainer's process runs no flow).
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=collate,
                                         multiprocessing_context="spawn")
    expected = accepted_keys(screened_dataset)
    assert len(expected) == 29 and not expected & set(REJECTED)
    for _epoch in range(2):
        seen: Counter = Counter()
        for images, labels, metas in loader:
            assert images.dtype == torch.float32 and images.shape[1:] == (3, 64, 64)
            assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
            assert labels.tolist() == [m["label_index"] for m in metas]
            seen.update(m["key"] for m in metas)
        assert set(seen) == expected and set(seen.values()) == {1}


def test_the_loader_pins_one_screening_for_the_life_of_its_pipeline(screened_dataset, tmp_path):
    import gc

    from synthdata.dataset.prepare import acquire_lock
    from tests.lineage.conftest import planted_reference, screen_with_reference

    root = copy_dataset(screened_dataset, tmp_path / "demo-cxr")
    dataset, _ = load(root, decode=False)  # a training job's pipeline
    pinned = dataset.snapshot.generation
    first_epoch = sorted(meta["key"] for _, _, meta in dataset)
    assert set(first_epoch) == accepted_keys(root)
    import pyarrow.parquet as pq

    scores = sorted(r["similarity"] for r in pq.read_table(root / "screening.parquet").to_pylist()
                    if r["decision"] == "accept")
    stricter = scores[len(scores) // 2]  # rejects about half of what was accepted
    screen_with_reference(root, planted_reference(root, tmp_path / "real"), threshold=stricter)
    acquire_lock(root).release()  # a writer collects what no reader pins: not this one
    assert sorted(meta["key"] for _, _, meta in dataset) == first_epoch, "the next epoch is the same"
    fresh, _ = load(root, decode=False)
    assert fresh.snapshot.generation != pinned
    assert set(meta["key"] for _, _, meta in fresh) < set(first_epoch), "stricter: fewer accepted"
    del dataset
    gc.collect()  # the pipeline is gone, and with it the pin
    acquire_lock(root).release()
    assert [p.name for p in DatasetFolder(root).generations_dir.iterdir()] == [fresh.snapshot.generation]


def test_loader_filters_labels_and_reads_raw(screened_dataset):
    dataset, label_map = load(screened_dataset, labels=["effusion"], split_shards="raw", decode=False)
    assert label_map == {"effusion": 2}
    samples = list(dataset)
    assert samples and all(label == 2 and png[:4] == b"\x89PNG" for png, label, _ in samples)
    import pyarrow.parquet as pq

    manifest = pq.read_table(screened_dataset / "manifest.parquet").to_pylist()
    assert sorted(m["key"] for _, _, m in samples) == [r["key"] for r in manifest if r["label"] == "effusion"]
    with pytest.raises(ValueError, match="unknown labels"):
        load(screened_dataset, labels=["fracture"])


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    """A git + DVC repository with a local default remote."""
    from dvc.repo import Repo

    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "test@example.com")
    _git(repo, "config", "user.name", "test")
    with Repo.init(str(repo)) as dvc, dvc.config.edit() as conf:
        conf["remote"]["store"] = {"url": str(tmp_path / "remote")}
        conf["core"]["remote"] = "store"
    return repo


def _tar_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/shard-*.tar"))}


def _in_remote(remote: Path, data: bytes) -> bool:
    md5 = hashlib.md5(data).hexdigest()
    return (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def test_track_push_delete_pull_restores_identical_tars(screened_dataset, dvc_project):
    """Accepted tars and tables go to the remote and come back; raw/ (rejected near-copies
    included) is versioned in the local cache only: never pushed, not pulled."""
    import yaml

    out = copy_dataset(screened_dataset, dvc_project / "data" / "demo-cxr")
    assert find_dvc_root(out) == dvc_project
    before = _tar_hashes(out)
    assert len(before) == 4

    result = track_outputs(out)
    assert {Path(t).name for t in result.tracked} == {"raw", "shards", "plan.parquet",
                                                      "manifest.parquet", "screening.parquet"}
    assert result.remote == "store" and result.pushed and result.pushed > 0
    assert (out / "raw.dvc").is_file() and (out / "shards.dvc").is_file()
    assert yaml.safe_load((out / "raw.dvc").read_text())["outs"][0]["push"] is False
    remote = dvc_project.parent / "remote"
    assert all(_in_remote(remote, p.read_bytes()) for p in (out / "shards").glob("*.tar"))
    assert not any(_in_remote(remote, p.read_bytes()) for p in (out / "raw").glob("*.tar"))
    again = track_outputs(out)  # idempotent; nothing new to push; raw stays local
    assert again.pushed == 0
    assert yaml.safe_load((out / "raw.dvc").read_text())["outs"][0]["push"] is False

    shutil.rmtree(out / "raw")
    shutil.rmtree(out / "shards")
    shutil.rmtree(dvc_project / ".dvc" / "cache")  # only the remote has the data now
    pulled = pull_outputs(out)
    assert {Path(p).name for p in pulled} >= {"shards"} and "raw" not in {Path(p).name for p in pulled}
    assert _tar_hashes(out) == {k: v for k, v in before.items() if k.startswith("shards/")}
    assert not (out / "raw").exists()


def test_loader_reads_tars_through_dvc_when_not_checked_out(screened_dataset, dvc_project):
    out = copy_dataset(screened_dataset, dvc_project / "demo-cxr")
    track_outputs(out, push=False)
    shutil.rmtree(out / "shards")
    dataset, label_map = load(out)
    assert label_map == {"normal": 0, "pneumonia": 1, "effusion": 2}, "spec.yaml read too"
    keys = Counter(meta["key"] for _, _, meta in dataset)
    assert set(keys) == accepted_keys(screened_dataset) and set(keys.values()) == {1}
    assert not (out / "shards").exists(), "streamed from the DVC cache, not checked out"
    explicit, _ = load("demo-cxr", repo=str(dvc_project), labels=["normal"])
    assert {m["label"] for _, _, m in explicit} == {"normal"}


def test_dvc_calls_are_serialized(screened_dataset, dvc_project):
    outs = [copy_dataset(screened_dataset, dvc_project / f"d{i}") for i in range(2)]
    errors: list[BaseException] = []

    def work(out: Path) -> None:
        try:
            track_outputs(out, push=True)
        except BaseException as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all((o / "raw.dvc").is_file() for o in outs)


def test_tracking_leaves_stage_outputs_to_dvc_yaml(screened_dataset, dvc_project):
    out = copy_dataset(screened_dataset, dvc_project / "ds")
    (dvc_project / "dvc.yaml").write_text(
        "stages:\n  generate:\n    cmd: synthdata run spec.yaml --out ds\n    outs:\n    - ds/raw\n")
    result = track_outputs(out, push=False)
    assert set(result.skipped) == {str(out / "raw")}
    assert "dvc.yaml stage" in result.skipped[str(out / "raw")]
    assert str(out / "shards") in result.tracked and not (out / "raw.dvc").exists()


def test_tracking_refuses_clearly(tmp_path, dvc_project, screened_dataset):
    with pytest.raises(VersioningError, match="not inside a DVC repository"):
        track_outputs(copy_dataset(screened_dataset, tmp_path / "loose"))
    (dvc_project / ".gitignore").write_text("ignored/\n")
    with pytest.raises(VersioningError, match="ignored"):
        track_outputs(copy_dataset(screened_dataset, dvc_project / "ignored" / "demo"))


def test_reset_removes_only_what_synthdata_writes(screened_dataset, tmp_path):
    out = copy_dataset(screened_dataset, tmp_path / "demo-cxr")
    (out / ".gitignore").write_text("/raw\n/shards\n")  # as DVC writes it for stage outputs
    removed = reset_dataset(out, "demo-cxr")
    assert {"raw", "shards", "generations", "spec.yaml", "plan.parquet", "manifest.parquet",
            "README.md", ".gitignore"} <= set(removed)
    assert set(removed) - {".gitignore"} <= set(DatasetFolder.ENTRIES)
    assert not set(removed) & set(DatasetFolder.LOCKS), "a lock file is never deleted"
    assert {p.name for p in out.iterdir()} <= set(DatasetFolder.LOCKS), "nothing but the locks left"


def test_reset_takes_the_run_lock_and_spares_pinned_generations(screened_dataset, tmp_path):
    from synthdata.dataset.prepare import acquire_lock
    from synthdata.folder.snapshot import open_snapshot

    out = copy_dataset(screened_dataset, tmp_path / "demo-cxr")
    lock = acquire_lock(out)  # a run in progress
    before = _tree(out)
    try:
        with pytest.raises(VersioningError, match="another synthdata run is using this output folder"):
            reset_dataset(out, "demo-cxr")
    finally:
        lock.release()
    with open_snapshot(out) as snap:  # a training job reading the accepted shards
        with pytest.raises(VersioningError, match=f"still read screening generation.*{snap.generation}"):
            reset_dataset(out, "demo-cxr")
        assert [p.name for p in snap.accepted_tars() if p.is_file()], "its files are still there"
    assert _tree(out) == before, "a refused reset changes nothing"
    assert "raw" in reset_dataset(out, "demo-cxr")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_reset_refuses_anything_but_the_datasets_own_folder(screened_dataset, tmp_path):
    # a repository root: .git beside the user's README.md (what `out: .` would name)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "README.md").write_text("# my project\n")
    with pytest.raises(VersioningError, match=f"{repo} is a repository root"):
        reset_dataset(repo, "demo-cxr")
    # a folder of other files, with or without synthdata's names among them
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    (foreign / "README.md").write_text("mine")
    with pytest.raises(VersioningError, match=r"holds files synthdata did not write \(thesis.tex\)"):
        reset_dataset(foreign, "demo-cxr")
    # a dataset folder with a file of the user's added
    mixed = copy_dataset(screened_dataset, tmp_path / "mixed")
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(VersioningError, match=r"\(notes.txt\)"):
        reset_dataset(mixed, "demo-cxr")
    # another dataset's folder
    other = copy_dataset(screened_dataset, tmp_path / "other")
    with pytest.raises(VersioningError, match="holds dataset 'demo-cxr' .*, not 'cxr-pneumonia'"):
        reset_dataset(other, "cxr-pneumonia")
    # synthdata's names but no plan.json to verify whose they are
    unverified = copy_dataset(screened_dataset, tmp_path / "unverified")
    (unverified / "plan.json").unlink()
    with pytest.raises(VersioningError, match="no plan.json, so it cannot be verified"):
        reset_dataset(unverified, "demo-cxr")
    import yaml

    renamed = tmp_path / "cxr-pneumonia.yaml"  # another dataset: prepare_folder must reset
    renamed.write_text(yaml.safe_dump({**yaml.safe_load(DEMO_SPEC.read_text()), "name": "cxr-pneumonia"}))
    before = {p: _tree(p) for p in (repo, foreign, mixed, other, unverified)}
    assert before[repo] == {"README.md": b"# my project\n"}
    for folder, tree in before.items():
        with pytest.raises(VersioningError, match=str(folder)):
            prepare_folder(renamed, folder)
        assert _tree(folder) == tree, f"{folder} left as it was"
    with pytest.raises(VersioningError, match="repository root"):
        prepare_folder(DEMO_SPEC, repo)
    assert reset_dataset(tmp_path / "missing", "demo-cxr") == []


def test_prepare_keeps_the_same_dataset_and_resets_another(screened_dataset, tmp_path):
    import yaml

    out = copy_dataset(screened_dataset, tmp_path / "demo-cxr")
    (out / ".gitignore").write_text("/raw\n/plan.parquet\n")
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    spec_file = tmp_path / "spec.yaml"
    spec["memorization"] = {"threshold": 0.8}
    spec_file.write_text(yaml.safe_dump(spec))
    assert prepare_folder(spec_file, out) == "kept"
    assert (out / "raw").is_dir()
    spec["seed"] = 1
    spec_file.write_text(yaml.safe_dump(spec))
    assert prepare_folder(spec_file, out) == "reset"
    assert {p.name for p in out.iterdir()} <= set(DatasetFolder.LOCKS)
