"""`synthdata audit`: screen any images against real references, not only synthdata datasets.

    flow: synthdata-audit
      prepare   matchers, the reference cache (reused), thresholds   (once)
      chunks    one Prefect task per chunk of inputs: decode, embed, search, verify, decide
      finish    OUT/audit.parquet (one row per image), OUT/audit_report.json and .png

Inputs, any mix: folders (searched recursively) of PNG/JPEG/TIFF/BMP and DICOM files, single
such files, WebDataset tars (every image member), and synthdata dataset folders (their
accepted shards once screened, else their complete raw shards). Each image's `source`
is its path as given (plus `#frame=N` for a multi-frame DICOM, `#page=N` for a multi-page
TIFF), or `TARPATH#KEY` for a tar member (KEY: the WebDataset sample key).

`audit.parquet` holds, per image: `source`, `decision` (accept / review / reject),
`similarity` (the deciding score), `decided_by`, one `similarity_<matcher>` column per matcher,
`nearest_real_id` and `nearest_group` (pseudonyms: the map back stays in the private cache),
`nearest_real_ids`, `similarities` (the deciding matcher's k nearest) and `note`.

Fail closed: an input that cannot be judged is a `review` row with its reason in `note`
(`unreadable input: ...`): a file or tar member that does not decode, a file that holds no
image or an empty one, stored values that are NaN or infinite (float TIFF or DICOM), a tar
that does not open; blank images and missing scores are reviewed by `decide`. These rows are
staged with the chunk's others in `OUT/.audit/`, so a rerun of the same audit resumes and
still reports them, and `--fail-on review` counts them.
"""

from __future__ import annotations

import hashlib
import io
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
from synthdata.faults import fault
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.screening import decoders, report
from synthdata.screening.decide import DECISIONS, REVIEW, decide_all
from synthdata.screening.matchers import MatcherSetup, prepare_matchers
from synthdata.screening.pipeline import pseudonymous_rows, similarity_column
from synthdata.spec.models import Memorization
from synthdata.folder import DatasetFolder
from synthdata.folder.shards import split_member
from synthdata.folder.snapshot import hold

AUDIT = "audit.parquet"
AUDIT_REPORT = "audit_report.json"
AUDIT_PLOT = "audit_report.png"
STAGING = ".audit"
CHUNK = 256
UNREADABLE = "unreadable input"
STAGING_VERSION = 2  # chunk tables hold a review row per input that cannot be judged
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
    """A synthdata dataset folder's accepted shard tars once screening ran (what it publishes),
    else its complete raw ones; None for a folder that is not a dataset."""

    ds = DatasetFolder(folder)
    if not ds.is_dataset():
        return None
    ds = hold(folder)  # one screening generation, pinned until this process exits
    if ds.screening_file.is_file() or ds.shards_dir.is_dir():
        return ds.accepted_tars()
    return [ds.raw_tar(s) for s in ds.complete_shards()]


def _tar_members(path: Path) -> list[str]:
    """The image members of a tar; none when it does not open (`read_chunk` reviews it)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return [m.name for m in tar if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)]
    except (OSError, tarfile.TarError):
        return []


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
                for start in range(0, max(1, len(members)), CHUNK):
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


def _stored_non_finite(src: str | bytes, name: str) -> int:
    """How many stored values of a float image (mode-F TIFF, float DICOM) are NaN or infinite.

    The decoders render such values as 0, which would let a broken image pass as a dark one.
    """
    from PIL import Image, ImageSequence

    stream = io.BytesIO(src) if isinstance(src, bytes) else src
    dicom = decoders.is_dicom_bytes(src[:132]) if isinstance(src, bytes) else _is_dicom(Path(src))
    if dicom or name.lower().endswith(decoders.DICOM_SUFFIXES):
        import pydicom

        ds = pydicom.dcmread(stream, defer_size="1 KB")  # pixel data read only when float
        if "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            return 0
        return int((~np.isfinite(ds.pixel_array)).sum())
    with Image.open(stream) as img:
        return sum(int((~np.isfinite(np.asarray(page))).sum())
                   for page in ImageSequence.Iterator(img) if page.mode == "F")


def _judgeable(src: str | bytes, name: str) -> list[tuple[str, np.ndarray | str]]:
    """(suffix, image) per frame, or one ("", reason) when the input cannot be judged."""
    frames = _frames(src, name)
    if not frames:
        return [("", f"{UNREADABLE}: the file holds no image")]
    bad = _stored_non_finite(src, name)
    if bad:
        return [("", f"{UNREADABLE}: {bad} stored values are NaN or infinite")]
    return [(suffix, f"{UNREADABLE}: empty image ({'x'.join(map(str, img.shape[:2]))})")
            if img.size == 0 else (suffix, img) for suffix, img in frames]


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{UNREADABLE}: {type(exc).__name__}" + (f": {text}" if text else "")


def read_chunk(chunk: list[Item]) -> list[tuple[str, np.ndarray | str]]:
    """(source, image) of every image of a chunk, in input order; (source, reason) for each
    input that cannot be judged (see the module docstring)."""
    out: list[tuple[str, np.ndarray | str]] = []
    for item in chunk:
        if item.kind == "file":
            try:
                out += [(item.path + suffix, got) for suffix, got in _judgeable(item.path, item.path)]
            except Exception as exc:  # noqa: BLE001 - an unreadable input is a review row
                out.append((item.path, _reason(exc)))
            continue
        wanted, seen = set(item.members), 0
        try:
            with tarfile.open(item.path, "r:*") as tar:
                for member in tar:
                    if member.name not in wanted:
                        continue
                    seen += 1
                    key = split_member(member.name)[0]
                    source = f"{item.path}#{key}"
                    try:
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        out += [(source + suffix, got) for suffix, got in _judgeable(data, member.name)]
                    except Exception as exc:  # noqa: BLE001
                        out.append((source, _reason(exc)))
        except (OSError, tarfile.TarError) as exc:  # the tar itself: what it still held is lost
            out.append((item.path, _reason(exc)))
            continue
        if not wanted and not seen:
            out.append((item.path, f"{UNREADABLE}: the tar holds no image"))
    return out


def _schema(names: list[str]) -> pa.Schema:
    return pa.schema([
        ("source", pa.string()), ("decision", pa.string()), ("similarity", pa.float32()),
        ("decided_by", pa.string()), *[(similarity_column(n), pa.float32()) for n in names],
        ("nearest_real_id", pa.string()), ("nearest_group", pa.string()),
        ("nearest_real_ids", pa.list_(pa.string())), ("similarities", pa.list_(pa.float32())),
        ("note", pa.string())])


def _review_row(names: list[str], reason: str) -> dict:
    return {"decision": REVIEW, "similarity": None, "decided_by": None,
            **{similarity_column(n): None for n in names}, "nearest_real_id": None,
            "nearest_group": None, "nearest_real_ids": [], "similarities": [], "note": reason}


def screen_chunk(setup: MatcherSetup, chunk: list[Item], path: str) -> dict:
    """Screen one chunk and stage its rows at `path` (skipped when already there).

    Inputs that cannot be judged are staged as `review` rows with their reason, so a resumed
    audit reports them as the first run did.
    """
    out = Path(path)
    if out.is_file():
        staged = pq.read_table(out, columns=["decision", "note"]).to_pydict()
        return {"images": len(staged["decision"]), "reused": True,
                "unreadable": sum(1 for n in staged["note"] if n and n.startswith(UNREADABLE))}
    read = read_chunk(chunk)
    good = [i for i, (_, got) in enumerate(read) if not isinstance(got, str)]
    rows: list[dict] = [{}] * len(read)
    if good:
        screener = setup.screener()
        result = screener.match(screener.query_data([read[i][1] for i in good]))
        decided = decide_all(result, dict(setup.thresholds), setup.review_band, list(setup.deciding))
        cols = pseudonymous_rows(result, decided)
        for j, i in enumerate(good):
            rows[i] = {name: values[j] for name, values in cols.items()}
    for i, (_, got) in enumerate(read):
        if isinstance(got, str):
            rows[i] = _review_row(setup.names, got)
    table = pa.Table.from_pylist([{"source": src, **row} for (src, _), row in zip(read, rows)],
                                 schema=_schema(setup.names))
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    fault("audit.chunk_staged")
    return {"images": len(read), "reused": False, "unreadable": len(read) - len(good)}


def audit_token(setup: MatcherSetup, chunk_list: list[list[Item]]) -> str:
    """Hash of what decides the audit (matchers, references, thresholds, inputs, chunking)."""
    blob = json.dumps({"v": STAGING_VERSION, "setup": [setup.deciding, setup.fingerprints, setup.aligned,
                                 [h.key for _, h in setup.handles],
                                 {n: repr(float(t)) for n, t in setup.thresholds}],
                       "band": setup.review_band, "k": setup.k,
                       "chunks": [[(i.path, i.kind, i.members) for i in c] for c in chunk_list]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_audit(inputs: list[str], cfg: Memorization, out_dir: str | Path, chunk_size: int = CHUNK
                  ) -> tuple[MatcherSetup, dict, list[list[Item]], Path]:
    """Matchers and references (cached), the chunks, and the staging folder of this audit."""
    if not cfg.reference:
        raise AuditInputError("synthdata audit needs --reference: the real images to compare with")
    items = collect(inputs)
    setup, context = prepare_matchers(cfg)
    chunk_list = chunks(items, chunk_size)
    staging = Path(out_dir) / STAGING / audit_token(setup, chunk_list)
    staging.mkdir(parents=True, exist_ok=True)
    return setup, report.public_context(context), chunk_list, staging


def unreadable_rows(table: pa.Table) -> list[tuple[str, str]]:
    """(source, reason) of every review row for an input that could not be judged."""
    cols = table.select(["source", "note"]).to_pydict()
    return [(src, note) for src, note in zip(cols["source"], cols["note"])
            if note and note.startswith(UNREADABLE)]


def finish_audit(setup: MatcherSetup, context: dict, staging: Path, n_chunks: int,
                 out_dir: str | Path) -> dict:
    """Concatenate the chunks into OUT/audit.parquet, write the report, drop the staging.

    Unreadable inputs come from the staged rows themselves, reused chunks included.
    """
    out = Path(out_dir)
    tables = [pq.read_table(staging / f"chunk-{i:06d}.parquet") for i in range(n_chunks)]
    table = pa.concat_tables(tables) if tables else _schema(setup.names).empty_table()
    table = table.replace_schema_metadata({
        "thresholds": json.dumps({n: repr(float(t)) for n, t in setup.thresholds}),
        "deciding": json.dumps(list(setup.deciding)), "matchers": json.dumps(setup.names),
        "references": json.dumps({n: h.key for n, h in setup.handles})})
    with atomic_path(out / AUDIT) as tmp:
        pq.write_table(table, tmp)
    unreadable = unreadable_rows(table)
    context = {**context, "notes": [f"review: {s}: {r}" for s, r in unreadable]}
    rep = report.build_report(table, context, key="source")
    write_json_atomic(out / AUDIT_REPORT, rep)
    report.draw_histogram(out / AUDIT_PLOT, rep)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return {"out_dir": str(out), "images": table.num_rows, "decisions": rep["decisions"],
            "thresholds": rep["thresholds"], "unreadable": len(unreadable),
            "unreadable_inputs": unreadable[:20], "report": str(out / AUDIT_REPORT)}


def fails(decisions: dict[str, int], fail_on: str | None) -> bool:
    """True when some image reached `fail_on` (review also counts reject) or worse; inputs
    that could not be judged are `review` rows, so they count."""
    if fail_on is None:
        return False
    worse = DECISIONS[DECISIONS.index(fail_on):]
    return any(decisions.get(d, 0) for d in worse)


@task(name="audit-chunk", retries=1, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="audit-chunk-{index}")
def audit_chunk_task(setup: MatcherSetup, chunk: list[Item], path: str, index: int) -> dict:
    """Screen one chunk of inputs (see `screen_chunk`)."""
    result = screen_chunk(setup, chunk, path)
    get_run_logger().info("chunk %d: %d images%s%s", index, result["images"],
                          f", {result['unreadable']} unreadable (review)" if result["unreadable"]
                          else "", " (reused)" if result["reused"] else "")
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
    reused = sum(bool(f.result()["reused"]) for f in futures)
    return {**finish_audit(setup, context, Path(staging), len(chunk_list), out_dir),
            "chunks": len(chunk_list), "reused_chunks": reused}


def run_audit(inputs: list[str], cfg: Memorization, out_dir: str | Path,
              chunk_size: int = CHUNK) -> dict:
    """Prepare (references, thresholds; outside Prefect: real paths stay here), then run the
    audit flow and return its summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup, context, chunk_list, staging = prepare_audit(inputs, cfg, out, chunk_size)
    return audit_flow(setup, context, chunk_list, str(staging), str(out),
                      name=out.resolve().name or "images")
