"""Start-up: time from `synthdata run specs/demo-tiny.yaml` to the first image and to the end, cold and warm.

Cold: a fresh Prefect home (new SQLite database) and a fresh model cache (tiny model built).
Warm: the same Prefect home and cache again, new output folder.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit

REPO = Path(__file__).resolve().parents[1]


def one_run(env: dict, out: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synthdata.cli", "run", "specs/demo-tiny.yaml", "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    while proc.poll() is None:
        if first is None and out.exists() and any(p.stat().st_size > 0 for p in (out / "raw").glob(".shard-*tmp*")
                                                  if p.exists()) if (out / "raw").exists() else False:
            first = time.perf_counter() - t
        time.sleep(0.02)
    end = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.read().decode()[-2000:])
    return {"first_image_s": first, "end_s": end}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "SYNTHDATA_CACHE": str(home / "cache"),
           "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)
    result = {"cold": one_run(env, home / "cold"), "warm": one_run(env, home / "warm")}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import synthdata.flow"], cwd=REPO, env=env, check=True)
    result["import_synthdata_flow_s"] = time.perf_counter() - t
    emit("startup", result, args.record)


if __name__ == "__main__":
    main()
