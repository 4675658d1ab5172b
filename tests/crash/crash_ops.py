"""The crash-point suite's commands, what it compares, and the reader that runs during a crash.

Each command is what the CLI (or, for a shard, the flow's task) runs: `plan`, `generate` one
shard, `screen` (with `--no-report`), `report`, `reset`. `child` runs one of them in a process
that dies at a named fault point (`SYNTHDATA_FAULT=<point>:kill`, `os._exit(137)`: no cleanup,
like `kill -9`). Children are forked from a forkserver that imported all of this once (heavy
imports, diffusers among them, happen in its main thread), so a crash costs a fork, not an
interpreter start.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from synthdata.generation import worker  # noqa: F401  (diffusers imported in the main thread, before forks)
from synthdata.cli import app
from synthdata.folder import DatasetFolder
from synthdata.folder.snapshot import open_snapshot

# What the children need, imported once by the forkserver (Python 3.11's forkserver does not
# take the test's sys.path, so this module itself is imported by each child: it is light).
HEAVY = ("synthdata.generation.worker", "synthdata.cli", "synthdata.screening.pipeline", "synthdata.dataset.report",
         "synthdata.versioning", "synthdata.folder.snapshot", "typer.testing", "pyarrow.parquet")
# Not compared: lock files, wall-clock records (run.json, workers/), readers' pins.
UNCOMPARED = (".synthdata.lock", ".screening.lock", "run.json", "workers/", ".pins/")
# Files that name the folder they are in: compared with that path replaced.
NAMES_FOLDER = ("spec.yaml", "README.md")


def _cli(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"synthdata {' '.join(args)}: exit {result.exit_code}\n{result.output}")


def plan(out: str, spec: str) -> None:
    """`synthdata plan SPEC --out OUT`."""
    _cli(["plan", spec, "--out", out])


def generate(out: str, spec: str) -> None:
    """What a `synthdata generate` does for the shards still pending: lock (and recover),
    plan, then each pending shard's task body (`worker.generate_shard`), in shard order."""
    from synthdata.generation.fingerprint import model_fingerprint
    from synthdata.flow import pending_shards
    from synthdata.dataset.prepare import acquire_lock, prepare
    from synthdata.spec import with_overrides
    from synthdata.plan.load import load_spec
    from synthdata.generation.worker import JobInfo, generate_shard, job_as_dict

    loaded = with_overrides(load_spec(spec), out)
    lock = acquire_lock(out)
    try:
        prepared = prepare(out, loaded)
        job = job_as_dict(JobInfo(prepared.spec_hash, prepared.plan_hash,
                                  model_fingerprint(loaded.generator).fingerprint))
        for shard in pending_shards(DatasetFolder(out), prepared.shard_count, prepared.plan_hash):
            generate_shard(loaded.model_dump(mode="json"), out, shard, job, threads=1)
    finally:
        lock.release()


def screen(out: str, threshold: str | None = None) -> None:
    """`synthdata screen OUT [--threshold X] --no-report`."""
    _cli(["screen", out, "--no-report", *([] if threshold is None else ["--threshold", threshold])])


def report(out: str) -> None:
    """`synthdata report OUT`."""
    _cli(["report", out])


def reset(out: str, name: str) -> None:
    """`python -m synthdata.versioning reset OUT NAME`."""
    from synthdata.versioning.__main__ import main

    if main(["reset", out, name]) != 0:
        raise RuntimeError(f"reset {out} failed")


OPS = {"plan": plan, "generate": generate, "screen": screen, "report": report, "reset": reset}


def child(point: str, op: str, *args: str) -> None:
    """Run one command in this (forked) process, dying at `point`."""
    os.environ["SYNTHDATA_FAULT"] = f"{point}:kill"
    OPS[op](*args)


def contents(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under a dataset folder but the uncompared ones;
    files that name the folder are hashed with its path replaced by DIR."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith(UNCOMPARED):
            continue
        data = path.read_bytes()
        if rel in NAMES_FOLDER:
            data = data.replace(str(root.resolve()).encode(), b"DIR").replace(str(root).encode(), b"DIR")
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def tar_keys(paths: list[Path]) -> set[str]:
    """Sample keys of the tars, every member read to its end."""
    keys = set()
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                tar.extractfile(member).read()
                keys.add(member.name.split(".", 1)[0])
    return keys


def accepted_in_table(table: Path) -> set[str]:
    """Keys a screening.parquet publishes: `accept`, or `not-screened` when it ran without a
    real reference (never a reject or a review)."""
    rows = pq.read_table(table, columns=["key", "decision"]).to_pylist()
    return {r["key"] for r in rows if r["decision"] in ("accept", "not-screened")}


def unaccepted_published(root: Path) -> list[str]:
    """Samples in an accepted tar (the view or any generation) that its own screening does not
    accept: what must never be published."""
    folder = DatasetFolder(root)
    found = []
    places = [p for p in sorted(folder.generations_dir.glob("*")) if p.is_dir()] \
        if folder.generations_dir.is_dir() else []
    view = folder.screening_generation()
    for place in places:
        accepted = accepted_in_table(place / folder.SCREENING)
        extra = tar_keys(sorted((place / folder.SHARDS).glob("*.tar"))) - accepted
        found += [f"{place.name}: {k}" for k in sorted(extra)]
    if view is not None and view.get("generation"):
        table = folder.generation_dir(view["generation"]) / folder.SCREENING
        extra = tar_keys(folder.accepted_tars()) - accepted_in_table(table)
        found += [f"view: {k}" for k in sorted(extra)]
    return found


class Reader(threading.Thread):
    """Reads the folder through the snapshot reader, over and over, while a crash and a rerun
    happen: every snapshot must be one whole committed screening (its tars hold exactly what
    its table accepts), and a published DIR/shards must never go missing."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.stop = root, threading.Event()
        self.seen: list[tuple[str | None, frozenset]] = []
        self.problems: list[str] = []
        self.had_view = (root / DatasetFolder.SHARDS).is_dir()

    def read_once(self) -> None:
        """One snapshot, read to the end."""
        with open_snapshot(self.root) as snap:
            keys = tar_keys(snap.accepted_tars())
            accepts = accepted_in_table(snap.screening_file) if snap.screened else set()
        if keys != accepts:
            self.problems.append(f"generation {snap.generation}: tars hold {len(keys)} samples, "
                                 f"its table accepts {len(accepts)}")
        self.seen.append((snap.generation, frozenset(keys)))

    def run(self) -> None:
        while not self.stop.wait(0.02):  # leave the CPU to the crash and the rerun
            if self.had_view and not (self.root / DatasetFolder.SHARDS).is_dir():
                self.problems.append("DIR/shards missing")
            try:
                self.read_once()
            except (OSError, tarfile.TarError, ValueError) as exc:
                self.problems.append(f"{type(exc).__name__}: {exc}")

    def finish(self) -> list[tuple[str | None, frozenset]]:
        """Stop reading; return what was seen."""
        self.stop.set()
        self.join(60)
        self.read_once()
        return self.seen


def screened_generation(root: Path) -> str:
    """The generation DIR/shards publishes."""
    return json.loads((root / "shards" / ".screening.json").read_text())["generation"]
