"""Model fingerprint, manifest, stats, run record and dataset card on a real demo dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from synthdata.errors import ModelError
from synthdata.generation.fingerprint import model_files, model_fingerprint
from synthdata.spec.models import Generator
from tests.lineage.conftest import REJECTED, SHARDS


def test_fingerprint_covers_weights_configs_revision_and_adapters(tmp_path):
    builtin = model_fingerprint(Generator(model="builtin:tiny"))
    assert builtin == model_fingerprint(Generator(model="builtin:tiny")), "stable"
    assert "unet/diffusion_pytorch_model.safetensors" in builtin.files
    assert "model_index.json" in builtin.files

    local = tmp_path / "model"
    shutil.copytree(builtin.folder, local)
    (local / ".cache").mkdir()
    (local / ".cache" / "junk").write_text("ignored")
    (local / "README.md").write_text("docs are not the model")
    same = model_fingerprint(Generator(model=str(local)))
    assert same.fingerprint == builtin.fingerprint, "same files, hidden files and docs ignored"
    assert model_files(local) == sorted(builtin.files)

    assert model_fingerprint(Generator(model=str(local), revision="v2")).fingerprint != builtin.fingerprint
    cfg = json.loads((local / "unet" / "config.json").read_text())
    cfg["norm_eps"] = 1e-6
    (local / "unet" / "config.json").write_text(json.dumps(cfg))
    changed = model_fingerprint(Generator(model=str(local)))
    assert changed.fingerprint != builtin.fingerprint

    emb = tmp_path / "emb.safetensors"
    emb.write_bytes(b"embedding-1")
    with_ti = model_fingerprint(Generator(model=str(local), textual_inversion=[
        {"path": str(emb), "token": "<x>"}]))
    emb.write_bytes(b"embedding-2")
    with_ti2 = model_fingerprint(Generator(model=str(local), textual_inversion=[
        {"path": str(emb), "token": "<x>"}]))
    assert len({changed.fingerprint, with_ti.fingerprint, with_ti2.fingerprint}) == 3
    assert with_ti.textual_inversion[0]["sha256"] == hashlib.sha256(b"embedding-1").hexdigest()


def test_fingerprint_of_hub_model_not_on_disk_fails_clearly():
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        model_fingerprint(Generator(model="nobody-here/no-such-model"))


def test_manifest_has_one_row_per_generated_sample_with_hashes_and_screening(screened_dataset):
    manifest = pq.read_table(screened_dataset / "manifest.parquet").to_pylist()
    assert len(manifest) == 16 * len(SHARDS)
    assert [r["index"] for r in manifest] == list(range(16 * len(SHARDS)))
    by_key = {r["key"]: r for r in manifest}
    with tarfile.open(screened_dataset / "raw" / "shard-000001.tar") as tar:
        for member in tar:
            if member.name.endswith(".png"):
                key = member.name.removesuffix(".png")
                assert by_key[key]["png_sha256"] == hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    run = json.loads((screened_dataset / "run.json").read_text())
    screened = pq.read_table(screened_dataset / "screening.parquet").to_pylist()
    written = {r["key"]: r for r in screened}
    assert set(written) == set(by_key), "every generated sample was screened"
    for r in manifest:
        assert r["model_fingerprint"] == run["model"]["fingerprint"]
        assert r["plan_hash"] == run["plan_hash"] and r["spec_hash"] == run["spec_hash"]
        assert r["raw_tar"] == f"raw/shard-{r['shard']:06d}.tar"
        assert r["batch_size"] >= 1 and r["seed"] >= 0
        rejected = r["key"] in REJECTED
        assert r["decision"] == ("reject" if rejected else "accept")
        assert r["accepted"] is (not rejected)
        assert r["accepted_tar"] == (None if rejected else f"shards/shard-{r['shard']:06d}.tar")
        assert r["nearest_real_id"] == written[r["key"]]["nearest_real_id"]
        assert r["score"] == pytest.approx(written[r["key"]]["similarity"])
        assert (r["score"] >= 0.9) is rejected, "planted copies score at the top, the rest below"


def test_unscreened_manifest_and_stats(demo_dataset, tmp_path):
    from synthdata.dataset.stats import dataset_stats
    from synthdata.dataset.manifest import manifest_table

    table = manifest_table(demo_dataset).to_pylist()
    assert len(table) == 32 and all(r["decision"] is None and r["accepted"] is None for r in table)
    stats = dataset_stats(demo_dataset, manifest_table(demo_dataset))
    assert stats["samples"] == {"planned": 48, "generated": 32, "accepted": None}
    assert stats["decisions"] == {"unscreened": 32}


def test_stats_are_deterministic_counts(screened_dataset):
    from synthdata.dataset.stats import write_stats

    stats = json.loads((screened_dataset / "stats.json").read_text())
    assert stats["samples"] == {"planned": 48, "generated": 32, "accepted": 29}
    assert stats["decisions"] == {"accept": 29, "reject": 3}
    assert sum(v["planned"] for v in stats["labels"].values()) == 48
    assert sum(v["accepted"] for v in stats["labels"].values()) == 29
    before = (screened_dataset / "stats.json").read_bytes()
    write_stats(screened_dataset)
    assert (screened_dataset / "stats.json").read_bytes() == before


def test_run_record_holds_what_made_the_run(demo_dataset):
    run = json.loads((demo_dataset / "run.json").read_text())
    assert run["spec"]["name"] == "demo-cxr" and len(run["spec_hash"]) == 64 and len(run["plan_hash"]) == 64
    assert len(run["model"]["fingerprint"]) == 64 and run["model"]["files"]
    assert run["scheduler"]["class"] == "DDIMScheduler" and run["scheduler"]["config"]["steps_offset"] == 1
    for lib in ("torch", "diffusers", "transformers", "prefect", "webdataset", "numpy", "pyarrow"):
        assert lib in run["libraries"]
    assert any(k.startswith("faiss") for k in run["libraries"])
    assert run["execution"] == {"engine": "local", "workers": 1, "threads_per_worker": 1}
    assert run["prefect"] == {"flow_run_id": None}
    assert run["timings"]["generate_s"] == 1.0 and "recorded_at" in run["timings"]


def test_run_record_names_the_git_commit_of_the_spec(tmp_path):
    """run.json records the commit of the repository holding the spec (a real git repository)."""
    import subprocess

    from synthdata.dataset.run_record import git_info

    repo = tmp_path / "project"
    (repo / "specs").mkdir(parents=True)
    spec = repo / "specs" / "demo.yaml"
    spec.write_text("name: x\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.email=t@e", "-c", "user.name=t", "commit",
                                                "-qm", "spec"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    info = git_info(spec)
    assert len(info["commit"]) == 40 and info["path"] == "specs/demo.yaml" and info["dirty"] is False
    spec.write_text("name: y\n")
    assert git_info(spec)["dirty"] is True
    assert git_info(tmp_path / "elsewhere.yaml") is None


def test_dataset_card_front_matter_and_sections(screened_dataset):
    text = (screened_dataset / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---", 2)[1])
    assert front["license"] == "apache-2.0"
    assert front["size_categories"] == ["n<1K"]
    assert front["configs"][0]["data_files"][0]["path"] == "shards/*.tar"
    assert "image-classification" in front["task_categories"]
    for heading in ("## Labels", "## Model", "## Generation settings", "## Memorization screening",
                    "## How to load", "## Known limitations"):
        assert heading in text
    assert "| normal | 0 | 24 |" in text
    assert "reject 3" in text and "accept 29" in text
    assert "the images are noise" in text
    assert 'load_dataset("webdataset"' in text and "synthdata.load(" in text


def test_prefect_artifacts_are_a_no_op_outside_a_flow(screened_dataset):
    from synthdata.dataset.card import publish_prefect_artifacts

    assert publish_prefect_artifacts(screened_dataset) == []


def test_contact_sheets_never_draw_a_sample_screening_did_not_accept(screened_dataset, tmp_path):
    """A screening that accepts nothing leaves every label a sheet saying so, not the rejected
    raw samples; a normal screening draws exactly the first accepted samples per label."""
    import io

    from PIL import Image

    from synthdata.dataset.report import contact_sheet, empty_sheet, write_contact_sheets
    from tests.lineage.conftest import copy_dataset, screen_with_reference

    def pixels(image) -> bytes:
        return image.convert("RGB").tobytes()

    names = ["normal", "pneumonia", "effusion"]
    accepted: dict[str, list[bytes]] = {n: [] for n in names}
    for tar_path in sorted((screened_dataset / "shards").glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        for key in sorted(k.removesuffix(".png") for k in members if k.endswith(".png")):
            label = names[int(members[f"{key}.cls"])]
            if len(accepted[label]) < 16:
                accepted[label].append(members[f"{key}.png"])
    root = copy_dataset(screened_dataset, tmp_path / "ds")
    for path in write_contact_sheets(root):
        label = path.stem.removeprefix("contact-")
        assert pixels(Image.open(path)) == pixels(contact_sheet(accepted[label]))

    screen_with_reference(root, screened_dataset.parent / "real", threshold=-1.0)  # rejects all
    assert not list((root / "shards").glob("*.tar"))
    written = write_contact_sheets(root)
    assert sorted(p.name for p in written) == sorted(f"contact-{n}.png" for n in names)
    for path in written:
        label = path.stem.removeprefix("contact-")
        shown = Image.open(io.BytesIO(path.read_bytes()))
        assert pixels(shown) == pixels(empty_sheet(f"{label}: no accepted samples"))

    # `synthdata audit` of a dataset folder reads what it publishes: its accepted tars once
    # screened (none here, so nothing to audit), never the rejected raw samples
    from synthdata.screening.audit import AuditInputError, collect

    from synthdata.fsutil import sha256_file

    audited = [Path(i.path) for i in collect([str(screened_dataset)])]  # the pinned generation's
    published = sorted((screened_dataset / "shards").glob("shard-*.tar"))
    assert [(p.name, sha256_file(p)) for p in audited] == [
        (p.name, sha256_file(p)) for p in published]
    with pytest.raises(AuditInputError, match="no images found"):
        collect([str(root)])


def test_screening_state_reads_the_references_and_older_tables(screened_dataset, tmp_path):
    """`screened` when real references were searched; a table from before the `references`
    metadata counts as screened only when it names a nearest real image."""
    import pyarrow as pa

    from synthdata.dataset.records import NOT_RUN, NOT_SCREENED, SCREENED, screening_state
    from tests.lineage.conftest import copy_dataset

    assert screening_state(screened_dataset) == SCREENED
    root = copy_dataset(screened_dataset, tmp_path / "ds")
    path = root / "screening.parquet"
    table = pq.read_table(path).replace_schema_metadata(None)
    pq.write_table(table, path)
    assert screening_state(root) == SCREENED
    nearest = table.schema.get_field_index("nearest_real_id")
    pq.write_table(table.set_column(nearest, "nearest_real_id", pa.nulls(table.num_rows, pa.string())), path)
    assert screening_state(root) == NOT_SCREENED
    path.unlink()
    assert screening_state(root) == NOT_RUN
