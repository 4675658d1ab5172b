"""Load a synthdata dataset for training: one call, a WebDataset pipeline and the label map.

    import torch, synthdata
    dataset, label_map = synthdata.load("datasets/demo-cxr")           # accepted shards
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=2,
                                         collate_fn=synthdata.loader.collate)
    for images, labels, metas in loader:   # images B x C x H x W float in [0, 1]
        ...

`load` yields `(image, label_index, metadata)` per sample: the image as a float tensor
C x H x W in [0, 1] (or the PNG bytes with `decode=False`), the label index of the spec
(`label_map` maps names to indices) and the sample's KEY.json metadata (key, prompt, seed,
vars, model fingerprint, ...). Use `collate` (stacks images and labels, keeps metadata as a
list) because metadata dicts differ between labels.

Every sample of the split is read exactly once per epoch, also with a multi-worker
DataLoader: shards are split between nodes (torch.distributed ranks) and then DataLoader
workers, in a fixed order unless `shardshuffle` is given. Splitting is by shard, so use at
most as many workers as there are shards (extra workers get nothing and finish at once).

Where the data comes from:
- a dataset folder (`split_shards="shards"`, the accepted samples; `"raw"` for everything
  generated; when screening never ran and there is no `shards/`, `raw/` is used, with a warning).
  The accepted samples are read from one pinned screening generation
  (`DIR/generations/<id>/shards/`, `synthdata.folder.snapshot`) for as long as the returned pipeline
  lives (its `snapshot`; `pipeline.snapshot.close()` releases it early): a re-screening
  while a job trains neither changes its samples nor removes its files. Complete raw shards
  are never rewritten, so `"raw"` needs no pin;
- a folder of tars or a single tar;
- DVC: pass `repo=` (a local path or git URL of a DVC repository) and/or `rev=`, with the
  path relative to that repository; or just a local path inside a DVC repository whose tars
  are not checked out (only their `.dvc` files or dvc.lock entries are). Tars are then
  streamed through `dvc.api.DVCFileSystem` (from the DVC cache, else the remote).

The same shards also load with Hugging Face datasets (no synthdata needed):

    from datasets import load_dataset
    ds = load_dataset("webdataset", data_files={"train": "datasets/demo-cxr/shards/*.tar"},
                      split="train")
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
import yaml

from synthdata.folder import DatasetFolder as _Folder
from synthdata.folder import shard_of
from synthdata.folder.snapshot import open_snapshot
from synthdata.fsutil import find_dvc_root

SPLITS = (_Folder.SHARDS, _Folder.RAW)


def _decode_image(png: bytes, mode: str | None):
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        if mode is not None and img.mode != mode:
            img = img.convert(mode)
        arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


class _ToTuple:
    """sample dict -> (image, label index, metadata); picklable for DataLoader workers."""

    def __init__(self, decode: bool, mode: str | None):
        self.decode, self.mode = decode, mode

    def __call__(self, sample: dict) -> tuple[Any, int, dict]:
        meta = json.loads(sample["json"])
        meta["__shard__"] = str(sample.get("__url__"))
        image = _decode_image(sample["png"], self.mode) if self.decode else sample["png"]
        return image, int(sample["cls"]), meta


class _LabelFilter:
    """Keep samples whose KEY.cls is one of the label indices."""

    def __init__(self, indices: Iterable[int]):
        self.indices = frozenset(int(i) for i in indices)

    def __call__(self, sample: dict) -> bool:
        return int(sample["cls"]) in self.indices


class _DvcOpener:
    """Open shard URLs through a DVCFileSystem created lazily in each worker process."""

    def __init__(self, repo: str, rev: str | None):
        self.repo, self.rev, self._fs = repo, rev, None

    def __getstate__(self) -> dict:
        return {"repo": self.repo, "rev": self.rev, "_fs": None}

    def __call__(self, urls: Iterable[dict]) -> Iterator[dict]:
        if self._fs is None:
            from dvc.api import DVCFileSystem

            self._fs = DVCFileSystem(self.repo, rev=self.rev)
        for item in urls:
            url = item["url"] if isinstance(item, dict) else item
            stream = self._fs.open(url, "rb")
            try:
                yield {"url": url, "stream": stream}
            finally:
                stream.close()


def collate(batch: Sequence[tuple[Any, int, dict]]) -> tuple[Any, Any, list[dict]]:
    """DataLoader collate_fn: stack images (when decoded) and labels, keep metadata as a list."""
    import torch

    images, labels, metas = zip(*batch)
    stacked = torch.stack(list(images)) if isinstance(images[0], torch.Tensor) else list(images)
    return stacked, torch.tensor(labels, dtype=torch.long), list(metas)


class _Source:
    """Where shards and spec.yaml are read from: the local file system or a DVCFileSystem."""

    def __init__(self, repo: str | None = None, rev: str | None = None):
        self.repo, self.rev = repo, rev
        self.fs = None
        if repo is not None or rev is not None:
            from dvc.api import DVCFileSystem

            self.fs = DVCFileSystem(repo, rev=rev)

    def isdir(self, p: str) -> bool:
        return self.fs.isdir(p) if self.fs else Path(p).is_dir()

    def isfile(self, p: str) -> bool:
        return self.fs.isfile(p) if self.fs else Path(p).is_file()

    def tars(self, folder: str) -> list[str]:
        if self.fs:
            return sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".tar"))
        return sorted(str(p) for p in Path(folder).glob("*.tar"))

    def read_text(self, p: str) -> str:
        if self.fs:
            with self.fs.open(p, "r") as f:
                return f.read()
        return Path(p).read_text(encoding="utf-8")


def _dvc_fallback(path: Path) -> tuple[str, str] | None:
    """(repo root, path relative to it) when `path` lies in a DVC repository that tracks it."""

    root = find_dvc_root(path)
    if root is None:
        return None
    rel = Path(path).resolve().relative_to(root).as_posix()
    return str(root), rel


def _parent(p: str) -> str:
    return p.rsplit("/", 1)[0] if "/" in p else "."


def _spec_near(tar: str, src: _Source) -> str | None:
    """spec.yaml of the dataset a tar belongs to (DIR/raw/x.tar -> DIR/spec.yaml), if any."""
    candidate = f"{_parent(_parent(tar))}/{_Folder.SPEC}"
    return candidate if src.isfile(candidate) else None


def _shard_tars(folder: str, src: _Source) -> list[str]:
    """The shard tars of a dataset's raw/ or shards/ folder (only shard-NNNNNN.tar)."""

    if not src.isdir(folder):
        return []
    return [t for t in src.tars(folder) if shard_of(t.rsplit("/", 1)[-1]) is not None]


def _accepted(p: str, src: _Source):
    """(accepted tars, pinned snapshot or None) of a dataset folder; ([], None) when not screened."""
    if src.fs is not None:
        folder = f"{p}/{_Folder.SHARDS}"
        return _shard_tars(folder, src), None

    snap = open_snapshot(p)
    if not snap.screened:
        snap.close()
        return [], None
    tars = [str(t) for t in snap.accepted_tars()]
    if not snap.pinned:  # a folder without generations: its listing was one screening's
        snap.close()
        return tars, None
    return tars, snap


def _resolve(path: str, split: str, src: _Source) -> tuple[list[str], str | None, Any]:
    """(shard urls, spec.yaml path or None, pinned snapshot or None) of a dataset folder,
    folder of tars or tar."""
    p = path.rstrip("/") or "."
    if p.endswith(".tar"):
        return [p], _spec_near(p, src), None
    if src.isfile(f"{p}/{_Folder.SPEC}"):
        if split not in SPLITS:
            raise ValueError(f"split_shards must be one of {SPLITS}, got {split!r}")
        if split == _Folder.SHARDS:
            if src.isdir(f"{p}/{split}") or src.isfile(f"{p}/{_Folder.SCREENING}"):
                tars, snap = _accepted(p, src)
                return tars, f"{p}/{_Folder.SPEC}", snap
            warnings.warn(f"{p}: no accepted shards (screening has not run); loading raw/ instead",
                          stacklevel=3)
        return _shard_tars(f"{p}/{_Folder.RAW}", src), f"{p}/{_Folder.SPEC}", None
    tars = src.tars(p) if src.isdir(p) else []
    return tars, (_spec_near(tars[0], src) if tars else None), None


def load(source: str | Path | Sequence[str | Path], labels: Iterable[str] | None = None,
         split_shards: str = "shards", decode: bool = True, *, repo: str | None = None,
         rev: str | None = None, mode: str | None = None, shardshuffle: int | bool = False,
         shuffle: int = 0, seed: int = 0, nodesplitter=wds.split_by_node,
         workersplitter=wds.split_by_worker,
         handler=wds.reraise_exception) -> tuple[wds.DataPipeline, dict[str, int]]:
    """A WebDataset pipeline of (image, label index, metadata) and the label map {name: index}.

    source: dataset folder, folder of tars, a tar, or a list of tars (local, or in a DVC repo).
    labels: keep only these label names (indices stay those of the spec).
    split_shards: "shards" (accepted samples) or "raw" (everything generated).
    decode: image as float tensor C x H x W in [0, 1]; False gives the PNG bytes.
    repo / rev: read through DVC (`dvc.api.DVCFileSystem(repo, rev=rev)`), path relative to repo.
    mode: PIL mode to convert images to ("L", "RGB"); None keeps the stored mode.
    shardshuffle / shuffle / seed: shard-order shuffle (off by default) and a sample shuffle
    buffer (0: off); epochs stay exactly-once either way.
    nodesplitter / workersplitter: how shards are divided between ranks and DataLoader workers.
    """
    src = _Source(repo, rev)
    snap = None
    if isinstance(source, (list, tuple)):
        urls = [str(s) for s in source]
        spec_path = _spec_near(urls[0], src) if urls else None
    else:
        urls, spec_path, snap = _resolve(str(source), split_shards, src)
        local_missing = src.fs is None and (not urls or not all(Path(u).is_file() for u in urls))
        if local_missing:
            found = _dvc_fallback(Path(source))
            if found is not None:
                if snap is not None:
                    snap.close()
                src = _Source(found[0], None)
                urls, spec_path, snap = _resolve(found[1], split_shards, src)
    if not urls:
        raise FileNotFoundError(f"no shards (.tar) found for {source!r} (split {split_shards!r}"
                                f"{', DVC repo ' + str(src.repo) if src.fs else ''})")
    names = list(yaml.safe_load(src.read_text(spec_path))["labels"]) if spec_path else []
    label_map = {n: i for i, n in enumerate(names)}
    if labels is not None:
        wanted = list(labels)
        unknown = [n for n in wanted if n not in label_map]
        if unknown:
            raise ValueError(f"unknown labels {unknown}; the dataset has {names}")
        label_map = {n: label_map[n] for n in wanted}
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if nodesplitter is not None:
        stages.append(nodesplitter)
    if workersplitter is not None:
        stages.append(workersplitter)
    if shardshuffle:
        stages.append(wds.detshuffle(100 if shardshuffle is True else int(shardshuffle), seed=seed))
    if src.fs is None:
        stages.append(wds.tarfile_to_samples(handler=handler))
    else:
        stages += [_DvcOpener(src.repo, src.rev),
                   wds.pipelinefilter(wds.tariterators.tar_file_expander)(handler=handler),
                   wds.pipelinefilter(wds.tariterators.group_by_keys)(handler=handler)]
    if labels is not None:
        stages.append(wds.select(_LabelFilter(label_map.values())))
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(wds.map(_ToTuple(decode, mode), handler=handler))
    pipeline = wds.DataPipeline(*stages)
    pipeline.snapshot = snap  # the pin lives as long as the pipeline (released when collected)
    return pipeline, label_map
