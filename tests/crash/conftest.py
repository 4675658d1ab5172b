"""Fixtures of the crash-point suite: a tiny spec screened against a real reference, every state
an uninterrupted run passes through (built once per session), and the forkserver crashes run in.

Reference: two real DICOMs from pydicom's test files plus two of the tiny model's own samples
planted as "real" images, so screening rejects something. The tiny model (`builtin:tiny`,
random weights) draws noise; 6 samples of 32x32 px, 1 step, 2 shards.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import crash_ops

TINY = {
    "name": "crashy", "seed": 7, "count": 6,
    "labels": {"normal": {"weight": 0.5, "prompts": ["{view} chest x-ray, no findings"]},
               "effusion": {"weight": 0.5, "prompts": ["{view} chest x-ray with effusion"]}},
    "vars": {"view": ["PA", "AP"]},
    "generator": {"model": "builtin:tiny", "scheduler": "ddim", "steps": 1, "guidance_scale": 2.0,
                  "height": 32, "width": 32, "dtype": "float32", "batch_size": 3},
    "shards": {"size": 3},
}
PLANTED = 2


@dataclass(frozen=True)
class World:
    """The spec and the folders an uninterrupted run leaves after each step (read-only)."""

    spec: Path
    planned: Path        # plan
    raw: Path            # + every shard generated
    screened_a: Path     # + first screening (spec threshold)
    reported_a: Path     # + report
    screened_b: Path     # + re-screening at threshold_b (--no-report)
    reported_b: Path     # + report
    threshold_b: str

    def copy(self, state: Path, parent: Path) -> Path:
        """A private copy of one state to crash in, under `parent`, with the same folder name
        (the dataset card names its folder)."""
        return Path(shutil.copytree(state, parent / state.name,
                                    ignore=shutil.ignore_patterns(".synthdata.lock")))


def _plant(raw: Path, reference: Path) -> None:
    with tarfile.open(sorted((raw / "raw").glob("shard-*.tar"))[0]) as tar:
        pngs = [m for m in tar if m.name.endswith(".png")][:PLANTED]
        for member in pngs:
            (reference / f"planted-{member.name}").write_bytes(tar.extractfile(member).read())


def _between(screened: Path) -> str:
    """A threshold that rejects some, not all, of what the spec's threshold accepted."""
    rows = pq.read_table(screened / "screening.parquet", columns=["decision", "similarity"]).to_pylist()
    scores = sorted(r["similarity"] for r in rows if r["decision"] == "accept")
    assert len(scores) >= 2 and scores[0] < scores[-1], scores
    return f"{(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2:.6f}"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    import pydicom

    base = tmp_path_factory.mktemp("crash")
    reference = base / "real"
    reference.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / name, reference / name)
    spec = base / "crashy.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "memorization": {
        "reference": [str(reference)], "matchers": "pixel", "retrievers": [], "threshold": 0.9}}))

    def step(src: Path | None, name: str, op, *args) -> Path:
        out = base / name / "ds"  # every state's folder has one name, as the card shows it
        out.parent.mkdir()
        if src is not None:
            shutil.copytree(src, out, ignore=shutil.ignore_patterns(".synthdata.lock"))
        op(str(out), *args)
        return out

    planned = step(None, "planned", crash_ops.plan, str(spec))
    raw = step(planned, "raw", crash_ops.generate, str(spec))
    _plant(raw, reference)
    screened_a = step(raw, "screened_a", crash_ops.screen)
    reported_a = step(screened_a, "reported_a", crash_ops.report)
    threshold_b = _between(screened_a)
    screened_b = step(reported_a, "screened_b", crash_ops.screen, threshold_b)
    reported_b = step(screened_b, "reported_b", crash_ops.report)
    return World(spec, planned, raw, screened_a, reported_a, screened_b, reported_b, threshold_b)


@pytest.fixture(scope="session")
def crash():
    """crash(point, op, *args) -> exit status of `op` run in a forked child dying at `point`."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(crash_ops.HEAVY))  # by name: the forkserver finds them

    def run(point: str, op: str, *args) -> int | None:
        process = ctx.Process(target=crash_ops.child, args=(point, op, *map(str, args)))
        process.start()
        process.join(300)
        return process.exitcode

    return run
