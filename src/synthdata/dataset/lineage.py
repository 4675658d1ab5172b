"""Where one sample came from (`lineage`).

`lineage(DIR, KEY)` follows the whole chain of one sample: the resolved spec and its hash,
the plan row (checked against a fresh derivation from the spec), the model fingerprint, the
seed, plan batch and the pipeline call it was generated in, the raw and accepted tars with
their member names, and the screening result (nearest real id and similarity). It reads the
dataset folder alone: neither the model nor the real data need be on this machine.
Regenerating a sample is `synthdata.dataset.reproduce`.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.tree import Tree

from synthdata.dataset import records

from synthdata.dataset.run_record import read_run_record
from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.spec import Spec
from synthdata.plan.load import load_spec
from synthdata.folder.snapshot import open_snapshot
from synthdata.plan.rows import attempt_seed, replay_calls
from synthdata.plan.rows import derive_rows
from synthdata.spec import spec_hash


class LineageError(SynthdataError):
    """A key or dataset folder that lineage/reproduce cannot follow."""


def folder_spec(out_dir: str | Path, *, write: bool = False) -> Spec:
    """The dataset's recorded spec, read structurally: the model, adapters and reference data
    need not exist on this machine (auditing a copy). With `write`, the folder's format must be
    one this synthdata can add to (`synthdata screen`)."""
    folder = DatasetFolder(out_dir).require(write=write)
    if not folder.spec_file.is_file():
        raise LineageError(f"{folder.root} is not a synthdata dataset folder (no {folder.SPEC})")
    return load_spec(folder.spec_file, check_files=False)


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
    table = pq.read_table(DatasetFolder(out_dir).plan_file, filters=[("key", "=", key)])
    return table.to_pylist()[0] if table.num_rows else None


def _recorded_batch_sizes(out_dir: Path, shard: int) -> dict[str, int] | None:
    rows = DatasetFolder(out_dir).raw_rows(shard)
    if not rows.is_file():
        return None
    table = pq.read_table(rows, columns=["key", "batch_size"]).to_pydict()
    return dict(zip(table["key"], table["batch_size"]))


def _plan_rows(out_dir: Path, shard: int) -> list[dict]:
    """A shard's rows of the recorded plan (plan.parquet), in index order."""
    table = pq.read_table(DatasetFolder(out_dir).plan_file, filters=[("shard", "=", shard)])
    return table.sort_by("index").to_pylist()


# Plan columns that hold machine-local pseudonyms (cohort tables with patient ids): a plan made
# on another machine differs there by design, so they are left out of the row comparison.
PSEUDONYM_COLUMNS = ("source_row", "source_patient")


def _derived_row(spec: Spec, index: int) -> tuple[dict | None, str]:
    """The plan row derived afresh from the spec (None when its cohort table is not here)."""

    if spec.cohort is not None and not Path(spec.cohort.table).is_file():
        return None, f"cohort table {spec.cohort.table} is not on this machine; the row is read from plan.parquet"
    return derive_rows(spec, index, index + 1).to_pylist()[0], ""


def _same_row(a: dict | None, b: dict | None) -> bool | None:
    if a is None or b is None:
        return None
    drop = lambda r: {k: v for k, v in r.items() if k not in PSEUDONYM_COLUMNS}  # noqa: E731
    return drop(a) == drop(b)


def _recorded_row(out_dir: Path, shard: int, key: str) -> dict | None:
    rows = DatasetFolder(out_dir).raw_rows(shard)
    if not rows.is_file():
        return None
    found = pq.read_table(rows, filters=[("key", "=", key)]).to_pylist()
    return found[0] if found else None


def _call_of(out_dir: Path, spec: Spec, shard: int, key: str) -> list[dict]:
    """The plan rows the worker passed to the pipeline in the same call as `key`'s image.

    Attempt 0: the planned calls (`plan.plan_batches`), cut as recorded where the worker had to
    split a call after running out of GPU memory (`plan.replay_calls` with the recorded batch
    sizes). A later attempt (a regeneration after QC): the call recorded with the sample, at
    that attempt's seeds (`plan.attempt_seed`).
    """

    rows = _plan_rows(out_dir, shard)
    recorded = _recorded_row(out_dir, shard, key) or {}
    attempt = int(recorded.get("attempt") or 0)
    if attempt:
        by_key = {r["key"]: r for r in rows}
        call = [by_key[k] for k in json.loads(recorded["call_keys"])]
        return [{**r, "seed": int(attempt_seed(spec.seed, r["index"], attempt))} for r in call]
    sizes = _recorded_batch_sizes(out_dir, shard)
    try:
        calls = list(replay_calls(rows, sizes))
    except (KeyError, ValueError) as exc:
        raise LineageError(f"{key!r}: the recorded batch sizes of shard {shard} do not match its "
                           f"plan ({exc})") from None
    for call in calls:
        if any(r["key"] == key for r in call):
            return call
    raise LineageError(f"{key!r} is not in the plan of shard {shard}")


def _accepted_tar(folder: DatasetFolder, shard: int, key: str) -> tuple[bool | None, str | None]:
    """(accepted shards exist, the accepted tar holding key relative to the folder): the
    same-numbered tar first."""
    if not folder.shards_dir.is_dir():
        return None, None
    same = folder.accepted_tar(shard)
    if same.is_file() and f"{key}.png" in records.tar_members(same):
        return True, folder.relative(same)
    return True, (records.accepted_keys(folder) or {}).get(key)


def worker_record(out_dir: str | Path, shard: int) -> dict | None:
    """The DIR/workers/*.json record of the worker that ran `shard` (device, threads), if any."""
    found = None
    for path in sorted(DatasetFolder(out_dir).workers_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if shard in (record.get("shards") or []):
            found = record
    return found


def lineage(out_dir: str | Path, key: str) -> dict:
    """The whole chain of one sample, as JSON-able data (see module docstring), read from one
    pinned screening generation (`synthdata.folder.snapshot`)."""

    with open_snapshot(out_dir) as snap:
        return _lineage(snap, key)


def _lineage(folder: DatasetFolder, key: str) -> dict:
    root = folder.root
    spec = folder_spec(root)
    index = _index_of(key, spec)

    count = int(folder.plan_info()["count"])
    if index >= count:
        raise LineageError(f"{key!r}: the plan of {spec.name!r} has only {count} samples")
    plan_row = _plan_row(root, key)
    fresh, plan_note = _derived_row(spec, index)
    derived = fresh or plan_row
    shard = int(derived["shard"])
    raw_tar = folder.raw_tar(shard)
    state = folder.shard_state(shard)
    marker = state.marker if state.complete else None
    meta_bytes = read_member(raw_tar, f"{key}.json") if marker else None
    meta = json.loads(meta_bytes) if meta_bytes else {}
    png = read_member(raw_tar, f"{key}.png") if meta_bytes else None
    recorded = _recorded_row(root, shard, key)
    accepted, accepted_tar = _accepted_tar(folder, shard, key)
    screening = (records.screening_results(folder, key) or {}).get(key)
    run = read_run_record(root) or {}
    call = _call_of(root, spec, shard, key)
    call_keys = [r["key"] for r in call]
    worker = worker_record(root, shard) or {}
    members = lambda tar: sorted(n for n in records.tar_members(tar) if n.split(".", 1)[0] == key)
    return {
        "key": key,
        "dataset": {"dir": str(root.resolve()), "name": spec.name},
        "spec": {"path": str(folder.spec_file), "spec_hash": spec_hash(spec),
                 "recorded_spec_hash": folder.plan_info().get("spec_hash"),
                 "source": run.get("spec_path"), "git": run.get("git")},
        "plan": {"path": str(folder.plan_file), "plan_hash": meta.get("plan_hash") or run.get("plan_hash"),
                 "row": plan_row, "row_matches_spec": _same_row(plan_row, fresh), "note": plan_note},
        "model": {"id": spec.generator.model, "revision": (meta.get("model") or {}).get("revision",
                                                                                     spec.generator.revision),
                  "fingerprint": (meta.get("model") or {}).get("fingerprint")
                  or (run.get("model") or {}).get("fingerprint"),
                  "commit": (run.get("model") or {}).get("commit"),
                  "training": (run.get("model") or {}).get("training") or {}},
        "generation": {
            "seed": meta.get("seed", derived["seed"]), "planned_seed": derived["seed"],
            "attempt": meta.get("attempt", 0), "batch": derived["batch"], "batch_size": len(call),
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
            "state": state.reason or "complete",
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
        "qc": meta.get("qc"),
        "attempts": [*meta.get("attempts", []), *([{"attempt": meta.get("attempt", 0),
                                                    "seed": meta.get("seed"), "call": call_keys,
                                                    "reason": None}] if meta else [])],
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
    for role, chain in (info["model"].get("training") or {}).items():
        model.add(f"{role} trained by synthdata train ({chain.get('method')}): base "
                  f"{(chain.get('base_fingerprint') or '?')[:16]}, {chain.get('images')} images "
                  f"(data {(chain.get('data_fingerprint') or '?')[:16]}), spec {(chain.get('spec_hash') or '?')[:16]}")
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
    if info.get("qc") is not None or len(info.get("attempts") or []) > 1:
        qc = info.get("qc") or {}
        q = tree.add(f"[bold]QC[/] {'passed' if qc.get('passed') else 'FAILED: ' + str(qc.get('reason'))}")
        for a in info.get("attempts") or []:
            q.add(f"attempt {a['attempt']}: seed {a['seed']}, call of {len(a.get('call') or [])}"
                  + (f", failed: {a['reason']}" if a.get("reason") else " (this image)"))
    img = info["image"]
    tree.add(f"[bold]image[/] png sha256 {img['png_sha256']}  matches record: {img['matches_record']}")
    scr = info["screening"]
    if scr is None:
        tree.add("[bold]screening[/] not run")
    else:
        sc = tree.add(f"[bold]screening[/] decision {scr.get('decision')}")
        sc.add(f"nearest real id {scr.get('nearest_real_id')}  score {scr.get('score')}")
        if scr.get("nearest_real_ids"):
            pairs = zip(scr["nearest_real_ids"], scr.get("similarities") or [])
            sc.add("top-k: " + ", ".join(f"{i} ({s:.4f})" for i, s in pairs))
    return tree


def print_lineage(info: dict, console: Console | None = None) -> None:
    """Print the lineage tree."""
    (console or Console()).print(render_lineage(info))
