"""Overlap work on the CPU side of a run, each against its baseline in the same run.

1. Model preload: the same flow run in fresh processes, with the model loaded into the worker
   slots while Prefect's temporary server starts (what `synthdata run` does) and without (the
   flow loads it in the first shard task). Reported: end-to-end wall time and the flow's
   generate_s (run.json) for each, alternating the order.
2. Shard tail: writing a shard's tar and hashing it for the completion marker, hashed while
   writing (now) vs written then re-read (before).

    python benchmarks/bench_overlap.py [--model mid] [--repeats 2] [--samples 500] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import build_pipeline, emit

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import sys
from synthdata.cli import quiet_environment
quiet_environment()
from synthdata.generation import engines, worker
from synthdata.flow import synthdata_run
from synthdata.spec import with_overrides
from synthdata.plan.load import load_spec
spec_path, out, preload = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if preload:
    spec = with_overrides(load_spec(spec_path), out)
    worker.preload(spec, engines.resolve(spec.execution, spec.generator.device).workers)
synthdata_run(spec_path, out_dir=out)
"""


def _spec(folder: Path, model: Path, images: int) -> Path:
    data = yaml.safe_load((REPO / "specs" / "demo-tiny.yaml").read_text())
    data.update(name="overlap", count=images, shards={"size": images})
    data["generator"].update(model=str(model), steps=2, batch_size=4, height=64, width=64)
    path = folder / "overlap.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def preload_runs(model_size: str, repeats: int, images: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-overlap-"))
    model = build_pipeline(model_size, home / "models")
    spec = _spec(home, model, images)
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)
    runs: dict[str, list[dict]] = {"preload": [], "no_preload": []}
    order = ["no_preload", "preload"]
    for r in range(repeats):
        for variant in (order if r % 2 == 0 else order[::-1]):
            out = home / f"{variant}-{r}"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", DRIVER, str(spec), str(out),
                            "1" if variant == "preload" else "0"], cwd=REPO, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            timings = json.loads((out / "run.json").read_text())["timings"]
            runs[variant].append({"wall_s": round(time.perf_counter() - start, 2),
                                  "generate_s": round(timings["generate_s"], 2)})
    mean = {k: {m: round(float(np.mean([x[m] for x in v])), 2) for m in ("wall_s", "generate_s")}
            for k, v in runs.items()}
    return {"model": model_size, "images": images, "runs": runs, "mean": mean,
            "wall_saved_s": round(mean["no_preload"]["wall_s"] - mean["preload"]["wall_s"], 2)}


def tail(samples: int) -> dict:
    from synthdata.fsutil import sha256_file
    from synthdata.folder.shards import Sample, encode_png, write_tar

    rng = np.random.default_rng(0)
    png = encode_png(rng.integers(0, 256, (256, 256), dtype=np.uint8))
    batch = [Sample(f"t-{i:09d}", png, {"key": f"t-{i:09d}"}, 0, "p") for i in range(samples)]
    folder = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    out = {}
    for variant in ("write_then_reread", "hashed_while_writing", "write_then_reread", "hashed_while_writing"):
        start = time.perf_counter()
        written = write_tar(folder / f"{variant}.tar", batch)
        digest = sha256_file(folder / f"{variant}.tar") if variant == "write_then_reread" else written.sha256
        out.setdefault(variant, []).append(round(time.perf_counter() - start, 4))
        assert digest == written.sha256
    size = (folder / "hashed_while_writing.tar").stat().st_size
    return {"samples": samples, "tar_mib": round(size / 2**20, 1), "seconds": out,
            "best_ratio": round(min(out["hashed_while_writing"]) / min(out["write_then_reread"]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mid", choices=("tiny", "mid"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    emit("overlap", {"preload": preload_runs(args.model, args.repeats, args.images),
                     "tail": tail(args.samples)}, args.record)


if __name__ == "__main__":
    main()
