"""Screening of a dataset folder: prepare once, one task per shard, finalize once.

    job = prepare_screening(out_dir, cfg)           # matchers, references, thresholds
    for shard in job.shards: screen_shard(job, shard)   # embed (or reuse), search, decide
    summary = finalize_screening(job)              # near-duplicates, commit, report

`screen_dataset` does all three in one call. Per-shard work is staged under
`DIR/.screening/<token>/` (token = hash of what decides: matchers, references, thresholds,
band, k), so an interrupted screening resumes where it stopped: a shard's staged decisions
record the raw tar's sha256 and the staged accepted tar's sha256 (or "none" when nothing was
accepted), and are reused only when both still match. Real ids never reach the
folder: `nearest_real_id`, `nearest_real_ids` and `nearest_group` are pseudonyms
(`synthdata.privacy`; the map back stays in the private cache, `synthdata screen --reveal`).
`finalize_screening` then commits through the one commit protocol (`synthdata.folder.journal`): the
accepted tars and tables become an immutable generation folder, `DIR/generations/<id>/`
(`synthdata.folder.generations.build`), the commit record naming it is written last, and the
generation is published as `DIR/shards/` and the tables (`generations.finish_screening`).
Readers pin one generation (`synthdata.folder.snapshot`), so they see the old screening or the new
one, never a mix, and never lose their files mid-read. Re-screening with another threshold
reuses the embeddings stored beside the raw shards: it costs a search, and no image is
generated or decoded again. Raw shards are only read. Real pixels are never written under DIR:
only ids and scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


from synthdata import privacy
from synthdata.faults import fault
from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.progress import ShardProgress, phase_timing, screened_line
from synthdata.screening.kinds import GROUP_KIND, REAL_KIND
from synthdata.screening import report, shardio, staging
from synthdata.screening import index as ix
from synthdata.screening.align import AlignedMatcher
from synthdata.screening.loaded import load_reference
from synthdata.screening.decide import (
    ACCEPT,
    NOT_SCREENED,
    SampleDecision,
    decide_all,
    near_duplicates,
)
from synthdata.screening.match import MatchResult
from synthdata.screening.matchers import MatcherSetup, prepare_matchers
from synthdata.spec.models import Memorization
from synthdata.screening.embedder_factory import get_embedder

log = logging.getLogger(__name__)
# What the staged context.json holds that is wall-clock time: never in the report.
TIMING_KEYS = ("prepare_s", "phases")
NO_REFERENCE = "not screened against real images: no memorization.reference"
# Decisions whose samples go to the accepted shards (what consumers read).
PUBLISHED = (ACCEPT, NOT_SCREENED)


def similarity_column(name: str) -> str:
    """The column holding one matcher's score: similarity_<name>."""
    return f"similarity_{name}"


def decisions_schema(names: list[str]) -> pa.Schema:
    """screening.parquet's columns for these matchers (before the near-duplicate columns)."""
    return pa.schema([
        ("key", pa.string()), ("shard", pa.int64()), ("label", pa.string()),
        ("label_index", pa.int64()), ("decision", pa.string()), ("similarity", pa.float32()),
        ("decided_by", pa.string()), ("nearest_real_id", pa.string()),
        ("nearest_group", pa.string()), ("nearest_real_ids", pa.list_(pa.string())),
        ("similarities", pa.list_(pa.float32())),
        *[(similarity_column(n), pa.float32()) for n in names], ("note", pa.string())])


def pseudonymous_rows(result: MatchResult, decisions: list[SampleDecision]) -> dict[str, list]:
    """Decision columns with every real id and group pseudonymized (the map kept privately)."""
    ids, groups = set(), set()
    for i, d in enumerate(decisions):
        r = result.results[d.matcher] if d.matcher else None
        if r is not None:
            ids.update(r.ids[i])
            groups.update(r.groups[i] if r.groups else [])
    pid = privacy.remember(sorted(ids), REAL_KIND)
    pgroup = privacy.remember(sorted(groups), GROUP_KIND)
    cols: dict[str, list] = {"decision": [], "similarity": [], "decided_by": [],
                             "nearest_real_id": [], "nearest_group": [], "nearest_real_ids": [],
                             "similarities": [], "note": []}
    for i, d in enumerate(decisions):
        r = result.results[d.matcher] if d.matcher else None
        cols["decision"].append(d.decision)
        cols["similarity"].append(d.similarity)
        cols["decided_by"].append(d.matcher)
        cols["nearest_real_id"].append(pid.get(d.nearest_real_id) if d.nearest_real_id else None)
        cols["nearest_group"].append(pgroup.get(d.nearest_group) if d.nearest_group else None)
        cols["nearest_real_ids"].append([pid[x] for x in r.ids[i]] if r else [])
        cols["similarities"].append(list(r.sims[i]) if r else [])
        cols["note"].append(d.note)
    for name, r in result.results.items():
        cols[similarity_column(name)] = [None if not np.isfinite(s) else float(s)
                                         for s in r.score]
    return cols


@dataclass(frozen=True)
class ScreeningJob:
    """Everything a per-shard task needs: small, picklable, the same for every shard."""

    out_dir: str
    setup: MatcherSetup
    exact_limit: int
    token: str
    shards: tuple[int, ...]

    @property
    def staging(self) -> Path:
        """DIR/.screening/<token>."""
        return DatasetFolder(self.out_dir).staging_dir / self.token

    @property
    def names(self) -> list[str]:
        """Every scoring matcher, in order."""
        return self.setup.names

    def fingerprint(self, name: str) -> str:
        """The fingerprint keying a matcher's per-shard data."""
        return AlignedMatcher().fingerprint if name == "aligned" \
            else dict(self.setup.fingerprints)[name]


@dataclass
class ScreeningSummary:
    """What a screening did: counts, thresholds, where the report is; timings for run.json."""

    out_dir: str
    samples: int
    decisions: dict[str, int]
    per_label: dict[str, dict[str, int]]
    threshold: float
    thresholds: dict[str, float]
    threshold_info: dict
    near_duplicates: int
    shards: list[int]
    accepted_shards: list[int]
    skipped_reference: list[dict]
    report: str
    timings: dict[str, float] = field(default_factory=dict)
    phases: dict[str, dict] = field(default_factory=dict)  # {phase: progress.phase_timing}

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable)."""
        return asdict(self)


def prepare_screening(out_dir: str | Path, cfg: Memorization, *, threshold: float | None = None,
                      base_dir: str | Path | None = None) -> ScreeningJob:
    """Load the matchers, build or reuse the references, settle every threshold.

    `threshold` overrides the configured ones (`synthdata screen --threshold`). Relative
    reference and embedder paths are taken from `base_dir` (default: the current folder).
    Writes `DIR/.screening/<token>/context.json` for the report.
    """
    t0 = time.perf_counter()
    phases: dict = {}
    setup, context = prepare_matchers(cfg, threshold=threshold, base_dir=base_dir, phases=phases)
    notes = [] if cfg.reference else [
        "NOT SCREENED AGAINST REAL IMAGES: no memorization.reference, so no sample was compared "
        f"with real images; samples that pass QC go to shards/ with decision {NOT_SCREENED!r} "
        "(never 'accept'); near-duplicates among the samples are still flagged"]
    decisive = {"setup": [setup.deciding, setup.fingerprints, setup.aligned,
                          [h.key for _, h in setup.handles],
                          {n: repr(float(t)) for n, t in setup.thresholds}],
                "band": cfg.review_band, "k": cfg.k}
    token = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]
    job = ScreeningJob(str(out_dir), setup, cfg.exact_limit, token,
                       tuple(shardio.complete_shards(out_dir)))
    write_json_atomic(job.staging / "context.json", {
        **report.public_context(context), "notes": notes,
        "prepare_s": round(time.perf_counter() - t0, 3), "phases": phases})
    return job


def embed_shard(job: ScreeningJob, shard: int) -> dict[str, Path]:
    """Per matcher, the raw shard's query data in DIR/embeddings (reused when valid)."""
    sha = shardio.tar_sha256(job.out_dir, shard)
    paths = {n: shardio.embeddings_path(job.out_dir, shard, job.fingerprint(n)) for n in job.names}
    todo = [n for n in job.names
            if shardio.load_shard_embeddings(job.out_dir, shard, job.fingerprint(n), sha) is None]
    if todo:
        keys, images = shardio.shard_images(shardio.read_members(shardio.raw_tar(job.out_dir,
                                                                                 shard)))
        embedders = {e.name: e for e in job.setup.load_embedders()}
        for name in todo:
            data = AlignedMatcher().query_data(images) if name == "aligned" \
                else embedders[name].embed(images)
            shardio.save_shard_embeddings(job.out_dir, shard, job.fingerprint(name), keys,
                                          data, sha)
    return paths


def _load_query_data(job: ScreeningJob, shard: int) -> tuple[list[str], dict[str, np.ndarray]]:
    sha = shardio.tar_sha256(job.out_dir, shard)
    out, keys = {}, None
    for name in job.names:
        k, data = shardio.load_shard_embeddings(job.out_dir, shard, job.fingerprint(name),
                                                sha)  # type: ignore[misc]
        keys, out[name] = k, data
    return keys or [], out


def screen_shard(job: ScreeningJob, shard: int) -> dict:
    """Search and decide one shard; stage its accepted tar and its decisions. Idempotent.

    Returns {shard, samples, reused, accepted, decisions: {decision: count}, seconds}."""
    started = time.perf_counter()
    sha = shardio.tar_sha256(job.out_dir, shard)
    out = staging.decisions_path(job.staging, shard)
    if staging.reusable(job.staging, shard, sha):
        decisions = pq.read_table(out, columns=["decision"]).column(0).to_pylist()
        return {"shard": shard, "samples": len(decisions), "reused": True,
                "accepted": sum(d in PUBLISHED for d in decisions),
                "decisions": dict(Counter(decisions)), "seconds": time.perf_counter() - started}
    embed_shard(job, shard)
    keys, data = _load_query_data(job, shard)
    labels = shardio.shard_labels(job.out_dir, shard)
    n = len(keys)
    if job.setup.handles:
        screener = job.setup.screener()
        result = screener.match(data)
        decided = decide_all(result, dict(job.setup.thresholds), job.setup.review_band,
                             list(job.setup.deciding))
        cols = pseudonymous_rows(result, decided)
    else:  # nothing to compare with: not screened, never `accept` (fail closed)
        cols = {"decision": [NOT_SCREENED] * n, "similarity": [None] * n, "decided_by": [None] * n,
                "nearest_real_id": [None] * n, "nearest_group": [None] * n,
                "nearest_real_ids": [[] for _ in keys], "similarities": [[] for _ in keys],
                "note": [NO_REFERENCE] * n, **{similarity_column(m): [None] * n
                                               for m in job.names}}
    failed_qc = shardio.qc_failures(job.out_dir, shard)
    cols["note"] = [f"qc failed: {failed_qc[k]}" if k in failed_qc else note
                    for k, note in zip(keys, cols["note"])]
    keep = {k for k, d in zip(keys, cols["decision"]) if d in PUBLISHED and k not in failed_qc}
    staged_tar = staging.staged_tar(job.staging, shard)
    if not keep:
        staged_tar.unlink(missing_ok=True)
    elif len(keep) == n:  # identical to the raw tar: the same file (no bytes copied)
        shardio.link_accepted_tar(job.out_dir, shard, staged_tar)
    else:
        shardio.write_accepted_tar(shardio.read_members(shardio.raw_tar(job.out_dir, shard)),
                                   keep, staged_tar)
    table = pa.table({"key": keys, "shard": [shard] * n, "label": [labels[k][0] for k in keys],
                      "label_index": [labels[k][1] for k in keys], **cols},
                     schema=decisions_schema(job.names)).replace_schema_metadata(
        {"tar_sha256": sha, "accepted_sha256": staging.staged_sha(staged_tar)})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    fault("screening.after_shard")
    return {"shard": shard, "samples": n, "reused": False, "accepted": len(keep),
            "decisions": dict(Counter(cols["decision"])), "seconds": time.perf_counter() - started}


def _synthetic_recall(job: ScreeningJob, name: str, vectors: np.ndarray,
                      sample: int = 1000) -> dict:
    """Recall@1 of an approximate reference index on a sample of this dataset's samples."""
    ref = load_reference(dict(job.setup.handles)[name])
    rows = np.sort(np.random.default_rng(0).permutation(len(vectors))[:sample])
    recall = ix.recall_at_1(ref.index, ref.data, queries=vectors[rows], sample=sample)  # type: ignore[arg-type]
    return {"recall_at_1_synthetic": round(recall, 4), "recall_synthetic_sample": len(rows)}


def near_duplicate_threshold(job: ScreeningJob) -> tuple[str | None, float]:
    """(embedder, cosine threshold) flagging near-duplicates among the synthetic samples: the
    first embedder, at its own threshold when it decides, else at its default."""
    if not job.setup.embedders:
        return None, 1.0
    name = job.setup.embedders[0][0]
    if name in job.setup.deciding:
        return name, job.setup.threshold(name)

    entry = job.setup.embedders[0][1]
    return name, get_embedder(entry, device=job.setup.device, base_dir=job.setup.base_dir
                              ).default_threshold


def finalize_screening(job: ScreeningJob) -> ScreeningSummary:
    """Flag near-duplicates, write screening.parquet and the report, commit accepted shards.

    Shards not yet screened (no staged decisions) are screened here first.
    """
    t0 = time.perf_counter()
    context = json.loads((job.staging / "context.json").read_text())
    for shard in job.shards:
        screen_shard(job, shard)
    tables = [pq.read_table(staging.decisions_path(job.staging, s)).replace_schema_metadata(None)
              for s in job.shards]
    table = pa.concat_tables(tables) if tables else decisions_schema(job.names).empty_table()
    dup_name, dup_threshold = near_duplicate_threshold(job)
    keys, vecs = [], []
    for shard in job.shards:
        k, data = _load_query_data(job, shard)
        keys += k
        vecs.append(data[dup_name] if dup_name else np.zeros((len(k), 1), np.float32))
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32)
    dup_of, dup_sim = near_duplicates(vectors, keys, dup_threshold, job.exact_limit)
    context["near_duplicates"] = {"embedder": dup_name, "threshold": round(dup_threshold, 6)}
    for name, handle in job.setup.handles:
        info = (context.get("reference") or {}).get("indexes", {}).get(name, {})
        if info.get("kind") not in (None, "flat", "thumbnails"):
            info.update(_synthetic_recall(job, name, np.concatenate(
                [_load_query_data(job, s)[1][name] for s in job.shards])))
    table = table.append_column("near_duplicate_of", pa.array(dup_of, pa.string()))
    table = table.append_column("near_duplicate_similarity", pa.array(
        [None if np.isnan(s) else float(s) for s in dup_sim], pa.float32()))
    table = table.replace_schema_metadata({
        "thresholds": json.dumps({n: repr(float(t)) for n, t in job.setup.thresholds}),
        "matchers": json.dumps(job.names), "deciding": json.dumps(list(job.setup.deciding)),
        "fingerprints": json.dumps({n: job.fingerprint(n) for n in job.names}),
        "references": json.dumps({n: h.key for n, h in job.setup.handles}), "token": job.token,
        "raw_tars": json.dumps({str(s): shardio.tar_sha256(job.out_dir, s) for s in job.shards},
                               sort_keys=True)})
    with atomic_path(job.staging / DatasetFolder.SCREENING) as tmp:
        pq.write_table(table, tmp)
    rep = report.build_report(table, {k: v for k, v in context.items() if k not in TIMING_KEYS})
    write_json_atomic(job.staging / DatasetFolder.SCREENING_REPORT, rep)
    report.draw_histogram(job.staging / DatasetFolder.SCREENING_PLOT, rep)
    accepted = [s for s in job.shards if staging.staged_tar(job.staging, s).is_file()]
    staging.commit(job.out_dir, job.staging, job.token, job.shards)
    ref = rep.get("reference") or {}
    thresholds = {n: float(t) for n, t in job.setup.thresholds}
    return ScreeningSummary(
        out_dir=job.out_dir, samples=table.num_rows, decisions=rep["decisions"],
        per_label=rep["per_label"], threshold=thresholds[job.setup.deciding[0]],
        thresholds=thresholds, threshold_info=context["threshold_info"],
        near_duplicates=rep["near_duplicates"]["count"], shards=list(job.shards),
        accepted_shards=accepted, skipped_reference=ref.get("skipped", []),
        report=str(DatasetFolder(job.out_dir).screening_report_file),
        timings={"prepare_s": context.get("prepare_s", 0.0),
                 "finalize_s": round(time.perf_counter() - t0, 3)},
        phases={**context.get("phases", {}), "screening_records": phase_timing(
            time.perf_counter() - t0, table.num_rows)})


def screen_dataset(out_dir: str | Path, cfg: Memorization, *, threshold: float | None = None,
                   base_dir: str | Path | None = None) -> ScreeningSummary:
    """Screen (or re-screen) every complete raw shard of a dataset folder, in this process."""
    t0 = time.perf_counter()
    job = prepare_screening(out_dir, cfg, threshold=threshold, base_dir=base_dir)
    t1 = time.perf_counter()
    samples = 0
    with ShardProgress(len(job.shards), shardio.sample_count(out_dir, job.shards),
                       "screen") as progress:
        for shard in job.shards:
            result = screen_shard(job, shard)
            log.info("%s", screened_line(result))
            samples += result["samples"]
            progress.shard_done(result["samples"])
    t2 = time.perf_counter()
    summary = finalize_screening(job)
    summary.timings.update({"prepare_s": round(t1 - t0, 3), "shards_s": round(t2 - t1, 3),
                            "total_s": round(time.perf_counter() - t0, 3)})
    summary.phases["screening"] = phase_timing(t2 - t1, samples)
    return summary
