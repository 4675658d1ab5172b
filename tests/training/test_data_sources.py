"""Training data sources read real files: a phantom set's folder, its metadata.csv as is, Parquet,
WebDataset tars; captions from sidecars, columns or templates; an order-independent fingerprint."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pandas as pd
import pytest

from synthdata.phantoms import write_phantoms
from synthdata.training.data import TrainDataError, collect_items, data_fingerprint, decode
from synthdata.training.spec import Data


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "phantoms"
    write_phantoms(out, count=8, seed=21, size=40)
    return out


def test_phantom_metadata_csv_works_as_is(phantoms):
    items = collect_items(Data(csv=str(phantoms / "metadata.csv")))
    meta = pd.read_csv(phantoms / "metadata.csv")
    assert [it.caption for it in items] == list(meta["caption"])
    assert all(it.path.is_file() for it in items)
    image = decode(items[0], 32)
    assert image.shape == (32, 32, 3) and image.dtype.name == "uint8"


def test_template_filter_limit_and_order_independent_fingerprint(phantoms, tmp_path):
    data = Data(csv=str(phantoms / "metadata.csv"), caption_template="{finding}, {view} view",
                filter={"label": ["normal", "nodule"]})
    items = collect_items(data)
    meta = pd.read_csv(phantoms / "metadata.csv", dtype=str)
    kept = meta[meta["label"].isin(["normal", "nodule"])]
    assert [it.caption for it in items] == [f"{f}, {v} view" for f, v in zip(kept["finding"], kept["view"])]
    assert len(collect_items(data.model_copy(update={"limit": 2}))) == 2
    shuffled = tmp_path / "shuffled.csv"
    meta.sample(frac=1, random_state=3).to_csv(shuffled, index=False)
    (tmp_path / "images").symlink_to(phantoms / "images")
    fp_a, _ = data_fingerprint(collect_items(Data(csv=str(phantoms / "metadata.csv"))))
    fp_b, _ = data_fingerprint(collect_items(Data(csv=str(shuffled))))
    assert fp_a == fp_b
    with pytest.raises(TrainDataError, match="not among its columns"):
        collect_items(data.model_copy(update={"caption_template": "{diagnosis}"}))


def test_parquet_and_folder_with_sidecar_captions(phantoms, tmp_path):
    meta = pd.read_csv(phantoms / "metadata.csv", dtype=str)
    meta["path"] = [str(phantoms / p) for p in meta["path"]]
    meta.to_parquet(tmp_path / "meta.parquet")
    items = collect_items(Data(parquet=str(tmp_path / "meta.parquet"), caption_column="finding"))
    assert [it.caption for it in items] == list(meta["finding"])
    folder = tmp_path / "folder" / "cxr"
    folder.mkdir(parents=True)
    for i in range(3):
        shutil.copy(phantoms / "images" / f"phantom-00000{i}.png", folder / f"img{i}.png")
    (folder / "img0.txt").write_text("a sidecar caption\n")
    with pytest.raises(TrainDataError, match="img1.png: no caption"):
        collect_items(Data(folder=str(tmp_path / "folder")))
    items = collect_items(Data(folder=str(tmp_path / "folder"), caption_template="{folder} image {name}"))
    assert [it.caption for it in items] == ["a sidecar caption", "cxr image img1", "cxr image img2"]


def _tar(path, samples: list[dict]) -> None:
    with tarfile.open(path, "w") as tar:
        for i, members in enumerate(samples):
            for ext, data in members.items():
                info = tarfile.TarInfo(f"sample{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars_with_txt_or_json(phantoms, tmp_path):
    meta = pd.read_csv(phantoms / "metadata.csv", dtype=str)
    _tar(tmp_path / "shard-000000.tar", [
        {"png": (phantoms / row["path"]).read_bytes(), "txt": row["caption"].encode(),
         "json": json.dumps({"label": row["label"], "view": row["view"]}).encode()}
        for _, row in meta.iterrows()])
    pattern = str(tmp_path / "shard-*.tar")
    assert [it.caption for it in collect_items(Data(webdataset=[pattern]))] == list(meta["caption"])
    items = collect_items(Data(webdataset=[pattern], caption_template="{label} {view}"))
    assert [it.caption for it in items] == [f"{a} {b}" for a, b in zip(meta["label"], meta["view"])]
    assert items[3].read_bytes() == (phantoms / meta["path"][3]).read_bytes()
    normal = collect_items(Data(webdataset=[pattern], filter={"label": ["normal"]}))
    assert [it.caption for it in normal] == list(meta["caption"][meta["label"] == "normal"])
    _tar(tmp_path / "bare.tar", [{"png": (phantoms / meta["path"][0]).read_bytes()}])
    with pytest.raises(TrainDataError, match="no caption"):
        collect_items(Data(webdataset=[str(tmp_path / "bare.tar")]))
