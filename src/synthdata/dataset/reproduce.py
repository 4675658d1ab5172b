"""Whether a sample can be made again (`reproduce`).

`reproduce(DIR, KEY)` regenerates the sample by replaying its whole pipeline call: the rows of
its plan batch that share its steps and guidance, exactly as the worker called the pipeline
(`plan.plan_batches`, cut as recorded when an out-of-memory error split a call:
`plan.replay_calls`), because batch composition changes the low bits. It then compares the
decoded pixels with KEY.png in the raw tar. It needs the generating model (and adapters);
when they are missing it says which, and fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


from synthdata.dataset.run_record import read_run_record
from synthdata.errors import ModelError
from synthdata.folder import DatasetFolder
from synthdata.dataset.lineage import LineageError, _call_of, _index_of, folder_spec, read_member, worker_record
from synthdata.spec import Spec
from synthdata.folder.shards import encode_png
from synthdata.generation.fingerprint import model_fingerprint
from synthdata.generation.generators.base import SampleRequest
from synthdata.spec.models import Speed
from synthdata.generation.generators.procedural import ProceduralGenerator, is_procedural


@dataclass
class ReproduceResult:
    """Outcome of regenerating one sample and comparing it with the stored image."""

    key: str
    identical: bool
    max_abs_diff: int
    differing_pixels: int
    png_bytes_identical: bool
    stored_matches_record: bool | None
    model_matches: bool | None = None
    call_keys: list[str] = field(default_factory=list)
    threads: int = 1
    device: str = "cpu"
    seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict:
        """Plain data (JSON-able)."""
        return asdict(self)

    def summary(self) -> str:
        """One line for people."""
        verdict = "identical" if self.identical else "DIFFERENT"
        return (f"{self.key}: {verdict} (max pixel difference {self.max_abs_diff}, "
                f"{self.differing_pixels} values differ; PNG bytes identical: {self.png_bytes_identical}; "
                f"replayed a pipeline call of {len(self.call_keys)} on {self.device} with "
                f"{self.threads} thread(s) in {self.seconds:.1f} s){' - ' + self.note if self.note else ''}")


def recorded_speed(out_dir: str | Path, shard: int):
    """The execution.speed knobs a shard was generated with (its marker), to replay them."""

    return Speed.model_validate((DatasetFolder(out_dir).marker(shard) or {}).get("speed") or {})


def require_model(spec: Spec) -> None:
    """ModelError naming what is missing when the generating model or an adapter is not here."""

    try:
        model_fingerprint(spec.generator)
    except ModelError as exc:
        raise ModelError(f"reproduce needs the model that generated the dataset, and it is not "
                         f"available on this machine: {exc}") from None


def sample_keys(out_dir: str | Path, n: int, seed: int = 0) -> list[str]:
    """n keys drawn at random (seeded) from the generated samples of complete shards, sorted."""
    folder = DatasetFolder(out_dir)
    keys: list[str] = []
    for shard in folder.complete_shards():
        keys += pq.read_table(folder.raw_rows(shard), columns=["key"]).column(0).to_pylist()
    if not keys:
        raise LineageError(f"{folder.root}: no generated samples to reproduce")
    pick = np.random.default_rng(seed).choice(len(keys), size=min(n, len(keys)), replace=False)
    return sorted(keys[i] for i in pick)


def reproduce_many(out_dir: str | Path, keys: list[str]) -> list[ReproduceResult]:
    """reproduce() for several keys with one loaded model (the recorded device and threads)."""
    spec = folder_spec(out_dir)
    require_model(spec)
    generators: dict = {}
    results = []
    for key in keys:
        shard = _index_of(key, spec) // spec.shards.size
        device = (worker_record(out_dir, shard) or {}).get("device") or spec.generator.device
        speed = recorded_speed(out_dir, shard)
        which = json.dumps([device, speed.changed()], sort_keys=True)
        gen = generators.get(which)
        if gen is None:
            gen = generators[which] = _generator(spec, device, speed)
            gen.load()
        results.append(reproduce(out_dir, key, generator=gen))
    return results


def _generator(spec: Spec, device: str, speed):
    """The generator that replays a spec's samples: diffusers, or builtin:procedural's renderer."""
    from synthdata.generation.generators.diffusers_gen import DiffusersGenerator  # deferred: loads diffusers, torch, transformers

    make = ProceduralGenerator if is_procedural(spec.generator.model) else DiffusersGenerator
    return make(spec.generator, device=device, speed=speed)


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        img.load()
        return np.asarray(img)


def reproduce(out_dir: str | Path, key: str, *, device: str | None = None, threads: int | None = None,
              generator=None, check_model: bool = True) -> ReproduceResult:
    """Regenerate `key` by replaying its pipeline call and compare with KEY.png in the raw tar.

    device and threads (torch intra-op threads, which change float results) default to those of
    the worker that generated the shard (DIR/workers/*.json), else run.json, else the spec.
    `generator` lets a caller reuse a loaded ImageGenerator for several keys. With
    check_model, the model is fingerprinted again and compared with the one the sample records,
    so a difference caused by changed weights is named as such.
    """
    import torch


    start = time.perf_counter()
    root = Path(out_dir)
    folder = DatasetFolder(root)
    spec = folder_spec(root)
    shard = _index_of(key, spec) // spec.shards.size
    raw_tar = folder.raw_tar(shard)
    state = folder.shard_state(shard)
    if not state.complete:
        raise LineageError(f"{key!r}: its shard {raw_tar} is not complete ({state.reason}); "
                           "nothing to compare with")
    if generator is None:
        require_model(spec)
    stored = read_member(raw_tar, f"{key}.png")
    if stored is None:
        raise LineageError(f"{key!r} is not in {raw_tar}")
    recorded = pq.read_table(folder.raw_rows(shard), filters=[("key", "=", key)]).to_pylist()
    stored_ok = hashlib.sha256(stored).hexdigest() == recorded[0]["png_sha256"] if recorded else None
    run = read_run_record(root) or {}
    worker = worker_record(root, shard) or {}
    threads = threads or worker.get("threads") or (run.get("execution") or {}).get("threads_per_worker") \
        or spec.execution.threads_per_worker
    device = device or worker.get("device") or spec.generator.device
    call = _call_of(root, spec, shard, key)
    model_ok = None
    if check_model:
        meta = json.loads(read_member(raw_tar, f"{key}.json") or b"{}")
        recorded_fp = (meta.get("model") or {}).get("fingerprint")
        model_ok = None if not recorded_fp else model_fingerprint(spec.generator).fingerprint == recorded_fp
    gen = generator or _generator(spec, device, recorded_speed(out_dir, shard))
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        images = gen.generate([SampleRequest(key=r["key"], prompt=r["prompt"],
                                             negative_prompt=r["negative_prompt"], seed=r["seed"],
                                             steps=r["steps"], guidance_scale=r["guidance_scale"],
                                             label=r.get("label", ""))
                               for r in call])
    finally:
        torch.set_num_threads(previous)
    fresh = images[[r["key"] for r in call].index(key)]
    if fresh.ndim == 3 and fresh.shape[2] == 1:
        fresh = fresh[:, :, 0]
    note = "" if model_ok is not False else "the model's fingerprint differs from the one recorded"
    try:
        old = _decode(stored)
    except Exception as exc:  # noqa: BLE001 - a damaged PNG is a finding, not a crash
        old = None
        note = "; ".join(filter(None, [note, f"stored PNG cannot be decoded ({type(exc).__name__}: {exc})"]))
    if old is not None and old.shape != fresh.shape:
        note = "; ".join(filter(None, [note, f"shape differs: stored {old.shape}, new {fresh.shape}"]))
    if old is None or old.shape != fresh.shape:
        max_diff, differing = 255, int(fresh.size)
    else:
        delta = np.abs(old.astype(np.int16) - fresh.astype(np.int16))
        max_diff, differing = int(delta.max()), int(np.count_nonzero(delta))
    return ReproduceResult(
        key=key, identical=max_diff == 0 and old is not None and old.shape == fresh.shape,
        max_abs_diff=max_diff, differing_pixels=differing,
        png_bytes_identical=encode_png(fresh) == stored, stored_matches_record=stored_ok,
        model_matches=model_ok,
        call_keys=[r["key"] for r in call], threads=int(threads),
        device=getattr(gen, "device", str(device)), seconds=time.perf_counter() - start, note=note)
