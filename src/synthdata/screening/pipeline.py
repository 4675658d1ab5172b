"""Screening of a dataset folder: prepare once, one task per shard, finalize once.

    plan = prepare_screening(out_dir, cfg)          # embedder, reference index, threshold
    for shard in plan.shards: screen_shard(plan, shard)   # embed (or reuse), search, decide
    summary = finalize_screening(plan)              # near-duplicates, commit, report

`screen_dataset` does all three in one call. Per-shard work is staged under
`DIR/.screening/<token>/` (token = hash of what decides: embedder, reference, threshold, band,
k), so an interrupted screening resumes where it stopped. `finalize_screening` then swaps in
`DIR/shards/`, `DIR/screening.parquet` and the report together, so consumers see either the
old screening or the new one. Re-screening with another threshold reuses the embeddings
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

from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.screening import calibrate, report, shardio
from synthdata.screening import index as ix
from synthdata.screening.cache import ReferenceHandle, load_reference, prepare_reference
from synthdata.screening.decide import ACCEPT, decide, near_duplicates, nearest_real
from synthdata.screening.embedders import Embedder, get_embedder
from synthdata.screening.reference import ReaderOptions
from synthdata.shards import shard_name
from synthdata.spec.models import Memorization

STAGING = ".screening"
NO_REFERENCE = "no reference"
DECISIONS_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.int64()), ("label", pa.string()),
    ("label_index", pa.int64()), ("decision", pa.string()), ("similarity", pa.float32()),
    ("nearest_real_ids", pa.list_(pa.string())), ("similarities", pa.list_(pa.float32())),
    ("note", pa.string())])


@dataclass(frozen=True)
class ScreeningPlan:
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
        return Path(self.out_dir) / STAGING / self.token


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


def _embedder_of(plan: ScreeningPlan) -> Embedder:
    emb = get_embedder(plan.embedder, device=plan.device, batch_size=plan.batch_size,
                       base_dir=plan.base_dir)
    if emb.fingerprint != plan.embedder_fingerprint:
        raise RuntimeError(f"embedder {plan.embedder!r} changed since screening was prepared")
    return emb


def prepare_screening(out_dir: str | Path, cfg: Memorization, *, threshold: float | None = None,
                      base_dir: str | Path | None = None) -> ScreeningPlan:
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
    plan = ScreeningPlan(str(out_dir), cfg.embedder, emb.fingerprint, cfg.device, cfg.batch_size,
                         base, handle, float(thr), cfg.review_band, cfg.k, cfg.exact_limit, token,
                         tuple(shardio.complete_shards(out_dir)))
    described = {k: v for k, v in emb.describe().items() if k != "device"}
    write_json_atomic(plan.staging / "context.json", {
        "threshold": plan.threshold, "threshold_info": how, "review_band": cfg.review_band,
        "k": cfg.k, "embedder": described, "reference": ref_info, "notes": notes,
        "prepare_s": round(time.perf_counter() - t0, 3)})
    return plan


def embed_shard(plan: ScreeningPlan, shard: int) -> Path:
    """Embeddings of a raw shard (DIR/embeddings/shard-N.emb-<fp>.npz); reused if valid."""
    sha = shardio.tar_sha256(plan.out_dir, shard)
    path = shardio.embeddings_path(plan.out_dir, shard, plan.embedder_fingerprint)
    if shardio.load_shard_embeddings(plan.out_dir, shard, plan.embedder_fingerprint, sha):
        return path
    members = shardio.read_members(shardio.raw_tar(plan.out_dir, shard))
    keys, images = shardio.shard_images(members)
    vectors = _embedder_of(plan).embed(images)
    return shardio.save_shard_embeddings(plan.out_dir, shard, plan.embedder_fingerprint,
                                         keys, vectors, sha)


def _decisions_path(plan: ScreeningPlan, shard: int) -> Path:
    return plan.staging / f"{shard_name(shard)}.decisions.parquet"


def screen_shard(plan: ScreeningPlan, shard: int) -> dict:
    """Search and decide one shard; stage its accepted tar and its decisions. Idempotent."""
    sha = shardio.tar_sha256(plan.out_dir, shard)
    out = _decisions_path(plan, shard)
    if out.is_file() and (pq.read_schema(out).metadata or {}).get(b"tar_sha256") == sha.encode():
        decisions = pq.read_table(out, columns=["decision"]).column(0).to_pylist()
        return {"shard": shard, "samples": len(decisions), "reused": True,
                "accepted": decisions.count(ACCEPT)}
    embed_shard(plan, shard)
    keys, vectors = shardio.load_shard_embeddings(plan.out_dir, shard, plan.embedder_fingerprint,
                                                  sha)  # type: ignore[misc]
    labels = shardio.shard_labels(plan.out_dir, shard)
    n = len(keys)
    if plan.reference is not None:
        real_ids, sims = nearest_real(load_reference(plan.reference), vectors, plan.k)
        top1 = sims[:, 0] if n else np.zeros(0, np.float32)
        decisions = decide(top1, plan.threshold, plan.review_band)
        notes: list[str | None] = [None] * n
        sim_lists = [[float(s) for s in row if np.isfinite(s)] for row in sims]
        top1_list: list[float | None] = [float(s) for s in top1]
    else:
        real_ids, sim_lists, top1_list = [[] for _ in keys], [[] for _ in keys], [None] * n
        decisions, notes = [ACCEPT] * n, [NO_REFERENCE] * n
    keep = {k for k, d in zip(keys, decisions) if d == ACCEPT}
    staged_tar = plan.staging / "shards" / f"{shard_name(shard)}.tar"
    if not keep:
        staged_tar.unlink(missing_ok=True)
    elif len(keep) == n:
        with atomic_path(staged_tar) as tmp:
            shutil.copyfile(shardio.raw_tar(plan.out_dir, shard), tmp)
    else:
        shardio.write_accepted_tar(shardio.read_members(shardio.raw_tar(plan.out_dir, shard)),
                                   keep, staged_tar)
    table = pa.table({
        "key": keys, "shard": [shard] * n, "label": [labels[k][0] for k in keys],
        "label_index": [labels[k][1] for k in keys], "decision": decisions,
        "similarity": top1_list, "nearest_real_ids": real_ids, "similarities": sim_lists,
        "note": notes}, schema=DECISIONS_SCHEMA).replace_schema_metadata({"tar_sha256": sha})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return {"shard": shard, "samples": n, "reused": False, "accepted": len(keep)}


def _commit(plan: ScreeningPlan) -> None:
    """Swap the staged shards/, screening.parquet and report into DIR, then drop staging."""
    out, staging = Path(plan.out_dir), plan.staging
    (staging / "shards").mkdir(parents=True, exist_ok=True)
    old = Path(plan.out_dir) / STAGING / f"old-{plan.token}"
    if old.exists():
        shutil.rmtree(old)
    if (out / "shards").exists():
        os.replace(out / "shards", old)
    os.replace(staging / "shards", out / "shards")
    for name in ("screening.parquet", "screening_report.json", "screening_report.png"):
        os.replace(staging / name, out / name)
    shutil.rmtree(out / STAGING, ignore_errors=True)


def _synthetic_recall(plan: ScreeningPlan, vectors: np.ndarray, sample: int = 1000) -> dict:
    """Recall@1 of the approximate reference index on a sample of this dataset's samples."""
    ref = load_reference(plan.reference)  # type: ignore[arg-type]
    rows = np.sort(np.random.default_rng(0).permutation(len(vectors))[:sample])
    recall = ix.recall_at_1(ref.index, ref.vectors, queries=vectors[rows], sample=sample)
    return {"recall_at_1_synthetic": round(recall, 4), "recall_synthetic_sample": len(rows)}


def finalize_screening(plan: ScreeningPlan) -> ScreeningSummary:
    """Flag near-duplicates, write screening.parquet and the report, commit accepted shards.

    Shards not yet screened (no staged decisions) are screened here first.
    """
    t0 = time.perf_counter()
    context = json.loads((plan.staging / "context.json").read_text())
    for shard in plan.shards:
        screen_shard(plan, shard)
    tables = [pq.read_table(_decisions_path(plan, s)).replace_schema_metadata(None)
              for s in plan.shards]
    table = pa.concat_tables(tables) if tables else DECISIONS_SCHEMA.empty_table()
    keys, vecs = [], []
    for shard in plan.shards:
        k, v = shardio.load_shard_embeddings(plan.out_dir, shard, plan.embedder_fingerprint,
                                             shardio.tar_sha256(plan.out_dir, shard))  # type: ignore[misc]
        keys += k
        vecs.append(v)
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32)
    dup_of, dup_sim = near_duplicates(vectors, keys, plan.threshold, plan.exact_limit)
    if plan.reference is not None and context["reference"]["index"]["kind"] != "flat":
        context["reference"]["index"].update(_synthetic_recall(plan, vectors))
    table = table.append_column("near_duplicate_of", pa.array(dup_of, pa.string()))
    table = table.append_column("near_duplicate_similarity", pa.array(
        [None if np.isnan(s) else float(s) for s in dup_sim], pa.float32()))
    table = table.replace_schema_metadata({
        "threshold": repr(plan.threshold), "embedder_fingerprint": plan.embedder_fingerprint,
        "reference": plan.reference.key if plan.reference else ""})
    with atomic_path(plan.staging / "screening.parquet") as tmp:
        pq.write_table(table, tmp)
    rep = report.build_report(table, {k: v for k, v in context.items() if k != "prepare_s"})
    write_json_atomic(plan.staging / "screening_report.json", rep)
    report.draw_histogram(plan.staging / "screening_report.png", rep)
    accepted = sorted(int(p.stem.split("-")[1]) for p in (plan.staging / "shards").glob("*.tar")) \
        if (plan.staging / "shards").is_dir() else []
    _commit(plan)
    ref = context.get("reference") or {}
    return ScreeningSummary(
        out_dir=plan.out_dir, samples=table.num_rows, decisions=rep["decisions"],
        per_label=rep["per_label"], threshold=plan.threshold,
        threshold_info=context["threshold_info"], near_duplicates=rep["near_duplicates"]["count"],
        shards=list(plan.shards), accepted_shards=accepted,
        skipped_reference=ref.get("skipped", []),
        report=str(Path(plan.out_dir) / "screening_report.json"),
        timings={"prepare_s": context.get("prepare_s", 0.0),
                 "finalize_s": round(time.perf_counter() - t0, 3)})


def screen_dataset(out_dir: str | Path, cfg: Memorization, *, threshold: float | None = None,
                   base_dir: str | Path | None = None) -> ScreeningSummary:
    """Screen (or re-screen) every complete raw shard of a dataset folder, in this process."""
    t0 = time.perf_counter()
    plan = prepare_screening(out_dir, cfg, threshold=threshold, base_dir=base_dir)
    t1 = time.perf_counter()
    for shard in plan.shards:
        screen_shard(plan, shard)
    t2 = time.perf_counter()
    summary = finalize_screening(plan)
    summary.timings.update({"prepare_s": round(t1 - t0, 3), "shards_s": round(t2 - t1, 3),
                            "total_s": round(time.perf_counter() - t0, 3)})
    return summary
