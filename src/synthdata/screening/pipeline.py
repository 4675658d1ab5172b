"""Screening of a dataset folder: prepare once, one task per shard, finalize once.

    job = prepare_screening(out_dir, cfg)           # embedder, reference index, threshold
    for shard in job.shards: screen_shard(job, shard)   # embed (or reuse), search, decide
    summary = finalize_screening(job)              # near-duplicates, commit, report

`screen_dataset` does all three in one call. Per-shard work is staged under
`DIR/.screening/<token>/` (token = hash of what decides: embedder, reference, threshold, band,
k), so an interrupted screening resumes where it stopped. `finalize_screening` then commits
the staged `shards/`, `screening.parquet` and report under the folder's exclusive screening
lock: the accepted shards folder is exchanged atomically with the staged one (`DIR/shards`
never goes missing), then the tables are renamed into place. A reader holding the shared
screening lock (`DatasetFolder.screening_lock()`, used by synthdata's own readers) sees the
old screening or the new one, never a mix; `shards/.screening.json` and the
`screening.parquet` metadata carry the same token, so any reader can check. Re-screening with another threshold reuses the embeddings
stored beside the raw shards: it costs a search, and no image is generated or decoded again.
Raw shards are only read. Real pixels are never written under DIR: only ids and scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthdata.folder import DatasetFolder, shard_of
from synthdata.fsutil import atomic_path, exchange_paths, sha256_file, write_json_atomic
from synthdata.screening import calibrate, report, shardio
from synthdata.screening import index as ix
from synthdata.screening.cache import ReferenceHandle, load_reference, prepare_reference
from synthdata.screening.decide import ACCEPT, decide, near_duplicates, nearest_real
from synthdata.screening.embedders import Embedder, get_embedder
from synthdata.screening.reference import ReaderOptions
from synthdata.shards import shard_name
from synthdata.spec.models import Memorization

NO_REFERENCE = "no reference"
DECISIONS_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.int64()), ("label", pa.string()),
    ("label_index", pa.int64()), ("decision", pa.string()), ("similarity", pa.float32()),
    ("nearest_real_id", pa.string()),
    ("nearest_real_ids", pa.list_(pa.string())), ("similarities", pa.list_(pa.float32())),
    ("note", pa.string())])


@dataclass(frozen=True)
class ScreeningJob:
    """Everything a per-shard task needs: small, picklable, the same for every shard."""

    out_dir: str
    embedder: str
    embedder_fingerprint: str
    device: str
    batch_size: int
    base_dir: str | None
    reference: ReferenceHandle | None
    threshold: float
    review_band: float
    k: int
    exact_limit: int
    token: str
    shards: tuple[int, ...]

    @property
    def staging(self) -> Path:
        """DIR/.screening/<token>."""
        return DatasetFolder(self.out_dir).staging_dir / self.token


@dataclass
class ScreeningSummary:
    """What a screening did: counts, threshold, where the report is; timings for run.json."""

    out_dir: str
    samples: int
    decisions: dict[str, int]
    per_label: dict[str, dict[str, int]]
    threshold: float
    threshold_info: dict
    near_duplicates: int
    shards: list[int]
    accepted_shards: list[int]
    skipped_reference: list[dict]
    report: str
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable)."""
        return asdict(self)


def _embedder_of(job: ScreeningJob) -> Embedder:
    emb = get_embedder(job.embedder, device=job.device, batch_size=job.batch_size,
                       base_dir=job.base_dir)
    if emb.fingerprint != job.embedder_fingerprint:
        raise RuntimeError(f"embedder {job.embedder!r} changed since screening was prepared")
    return emb


def prepare_screening(out_dir: str | Path, cfg: Memorization, *, threshold: float | None = None,
                      base_dir: str | Path | None = None) -> ScreeningJob:
    """Load the embedder, build or reuse the reference index, settle the threshold.

    `threshold` overrides the configured one (`synthdata screen --threshold`). Relative
    reference and embedder paths are taken from `base_dir` (default: the current folder).
    Writes `DIR/.screening/<token>/context.json` for the report.
    """
    t0 = time.perf_counter()
    base = str(base_dir) if base_dir is not None else None
    emb = get_embedder(cfg.embedder, device=cfg.device, batch_size=cfg.batch_size, base_dir=base)
    notes: list[str] = []
    handle, ref_info, nn_sims = None, None, None
    if cfg.reference:
        prepared = prepare_reference(
            cfg.reference, emb, options=ReaderOptions(cfg.slice_axis, cfg.image_column),
            exact_limit=cfg.exact_limit, memory_gb=cfg.index_memory_gb, base_dir=base)
        handle, nn_sims, meta = prepared.handle, prepared.nn_sims, prepared.meta
        ref_info = {"images": meta["count"], "files": len(meta["files"]),
                    "content_fingerprint": meta["content"], "index": meta["index"],
                    "skipped": [{"id": s.id, "reason": s.reason} for s in prepared.skipped],
                    "calibration_histogram": calibrate.histogram(nn_sims) if len(nn_sims) else None}
    else:
        notes.append("no reference configured: every sample accepted; near-duplicates flagged")
    thr, how = calibrate.resolve_threshold(cfg.threshold, threshold, nn_sims,
                                           cfg.calibration_quantile, cfg.calibration_margin,
                                           emb.default_threshold)
    decisive = {"embedder": emb.fingerprint, "reference": handle.key if handle else None,
                "threshold": repr(float(thr)), "band": cfg.review_band, "k": cfg.k}
    token = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]
    job = ScreeningJob(str(out_dir), cfg.embedder, emb.fingerprint, cfg.device, cfg.batch_size,
                         base, handle, float(thr), cfg.review_band, cfg.k, cfg.exact_limit, token,
                         tuple(shardio.complete_shards(out_dir)))
    described = {k: v for k, v in emb.describe().items() if k != "device"}
    write_json_atomic(job.staging / "context.json", {
        "threshold": job.threshold, "threshold_info": how, "review_band": cfg.review_band,
        "k": cfg.k, "embedder": described, "reference": ref_info, "notes": notes,
        "prepare_s": round(time.perf_counter() - t0, 3)})
    return job


def embed_shard(job: ScreeningJob, shard: int) -> Path:
    """Embeddings of a raw shard (DIR/embeddings/shard-N.emb-<fp>.npz); reused if valid."""
    sha = shardio.tar_sha256(job.out_dir, shard)
    path = shardio.embeddings_path(job.out_dir, shard, job.embedder_fingerprint)
    if shardio.load_shard_embeddings(job.out_dir, shard, job.embedder_fingerprint, sha):
        return path
    members = shardio.read_members(shardio.raw_tar(job.out_dir, shard))
    keys, images = shardio.shard_images(members)
    vectors = _embedder_of(job).embed(images)
    return shardio.save_shard_embeddings(job.out_dir, shard, job.embedder_fingerprint,
                                         keys, vectors, sha)


def _decisions_path(job: ScreeningJob, shard: int) -> Path:
    return job.staging / f"{shard_name(shard)}.decisions.parquet"


def screen_shard(job: ScreeningJob, shard: int) -> dict:
    """Search and decide one shard; stage its accepted tar and its decisions. Idempotent."""
    sha = shardio.tar_sha256(job.out_dir, shard)
    out = _decisions_path(job, shard)
    if out.is_file() and (pq.read_schema(out).metadata or {}).get(b"tar_sha256") == sha.encode():
        decisions = pq.read_table(out, columns=["decision"]).column(0).to_pylist()
        return {"shard": shard, "samples": len(decisions), "reused": True,
                "accepted": decisions.count(ACCEPT)}
    embed_shard(job, shard)
    keys, vectors = shardio.load_shard_embeddings(job.out_dir, shard, job.embedder_fingerprint,
                                                  sha)  # type: ignore[misc]
    labels = shardio.shard_labels(job.out_dir, shard)
    n = len(keys)
    if job.reference is not None:
        real_ids, sims = nearest_real(load_reference(job.reference), vectors, job.k)
        top1 = sims[:, 0] if n else np.zeros(0, np.float32)
        decisions = decide(top1, job.threshold, job.review_band)
        notes: list[str | None] = [None] * n
        sim_lists = [[float(s) for s in row if np.isfinite(s)] for row in sims]
        top1_list: list[float | None] = [float(s) for s in top1]
    else:
        real_ids, sim_lists, top1_list = [[] for _ in keys], [[] for _ in keys], [None] * n
        decisions, notes = [ACCEPT] * n, [NO_REFERENCE] * n
    keep = {k for k, d in zip(keys, decisions) if d == ACCEPT}
    staged_tar = job.staging / DatasetFolder.SHARDS / f"{shard_name(shard)}.tar"
    if not keep:
        staged_tar.unlink(missing_ok=True)
    elif len(keep) == n:
        with atomic_path(staged_tar) as tmp:
            shutil.copyfile(shardio.raw_tar(job.out_dir, shard), tmp)
    else:
        shardio.write_accepted_tar(shardio.read_members(shardio.raw_tar(job.out_dir, shard)),
                                   keep, staged_tar)
    table = pa.table({
        "key": keys, "shard": [shard] * n, "label": [labels[k][0] for k in keys],
        "label_index": [labels[k][1] for k in keys], "decision": decisions,
        "similarity": top1_list, "nearest_real_id": [ids[0] if ids else None for ids in real_ids],
        "nearest_real_ids": real_ids, "similarities": sim_lists,
        "note": notes}, schema=DECISIONS_SCHEMA).replace_schema_metadata({"tar_sha256": sha})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return {"shard": shard, "samples": n, "reused": False, "accepted": len(keep)}


def _write_generation(job: ScreeningJob) -> None:
    """shards/.screening.json in staging: the token and every accepted tar's sha256."""
    staged = job.staging / DatasetFolder.SHARDS
    staged.mkdir(parents=True, exist_ok=True)
    tars = {p.name: sha256_file(p) for p in sorted(staged.glob("shard-*.tar"))}
    write_json_atomic(staged / DatasetFolder.GENERATION, {"token": job.token, "accepted_tars": tars})


def _commit(job: ScreeningJob) -> None:
    """Commit the staged screening into DIR (see the module docstring), then drop staging."""
    folder, staging = DatasetFolder(job.out_dir), job.staging
    _write_generation(job)
    staged_files = [(staging / folder.SCREENING, folder.screening_file),
                    (staging / folder.SCREENING_REPORT, folder.screening_report_file),
                    (staging / folder.SCREENING_PLOT, folder.screening_plot_file)]
    with folder.screening_lock(exclusive=True):
        if folder.shards_dir.is_dir():
            exchange_paths(staging / folder.SHARDS, folder.shards_dir)
        else:
            os.replace(staging / folder.SHARDS, folder.shards_dir)
        for src, dst in staged_files:
            os.replace(src, dst)
    shutil.rmtree(folder.staging_dir, ignore_errors=True)


def _synthetic_recall(job: ScreeningJob, vectors: np.ndarray, sample: int = 1000) -> dict:
    """Recall@1 of the approximate reference index on a sample of this dataset's samples."""
    ref = load_reference(job.reference)  # type: ignore[arg-type]
    rows = np.sort(np.random.default_rng(0).permutation(len(vectors))[:sample])
    recall = ix.recall_at_1(ref.index, ref.vectors, queries=vectors[rows], sample=sample)
    return {"recall_at_1_synthetic": round(recall, 4), "recall_synthetic_sample": len(rows)}


def finalize_screening(job: ScreeningJob) -> ScreeningSummary:
    """Flag near-duplicates, write screening.parquet and the report, commit accepted shards.

    Shards not yet screened (no staged decisions) are screened here first.
    """
    t0 = time.perf_counter()
    context = json.loads((job.staging / "context.json").read_text())
    for shard in job.shards:
        screen_shard(job, shard)
    tables = [pq.read_table(_decisions_path(job, s)).replace_schema_metadata(None)
              for s in job.shards]
    table = pa.concat_tables(tables) if tables else DECISIONS_SCHEMA.empty_table()
    keys, vecs = [], []
    for shard in job.shards:
        k, v = shardio.load_shard_embeddings(job.out_dir, shard, job.embedder_fingerprint,
                                             shardio.tar_sha256(job.out_dir, shard))  # type: ignore[misc]
        keys += k
        vecs.append(v)
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32)
    dup_of, dup_sim = near_duplicates(vectors, keys, job.threshold, job.exact_limit)
    if job.reference is not None and context["reference"]["index"]["kind"] != "flat":
        context["reference"]["index"].update(_synthetic_recall(job, vectors))
    table = table.append_column("near_duplicate_of", pa.array(dup_of, pa.string()))
    table = table.append_column("near_duplicate_similarity", pa.array(
        [None if np.isnan(s) else float(s) for s in dup_sim], pa.float32()))
    table = table.replace_schema_metadata({
        "threshold": repr(job.threshold), "embedder_fingerprint": job.embedder_fingerprint,
        "reference": job.reference.key if job.reference else "", "token": job.token,
        "raw_tars": json.dumps({str(s): shardio.tar_sha256(job.out_dir, s) for s in job.shards},
                               sort_keys=True)})
    with atomic_path(job.staging / DatasetFolder.SCREENING) as tmp:
        pq.write_table(table, tmp)
    rep = report.build_report(table, {k: v for k, v in context.items() if k != "prepare_s"})
    write_json_atomic(job.staging / DatasetFolder.SCREENING_REPORT, rep)
    report.draw_histogram(job.staging / DatasetFolder.SCREENING_PLOT, rep)
    accepted = sorted(s for p in (job.staging / DatasetFolder.SHARDS).glob("*.tar")
                      if (s := shard_of(p.name)) is not None)
    _commit(job)
    ref = context.get("reference") or {}
    return ScreeningSummary(
        out_dir=job.out_dir, samples=table.num_rows, decisions=rep["decisions"],
        per_label=rep["per_label"], threshold=job.threshold,
        threshold_info=context["threshold_info"], near_duplicates=rep["near_duplicates"]["count"],
        shards=list(job.shards), accepted_shards=accepted,
        skipped_reference=ref.get("skipped", []),
        report=str(DatasetFolder(job.out_dir).screening_report_file),
        timings={"prepare_s": context.get("prepare_s", 0.0),
                 "finalize_s": round(time.perf_counter() - t0, 3)})


def screen_dataset(out_dir: str | Path, cfg: Memorization, *, threshold: float | None = None,
                   base_dir: str | Path | None = None) -> ScreeningSummary:
    """Screen (or re-screen) every complete raw shard of a dataset folder, in this process."""
    t0 = time.perf_counter()
    job = prepare_screening(out_dir, cfg, threshold=threshold, base_dir=base_dir)
    t1 = time.perf_counter()
    for shard in job.shards:
        screen_shard(job, shard)
    t2 = time.perf_counter()
    summary = finalize_screening(job)
    summary.timings.update({"prepare_s": round(t1 - t0, 3), "shards_s": round(t2 - t1, 3),
                            "total_s": round(time.perf_counter() - t0, 3)})
    return summary
