"""Screening reports its work: a line per shard, per-phase timings in run.json, and none of it
in the byte-pinned outputs (tars, manifest, screening table)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import yaml

from synthdata.phantoms import write_phantoms
from synthdata.progress import phase_timing, screened_line
from synthdata.screening.pipeline import screen_dataset
from synthdata.spec.models import Memorization

SPEC = Path(__file__).resolve().parents[2] / "specs" / "scale-procedural.yaml"
PHASES = {"reference_ingestion", "calibration", "screening", "screening_records", "records"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _memorization(reference: Path) -> dict:
    return {"reference": [str(reference)], "matchers": "pixel", "retrievers": ["pixel"],
            "threshold": 0.992}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_phase_timing_and_shard_line():
    assert phase_timing(2.0, 10) == {"seconds": 2.0, "items": 10, "items_per_s": 5.0}
    assert phase_timing(0.0, 0)["items_per_s"] is None
    line = screened_line({"shard": 3, "samples": 10, "accepted": 7, "reused": False,
                          "decisions": {"accept": 7, "review": 3}, "seconds": 1.234})
    assert line == "shard 3: screened 10 samples (7 accept, 3 review), 7 published, in 1.23 s"


def test_flow_records_phases_in_run_json_and_nowhere_else(prefect_server, tmp_path):
    from synthdata.flow import synthdata_run

    reference = tmp_path / "phantoms"
    write_phantoms(reference, count=30, seed=11, size=64)
    data = yaml.safe_load(SPEC.read_text())
    data.update(count=24, shards={"size": 8}, memorization=_memorization(reference))
    data["generator"].update(height=64, width=64, batch_size=8)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        synthdata_run(str(spec), out_dir=str(out), workers=1)

    for out in outs:
        timings = json.loads((out / "run.json").read_text())["timings"]
        assert set(timings["phases"]) == PHASES
        for name, phase in timings["phases"].items():
            assert set(phase) == {"seconds", "items", "items_per_s"} and phase["seconds"] >= 0, name
        assert timings["phases"]["reference_ingestion"]["items"] == 30
        assert timings["phases"]["screening"]["items"] == 24
        assert timings["phases"]["records"]["items"] == 24
    # what is byte-pinned is the same in both runs although their timings differ
    a, b = outs
    pinned = ["manifest.parquet", "screening.parquet", "screening_report.json", "stats.json",
              *(f"{d}/{p.name}" for d in ("raw", "shards") for p in sorted((a / d).glob("*.tar")))]
    assert len(pinned) > 6
    assert all(_sha(a / n) == _sha(b / n) for n in pinned), [n for n in pinned if _sha(a / n) != _sha(b / n)]
    for name in ("screening_report.json", "stats.json"):
        text = (a / name).read_text()
        assert "items_per_s" not in text and "reference_ingestion" not in text

    # screen_dataset (the `synthdata screen` path) logs one line per shard, with its counts
    # (a handler of our own: Prefect's logging setup replaces the root handlers caplog uses)
    logger, seen = logging.getLogger("synthdata.screening.pipeline"), _Lines()
    logger.addHandler(seen)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not `.level =`: it clears the enabled-for cache
    try:
        summary = screen_dataset(a, Memorization(**_memorization(reference)))
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    lines = seen.lines
    assert [line.split(":")[0] for line in lines] == ["shard 0", "shard 1", "shard 2"]
    assert all("screened 8 samples (" in line and " published, in " in line for line in lines)
    assert set(summary.phases) == PHASES - {"records"}
    assert _sha(a / "manifest.parquet") == _sha(b / "manifest.parquet")
