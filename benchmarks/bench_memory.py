"""Memory: peak RSS when planning 10^6 samples, and of generation runs of 4 and of 16 shards.

Each measurement runs in a fresh process; peak RSS is sampled with psutil (main process only,
not the temporary Prefect server).

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import emit

REPO = Path(__file__).resolve().parents[1]

PLAN = """
import time, sys
from synthdata.plan.load import load_spec_text
from synthdata.plan.rows import write_plan
spec = load_spec_text(open(sys.argv[1]).read())
t = time.perf_counter()
h = write_plan(spec, sys.argv[2])
print(time.perf_counter() - t)
"""

SPEC = """
name: mem
seed: 3
count: {count}
labels:
  normal: {{weight: 0.6, prompts: ["{{view}} chest x-ray of a {{age}} year old {{sex}}"]}}
  pneumonia: {{weight: 0.4, prompts: ["{{view}} chest x-ray, {{age}} year old {{sex}}, {{side}} pneumonia"],
              vars: {{side: [left, right]}}}}
vars: {{view: {{PA: 0.7, AP: 0.3}}, sex: [female, male], age: {{min: 20, max: 90}}}}
generator: {{model: builtin:tiny, steps: 2, height: 64, width: 64, batch_size: 4, dtype: float32}}
shards: {{size: {shard}}}
execution: {{workers: 1, threads_per_worker: 2}}
"""


def peak_rss(cmd: list[str], env: dict) -> tuple[float, float, str]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(err.decode()[-3000:])
    return peak / 2**20, time.perf_counter() - t, out.decode().strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--plan-count", type=int, default=1_000_000)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(work / "prefect")}
    result = {}
    for count in (10_000, args.plan_count):
        spec = work / f"plan{count}.yaml"
        spec.write_text(SPEC.format(count=count, shard=1000))
        rss, wall, inner = peak_rss([sys.executable, "-c", PLAN, str(spec), str(work / f"plan{count}.parquet")], env)
        result[f"plan_{count}"] = {"peak_rss_mib": rss, "plan_seconds": float(inner), "process_seconds": wall,
                                   "plan_file_mib": (work / f"plan{count}.parquet").stat().st_size / 2**20}
    for shards in (4, 16):
        spec = work / f"gen{shards}.yaml"
        spec.write_text(SPEC.format(count=shards * 8, shard=8))
        rss, wall, _ = peak_rss([sys.executable, "-m", "synthdata.cli", "run", str(spec), "--out",
                                 str(work / f"gen{shards}")], env)
        result[f"generate_{shards}_shards"] = {"peak_rss_mib": rss, "seconds": wall, "images": shards * 8}
    emit("memory", result, args.record)


if __name__ == "__main__":
    main()
