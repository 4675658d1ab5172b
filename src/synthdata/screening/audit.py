"""`synthdata audit`: screen any images against real references, not only synthdata datasets.

    flow: synthdata-audit
      prepare   matchers, the reference cache (reused), thresholds   (once)
      chunks    one Prefect task per chunk of inputs: decode, embed, search, verify, decide
      finish    OUT/audit.parquet (one row per image), OUT/audit_report.json and .png

Inputs, any mix: folders (searched recursively) of PNG/JPEG/TIFF/BMP and DICOM files, single
such files, WebDataset tars (every image member), and synthdata dataset folders (their
accepted shards, or their complete raw shards when not screened yet). Each image's `source`
is its path as given (plus `#frame=N` for a multi-frame DICOM, `#page=N` for a multi-page
TIFF), or `TARPATH#KEY` for a tar member (KEY: the WebDataset sample key).

`audit.parquet` holds, per image: `source`, `decision` (accept / review / reject),
`similarity` (the deciding score), `decided_by`, one `similarity_<matcher>` column per matcher,
`nearest_real_id` and `nearest_group` (pseudonyms: the map back stays in the private cache),
`nearest_real_ids`, `similarities` (the deciding matcher's k nearest) and `note`. Chunk
results are staged in `OUT/.audit/` so a rerun of the same audit resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from synthdata.errors import SynthdataError
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.screening import decoders, report
from synthdata.screening.decide import DECISIONS, decide_all
from synthdata.screening.matchers import MatcherSetup, prepare_matchers
from synthdata.screening.pipeline import pseudonymous_rows, similarity_column
from synthdata.spec.models import Memorization

AUDIT = "audit.parquet"
AUDIT_REPORT = "audit_report.json"
AUDIT_PLOT = "audit_report.png"
STAGING = ".audit"
CHUNK = 256
IMAGE_SUFFIXES = decoders.RASTER_SUFFIXES + decoders.DICOM_SUFFIXES


class AuditInputError(SynthdataError):
    """An audit input that does not exist or holds no images."""


@dataclass(frozen=True)
class Item:
    """One input file (or tar) to read; a chunk is a list of them."""

    path: str      # as given by the user (plus the relative path inside a folder)
    kind: str      # file | tar
    members: tuple[str, ...] = ()  # tar: the image members to read


def _dataset_tars(folder: Path) -> list[Path] | None:
    """A synthdata dataset folder's accepted (else complete raw) shard tars; None otherwise."""
    from synthdata.folder import DatasetFolder

    from synthdata.snapshot import hold

    ds = DatasetFolder(folder)
    if not ds.is_dataset():
        return None
    ds = hold(folder)  # one screening generation, pinned until this process exits
    tars = ds.accepted_tars()
    return tars if tars else [ds.raw_tar(s) for s in ds.complete_shards()]


def _tar_members(path: Path) -> list[str]:
    with tarfile.open(path, "r:*") as tar:
        return [m.name for m in tar if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)]


def _is_dicom(path: Path) -> bool:
    if path.name.lower().endswith(decoders.DICOM_SUFFIXES):
        return True
    if "." in path.name:
        return False
    try:
        with open(path, "rb") as f:
            return decoders.is_dicom_bytes(f.read(132))
    except OSError:
        return False


def collect(inputs: list[str]) -> list[Item]:
    """Every readable input, in a stable order: files one item each, tars split by member."""
    items: list[Item] = []
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise AuditInputError(f"audit input not found: {given}")
        tars = _dataset_tars(path) if path.is_dir() else None
        if tars is not None:
            items += [Item(str(t), "tar", tuple(_tar_members(t))) for t in tars]
            continue
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        for f in files:
            shown = given if f == path else str(Path(given) / f.relative_to(path))
            name = f.name.lower()
            if name.endswith((".tar", ".tar.gz", ".tgz")):
                members = _tar_members(f)
                for start in range(0, len(members), CHUNK):
                    items.append(Item(shown, "tar", tuple(members[start:start + CHUNK])))
            elif name.endswith(decoders.RASTER_SUFFIXES) or _is_dicom(f):
                items.append(Item(shown, "file"))
    if not items:
        raise AuditInputError(f"no images found in {', '.join(inputs)} (expected PNG/JPEG/TIFF/"
                              "BMP or DICOM files, WebDataset tars, or a synthdata dataset folder)")
    return items


def chunks(items: list[Item], size: int = CHUNK) -> list[list[Item]]:
    """Items grouped so each chunk holds about `size` images (a tar item counts its members)."""
    out, current, n = [], [], 0
    for item in items:
        weight = max(1, len(item.members))
        if current and n + weight > size:
            out.append(current)
            current, n = [], 0
        current.append(item)
        n += weight
    return out + ([current] if current else [])


def _frames(src: str | bytes, name: str) -> list[tuple[str, np.ndarray]]:
    """(suffix, display image) of every frame of a file path or of bytes held in memory."""
    if isinstance(src, bytes):
        frames = decoders.decode_bytes(src, name)
    elif _is_dicom(Path(src)):
        frames = decoders.decode_dicom(src)
    else:
        frames = decoders.decode_raster(src)
    return [(f.suffix, f.image) for f in frames]


def read_chunk(chunk: list[Item]) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
    """(sources, images, unreadable [(source, reason)]) of a chunk."""
    sources, images, bad = [], [], []
    for item in chunk:
        if item.kind == "file":
            try:
                for suffix, img in _frames(item.path, item.path):
                    sources.append(item.path + suffix)
                    images.append(img)
            except Exception as exc:  # noqa: BLE001 - an unreadable input is reported, not fatal
                bad.append((item.path, f"{type(exc).__name__}: {exc}"))
            continue
        wanted = set(item.members)
        with tarfile.open(item.path, "r:*") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                folder, _, base = member.name.rpartition("/")
                key = f"{folder}/{base.split('.', 1)[0]}" if folder else base.split(".", 1)[0]
                source = f"{item.path}#{key}"
                try:
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    for suffix, img in _frames(data, member.name):
                        sources.append(source + suffix)
                        images.append(img)
                except Exception as exc:  # noqa: BLE001
                    bad.append((source, f"{type(exc).__name__}: {exc}"))
    return sources, images, bad


def _schema(names: list[str]) -> pa.Schema:
    return pa.schema([
        ("source", pa.string()), ("decision", pa.string()), ("similarity", pa.float32()),
        ("decided_by", pa.string()), *[(similarity_column(n), pa.float32()) for n in names],
        ("nearest_real_id", pa.string()), ("nearest_group", pa.string()),
        ("nearest_real_ids", pa.list_(pa.string())), ("similarities", pa.list_(pa.float32())),
        ("note", pa.string())])


def screen_chunk(setup: MatcherSetup, chunk: list[Item], path: str) -> dict:
    """Screen one chunk and stage its rows at `path` (skipped when already there)."""
    out = Path(path)
    if out.is_file():
        decisions = pq.read_table(out, columns=["decision"]).column(0).to_pylist()
        return {"images": len(decisions), "reused": True, "unreadable": []}
    sources, images, bad = read_chunk(chunk)
    screener = setup.screener()
    result = screener.match(screener.query_data(images))
    decided = decide_all(result, dict(setup.thresholds), setup.review_band, list(setup.deciding))
    cols = pseudonymous_rows(result, decided)
    table = pa.table({"source": sources, **cols}, schema=_schema(setup.names))
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return {"images": len(sources), "reused": False, "unreadable": bad}


def audit_token(setup: MatcherSetup, chunk_list: list[list[Item]]) -> str:
    """Hash of what decides the audit (matchers, references, thresholds, inputs)."""
    blob = json.dumps({"setup": [setup.deciding, setup.fingerprints, setup.aligned,
                                 [h.key for _, h in setup.handles],
                                 {n: repr(float(t)) for n, t in setup.thresholds}],
                       "band": setup.review_band, "k": setup.k,
                       "chunks": [[(i.path, i.kind, i.members) for i in c] for c in chunk_list]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_audit(inputs: list[str], cfg: Memorization, out_dir: str | Path
                  ) -> tuple[MatcherSetup, dict, list[list[Item]], Path]:
    """Matchers and references (cached), the chunks, and the staging folder of this audit."""
    if not cfg.reference:
        raise AuditInputError("synthdata audit needs --reference: the real images to compare with")
    items = collect(inputs)
    setup, context = prepare_matchers(cfg)
    chunk_list = chunks(items)
    staging = Path(out_dir) / STAGING / audit_token(setup, chunk_list)
    staging.mkdir(parents=True, exist_ok=True)
    return setup, report.public_context(context), chunk_list, staging


def finish_audit(setup: MatcherSetup, context: dict, staging: Path, n_chunks: int,
                 unreadable: list[tuple[str, str]], out_dir: str | Path) -> dict:
    """Concatenate the chunks into OUT/audit.parquet, write the report, drop the staging."""
    out = Path(out_dir)
    tables = [pq.read_table(staging / f"chunk-{i:06d}.parquet") for i in range(n_chunks)]
    table = pa.concat_tables(tables) if tables else _schema(setup.names).empty_table()
    table = table.replace_schema_metadata({
        "thresholds": json.dumps({n: repr(float(t)) for n, t in setup.thresholds}),
        "deciding": json.dumps(list(setup.deciding)), "matchers": json.dumps(setup.names),
        "references": json.dumps({n: h.key for n, h in setup.handles})})
    with atomic_path(out / AUDIT) as tmp:
        pq.write_table(table, tmp)
    context = {**context, "notes": [f"unreadable input: {s}: {r}" for s, r in unreadable]}
    rep = report.build_report(table, context, key="source")
    write_json_atomic(out / AUDIT_REPORT, rep)
    report.draw_histogram(out / AUDIT_PLOT, rep)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return {"out_dir": str(out), "images": table.num_rows, "decisions": rep["decisions"],
            "thresholds": rep["thresholds"], "unreadable": len(unreadable),
            "report": str(out / AUDIT_REPORT)}


def fails(decisions: dict[str, int], fail_on: str | None) -> bool:
    """True when some image reached `fail_on` (review also counts reject) or worse."""
    if fail_on is None:
        return False
    worse = DECISIONS[DECISIONS.index(fail_on):]
    return any(decisions.get(d, 0) for d in worse)


@task(name="audit-chunk", retries=1, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="audit-chunk-{index}")
def audit_chunk_task(setup: MatcherSetup, chunk: list[Item], path: str, index: int) -> dict:
    """Screen one chunk of inputs (see `screen_chunk`)."""
    result = screen_chunk(setup, chunk, path)
    get_run_logger().info("chunk %d: %d images%s", index, result["images"],
                          " (reused)" if result["reused"] else "")
    return result


@flow(name="synthdata-audit", flow_run_name="audit-{name}", persist_result=False,
      validate_parameters=False)
def audit_flow(setup: MatcherSetup, context: dict, chunk_list: list[list[Item]], staging: str,
               out_dir: str, name: str = "images") -> dict:
    """One task per chunk of inputs, then audit.parquet and the report.

    Its parameters carry no real ids: the setup names cached references by hash, the context
    is pseudonymized (`report.public_context`), the chunks list the synthetic inputs.
    """
    futures = [audit_chunk_task.submit(setup, c, str(Path(staging) / f"chunk-{i:06d}.parquet"),
                                       i) for i, c in enumerate(chunk_list)]
    unreadable = [bad for f in futures for bad in f.result()["unreadable"]]
    return finish_audit(setup, context, Path(staging), len(chunk_list), unreadable, out_dir)


def run_audit(inputs: list[str], cfg: Memorization, out_dir: str | Path) -> dict:
    """Prepare (references, thresholds; outside Prefect: real paths stay here), then run the
    audit flow and return its summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup, context, chunk_list, staging = prepare_audit(inputs, cfg, out)
    return audit_flow(setup, context, chunk_list, str(staging), str(out),
                      name=out.resolve().name or "images")
