"""Where one sample came from (`lineage`) and whether it can be made again (`reproduce`).

`lineage(DIR, KEY)` follows the whole chain of one sample: the resolved spec and its hash,
the plan row (checked against a fresh derivation from the spec), the model fingerprint, the
seed, plan batch and the pipeline call it was generated in, the raw and accepted tars with
their member names, and the screening result (nearest real id and similarity).

`reproduce(DIR, KEY)` regenerates the sample by replaying its whole pipeline call: the rows of
its plan batch that share its steps and guidance, exactly as the worker called the pipeline
(`plan.plan_batches`, cut as recorded when an out-of-memory error split a call:
`plan.replay_calls`), because batch composition changes the low bits. It then compares the
decoded pixels with KEY.png in the raw tar.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from rich.console import Console
from rich.tree import Tree

from synthdata import records
from synthdata.errors import SynthdataError
from synthdata.spec import Spec, load_spec


class LineageError(SynthdataError):
    """A key or dataset folder that lineage/reproduce cannot follow."""


def _spec(out_dir: Path) -> Spec:
    path = out_dir / "spec.yaml"
    if not path.is_file():
        raise LineageError(f"{out_dir} is not a synthdata dataset folder (no spec.yaml)")
    return load_spec(path)


def _index_of(key: str, spec: Spec) -> int:
    prefix = f"{spec.name}-"
    tail = key.removeprefix(prefix)
    if not key.startswith(prefix) or not tail.isdigit():
        raise LineageError(f"{key!r} is not a key of dataset {spec.name!r} "
                           f"(keys look like {spec.name}-000000042)")
    return int(tail)


def read_member(tar_path: str | Path, name: str) -> bytes | None:
    """Bytes of one tar member, or None when the tar has no such member."""
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            if member.name == name:
                return tar.extractfile(member).read()
    return None


def _plan_row(out_dir: Path, key: str) -> dict | None:
    table = pq.read_table(out_dir / "plan.parquet", filters=[("key", "=", key)])
    return table.to_pylist()[0] if table.num_rows else None


def _recorded_batch_sizes(out_dir: Path, shard: int) -> dict[str, int] | None:
    rows = out_dir / "raw" / f"shard-{shard:06d}.parquet"
    if not rows.is_file():
        return None
    table = pq.read_table(rows, columns=["key", "batch_size"]).to_pydict()
    return dict(zip(table["key"], table["batch_size"]))


def _call_of(out_dir: Path, spec: Spec, shard: int, key: str) -> list[dict]:
    """The plan rows the worker passed to the pipeline in the same call as `key`.

    The planned calls (`plan.plan_batches`), cut as recorded where the worker had to split a
    call after running out of GPU memory (`plan.replay_calls` with the recorded batch sizes).
    """
    from synthdata.plan import replay_calls, shard_rows

    sizes = _recorded_batch_sizes(out_dir, shard)
    try:
        calls = list(replay_calls(shard_rows(spec, shard).to_pylist(), sizes))
    except (KeyError, ValueError) as exc:
        raise LineageError(f"{key!r}: the recorded batch sizes of shard {shard} do not match its "
                           f"plan ({exc})") from None
    for call in calls:
        if any(r["key"] == key for r in call):
            return call
    raise LineageError(f"{key!r} is not in the plan of shard {shard}")


def _accepted_tar(root: Path, stem: str, key: str) -> tuple[bool | None, str | None]:
    """(accepted shards exist, the accepted tar holding key relative to root): same-named tar first."""
    folder = root / "shards"
    if not folder.is_dir():
        return None, None
    same = folder / f"{stem}.tar"
    if same.is_file() and f"{key}.png" in records.tar_members(same):
        return True, f"shards/{same.name}"
    return True, (records.accepted_keys(root) or {}).get(key)


def worker_record(out_dir: str | Path, shard: int) -> dict | None:
    """The DIR/workers/*.json record of the worker that ran `shard` (device, threads), if any."""
    found = None
    for path in sorted((Path(out_dir) / "workers").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if shard in (record.get("shards") or []):
            found = record
    return found


def lineage(out_dir: str | Path, key: str) -> dict:
    """The whole chain of one sample, as JSON-able data (see module docstring)."""
    root = Path(out_dir)
    spec = _spec(root)
    index = _index_of(key, spec)
    from synthdata.plan import derive_rows, total_count
    from synthdata.spec import spec_hash

    if index >= total_count(spec):
        raise LineageError(f"{key!r}: the plan of {spec.name!r} has only {total_count(spec)} samples")
    plan_row = _plan_row(root, key)
    derived = derive_rows(spec, index, index + 1).to_pylist()[0]
    shard = int(derived["shard"])
    stem = f"shard-{shard:06d}"
    raw_tar = root / "raw" / f"{stem}.tar"
    marker_file = root / "raw" / f"{stem}.done.json"
    marker = json.loads(marker_file.read_text()) if marker_file.is_file() else None
    meta_bytes = read_member(raw_tar, f"{key}.json") if marker and raw_tar.is_file() else None
    meta = json.loads(meta_bytes) if meta_bytes else {}
    png = read_member(raw_tar, f"{key}.png") if meta_bytes else None
    rows_file = root / "raw" / f"{stem}.parquet"
    recorded = None
    if rows_file.is_file():
        found = pq.read_table(rows_file, filters=[("key", "=", key)]).to_pylist()
        recorded = found[0] if found else None
    accepted, accepted_tar = _accepted_tar(root, stem, key)
    screening = (records.screening_results(root, key) or {}).get(key)
    run = records.read_run_record(root) or {}
    call = _call_of(root, spec, shard, key)
    worker = worker_record(root, shard) or {}
    members = lambda tar: sorted(n for n in records.tar_members(tar) if n.split(".", 1)[0] == key)
    return {
        "key": key,
        "dataset": {"dir": str(root.resolve()), "name": spec.name},
        "spec": {"path": str(root / "spec.yaml"), "spec_hash": spec_hash(spec),
                 "source": run.get("spec_path"), "git": run.get("git")},
        "plan": {"path": str(root / "plan.parquet"), "plan_hash": meta.get("plan_hash") or run.get("plan_hash"),
                 "row": plan_row, "row_matches_spec": plan_row == derived},
        "model": {"id": spec.generator.model, "revision": spec.generator.revision,
                  "fingerprint": (meta.get("model") or {}).get("fingerprint")
                  or (run.get("model") or {}).get("fingerprint")},
        "generation": {
            "seed": derived["seed"], "batch": derived["batch"], "batch_size": len(call),
            "call_keys": [r["key"] for r in call], "steps": derived["steps"],
            "guidance_scale": derived["guidance_scale"], "scheduler": spec.generator.scheduler,
            "height": spec.generator.height, "width": spec.generator.width,
            "dtype": meta.get("dtype", spec.generator.dtype),
            "threads_per_worker": worker.get("threads", (run.get("execution") or {}).get("threads_per_worker")),
            "device": worker.get("device"), "worker": worker.get("worker"),
            "engine": (run.get("execution") or {}).get("engine"),
            "prefect_flow_run_id": (run.get("prefect") or {}).get("flow_run_id"),
        },
        "shard": {
            "index": shard, "complete": marker is not None,
            "raw_tar": str(raw_tar) if raw_tar.is_file() else None,
            "raw_tar_sha256": (marker or {}).get("tar_sha256"),
            "raw_members": members(raw_tar) if meta_bytes else [],
            "accepted_tar": None if accepted_tar is None else str(root / accepted_tar),
            "accepted_members": members(root / accepted_tar) if accepted_tar else [],
        },
        "image": {
            "png_sha256": None if png is None else hashlib.sha256(png).hexdigest(),
            "recorded_sha256": None if recorded is None else recorded.get("png_sha256"),
            "matches_record": None if png is None or recorded is None
            else hashlib.sha256(png).hexdigest() == recorded.get("png_sha256"),
        },
        "screening": screening,
        "status": _status(marker, screening, accepted, accepted_tar),
    }


def _status(marker: dict | None, screening: dict | None, accepted: bool | None,
            accepted_tar: str | None) -> str:
    """One line: generated or not, screening decision, whether consumers see the sample."""
    if marker is None:
        return "not generated (its shard is incomplete)"
    if screening is None and accepted is None:
        return "generated (not screened)"
    decision = (screening or {}).get("decision") or "unscreened"
    where = "in accepted shards" if accepted_tar else "not in accepted shards"
    return f"{decision} ({where})"


def render_lineage(info: dict) -> Tree:
    """A readable rich tree of lineage() output."""
    tree = Tree(f"[bold]{info['key']}[/]  {info['status']}")
    spec = tree.add("[bold]spec[/]")
    spec.add(f"{info['spec']['path']}  spec_hash {info['spec']['spec_hash'][:16]}")
    if info["spec"].get("source"):
        git = info["spec"].get("git") or {}
        commit = f"  git {git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}" if git else ""
        spec.add(f"source {info['spec']['source']}{commit}")
    plan = tree.add("[bold]plan[/]")
    plan.add(f"{info['plan']['path']}  plan_hash {(info['plan']['plan_hash'] or '?')[:16]}"
             f"  row matches spec: {info['plan']['row_matches_spec']}")
    row = info["plan"]["row"] or {}
    for name in ("index", "label", "prompt", "negative_prompt", "vars"):
        plan.add(f"{name}: {row.get(name)}")
    model = tree.add("[bold]model[/]")
    model.add(f"{info['model']['id']} (revision {info['model']['revision']})")
    model.add(f"fingerprint {info['model']['fingerprint']}")
    gen = info["generation"]
    g = tree.add("[bold]generation[/]")
    g.add(f"seed {gen['seed']}  batch {gen['batch']}  pipeline call of {gen['batch_size']}: "
          f"{', '.join(gen['call_keys'])}")
    g.add(f"{gen['scheduler']} {gen['steps']} steps, guidance {gen['guidance_scale']}, "
          f"{gen['width']}x{gen['height']} {gen['dtype']}, device {gen['device']}, threads "
          f"{gen['threads_per_worker']}, worker {gen['worker']}, engine {gen['engine']}, "
          f"flow run {gen['prefect_flow_run_id']}")
    sh = info["shard"]
    s = tree.add(f"[bold]shard {sh['index']}[/]")
    s.add(f"raw {sh['raw_tar']} (sha256 {(sh['raw_tar_sha256'] or '?')[:16]}): {', '.join(sh['raw_members'])}")
    s.add(f"accepted {sh['accepted_tar'] or '-'}: {', '.join(sh['accepted_members']) or '-'}")
    img = info["image"]
    tree.add(f"[bold]image[/] png sha256 {img['png_sha256']}  matches record: {img['matches_record']}")
    scr = info["screening"]
    if scr is None:
        tree.add("[bold]screening[/] not run")
    else:
        sc = tree.add(f"[bold]screening[/] decision {scr.get('decision')}")
        sc.add(f"nearest real id {scr.get('nearest_real_id')}  score {scr.get('score')}")
        if scr.get("nearest_ids"):
            pairs = zip(scr["nearest_ids"], scr.get("similarities") or [])
            sc.add("top-k: " + ", ".join(f"{i} ({s:.4f})" for i, s in pairs))
    return tree


def print_lineage(info: dict, console: Console | None = None) -> None:
    """Print the lineage tree."""
    (console or Console()).print(render_lineage(info))


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

    from synthdata.generators.base import SampleRequest
    from synthdata.generators.diffusers_gen import DiffusersGenerator
    from synthdata.shards import encode_png

    start = time.perf_counter()
    root = Path(out_dir)
    spec = _spec(root)
    shard = _index_of(key, spec) // spec.shards.size
    stem = f"shard-{shard:06d}"
    raw_tar = root / "raw" / f"{stem}.tar"
    if not (root / "raw" / f"{stem}.done.json").is_file() or not raw_tar.is_file():
        raise LineageError(f"{key!r}: its shard {raw_tar} is not complete; nothing to compare with")
    stored = read_member(raw_tar, f"{key}.png")
    if stored is None:
        raise LineageError(f"{key!r} is not in {raw_tar}")
    recorded = pq.read_table(root / "raw" / f"{stem}.parquet", filters=[("key", "=", key)]).to_pylist()
    stored_ok = hashlib.sha256(stored).hexdigest() == recorded[0]["png_sha256"] if recorded else None
    run = records.read_run_record(root) or {}
    worker = worker_record(root, shard) or {}
    threads = threads or worker.get("threads") or (run.get("execution") or {}).get("threads_per_worker") \
        or spec.execution.threads_per_worker
    device = device or worker.get("device") or spec.generator.device
    call = _call_of(root, spec, shard, key)
    model_ok = None
    if check_model:
        from synthdata.fingerprint import model_fingerprint

        meta = json.loads(read_member(raw_tar, f"{key}.json") or b"{}")
        recorded_fp = (meta.get("model") or {}).get("fingerprint")
        model_ok = None if not recorded_fp else model_fingerprint(spec.generator).fingerprint == recorded_fp
    gen = generator or DiffusersGenerator(spec.generator, device=device)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        images = gen.generate([SampleRequest(key=r["key"], prompt=r["prompt"],
                                             negative_prompt=r["negative_prompt"], seed=r["seed"],
                                             steps=r["steps"], guidance_scale=r["guidance_scale"])
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
