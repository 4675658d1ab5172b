"""kill -9 at random moments across `synthdata run`, then run again: is every resumed folder
byte-identical to an uninterrupted run's, and does `synthdata verify` pass?

    python benchmarks/bench_crash.py [--moments 20] [--seed 0] [--record]

The spec: 96 images of three labels on builtin:tiny (32x32 px, 2 steps, batches of 8, shards of
32), screened by the pixel matcher at threshold 0.9 against a real reference: DICOMs from
pydicom's test files (and pydicom-data's CR radiograph when installed) plus 3 of the run's own
samples planted as "real", so screening rejects something. One `prefect server` serves every
run. An uninterrupted run gives the baseline and, watching its folder, how long each step took
(plan, generation, screening, report). The moments are random and an equal share per step: a
trial starts `synthdata run` on a fresh folder, waits until the folder shows its step has begun
(so a busy machine does not shift the moment into another step), then a uniformly drawn part
(up to 0.8) of that step's baseline duration, and kills the process group with SIGKILL; a run
that ends before its moment is no kill, and the trial is drawn again (up to 3 times, on a fresh
folder). It notes the step the folder shows, runs `synthdata run` again to the end, compares
every file with the baseline (raw
and accepted tars, generations, tables, manifest, screening table, stats, card, contact sheets;
not run.json and workers/, which hold timings) and runs `synthdata verify`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from _common import emit

REPO = Path(__file__).resolve().parents[1]
STEPS = ("plan", "generation", "screening", "report")
FINISHED = "finished before the kill"
JOURNAL = (".commit.json", ".staging", ".trash", ".screening")  # gone once a change is finished
UNCOMPARED = (".synthdata.lock", ".screening.lock", "run.json", "workers/", ".pins/")
SPEC = {
    "name": "crash96", "seed": 11, "count": 96,
    "labels": {"normal": {"weight": 0.5, "prompts": ["{view} chest x-ray of a {age} year old, no findings"]},
               "effusion": {"weight": 0.3, "prompts": ["{view} chest x-ray with a {side} effusion"],
                            "vars": {"side": ["left", "right"]}},
               "nodule": {"weight": 0.2, "prompts": ["{view} chest x-ray with a small nodule"]}},
    "vars": {"view": ["PA", "AP"], "age": {"min": 20, "max": 90}},
    "generator": {"model": "builtin:tiny", "scheduler": "ddim", "steps": 2, "guidance_scale": 3.0,
                  "height": 32, "width": 32, "dtype": "float32", "batch_size": 8},
    "shards": {"size": 32},
    "execution": {"workers": 1, "threads_per_worker": 2},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """A background Prefect server every run reports to (start-up once, not per run)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=(home / "server.log").open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return server, url
        except OSError:
            time.sleep(1)
    raise SystemExit(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")


def reference_folder(home: Path) -> Path:
    """Real DICOMs: pydicom's test files (and pydicom-data's CR radiograph if installed)."""
    from pydicom.data import get_testdata_file

    ref = home / "real"
    ref.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm"):
        try:
            found = get_testdata_file(name)
        except (OSError, ValueError):
            found = None
        if found:
            shutil.copy(found, ref / name)
    return ref


def plant(raw_root: Path, ref: Path, count: int = 3) -> list[str]:
    """Copy `count` generated PNGs into the reference (screening must reject them)."""
    planted = []
    with tarfile.open(sorted((raw_root / "raw").glob("shard-*.tar"))[0]) as tar:
        for member in [m for m in tar if m.name.endswith(".png")][:count]:
            (ref / f"planted-{member.name}").write_bytes(tar.extractfile(member).read())
            planted.append(member.name.split(".")[0])
    return planted


def run_cmd(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "synthdata.cli", "run", str(spec), "--out", str(out)]


def step_of(root: Path, shards: int) -> str:
    """Which step of `synthdata run` a folder shows it was in."""
    commit = root / ".commit.json"
    if commit.is_file():
        op = json.loads(commit.read_text())["op"]
        return {"plan": "plan", "screening": "screening", "report": "report"}.get(op, op)
    if not (root / "plan.json").is_file():
        return "plan"
    if len(list((root / "raw").glob("*.done.json"))) < shards:
        return "generation"
    if not (root / "shards" / ".screening.json").is_file():
        return "screening"
    return "report"


def contents(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every compared file (paths of the folder itself replaced)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(UNCOMPARED):
            data = path.read_bytes()
            if rel in ("spec.yaml", "README.md"):
                data = data.replace(str(root).encode(), b"DIR")
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def baseline_run(spec: Path, out: Path, env: dict, shards: int) -> tuple[dict, float]:
    """The uninterrupted run, watched: when each step ended (s from the start)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(run_cmd(spec, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ends: dict[str, float] = {}
    seen = "plan"
    while proc.poll() is None:
        step = _step_now(out, shards)
        if step != seen:
            for done in STEPS[STEPS.index(seen):STEPS.index(step)]:
                ends.setdefault(done, time.perf_counter() - t0)
            seen = step
        time.sleep(0.02)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the baseline run failed: {proc.stderr.read()[-3000:]}")
    for step in STEPS:
        ends.setdefault(step, total)
    return ends, total


def _step_now(out: Path, shards: int) -> str:
    try:
        return step_of(out, shards) if out.exists() else "plan"
    except (OSError, ValueError):  # a file caught mid-rename: look again
        return "plan"


def trial(spec: Path, out: Path, env: dict, window: str, delay: float, shards: int,
          expected: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(run_cmd(spec, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and STEPS.index(_step_now(out, shards)) < STEPS.index(window):
        time.sleep(0.01)
    deadline = time.perf_counter() + delay
    while time.perf_counter() < deadline and proc.poll() is None:
        time.sleep(0.01)
    moment = time.perf_counter() - t0
    finished_first = proc.poll() is not None
    if not finished_first:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if finished_first:
        step = FINISHED
    else:
        step = _step_now(out, shards)
    t = time.perf_counter()
    rerun = subprocess.run(run_cmd(spec, out), cwd=REPO, env=env, capture_output=True, text=True, check=False)
    rerun_s = time.perf_counter() - t
    got = contents(out) if rerun.returncode == 0 else {}
    differ = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
    verify = subprocess.run([sys.executable, "-m", "synthdata.cli", "verify", str(out)], cwd=REPO,
                            env=env, capture_output=True, text=True, check=False)
    leftovers = sorted(p.name for p in out.iterdir() if p.name in JOURNAL)
    return {"delay_s": round(delay, 2), "moment_s": round(moment, 2), "step_at_kill": step, "rerun_exit": rerun.returncode,
            "rerun_s": round(rerun_s, 1), "identical": rerun.returncode == 0 and not differ,
            "differing": differ[:8], "verify_ok": verify.returncode == 0, "leftovers": leftovers,
            **({"rerun_error": rerun.stderr[-1500:]} if rerun.returncode else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moments", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "SYNTHDATA_CACHE": str(home / "cache"),
           "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}
    env.pop("SYNTHDATA_FAULT", None)
    server, url = start_server(home, env)
    env["PREFECT_API_URL"] = url
    try:
        ref = reference_folder(home)
        spec = home / "crash96.yaml"
        spec.write_text(yaml.safe_dump({**SPEC, "memorization": {
            "reference": [str(ref)], "matchers": "pixel", "retrievers": [], "threshold": 0.9}}))
        shards = -(-SPEC["count"] // SPEC["shards"]["size"])
        subprocess.run([sys.executable, "-m", "synthdata.cli", "generate", str(spec), "--out",
                        str(home / "scratch")], cwd=REPO, env=env, check=True, capture_output=True)
        planted = plant(home / "scratch", ref)
        # every folder is called `ds` (in its own parent): the dataset card names its folder
        ends, total = baseline_run(spec, home / "baseline" / "ds", env, shards)
        expected = contents(home / "baseline" / "ds")
        durations, start = {}, 0.0
        for step in STEPS:
            durations[step] = max(ends[step] - start, 0.05)
            start = ends[step]
        rng = random.Random(args.seed)
        trials = []
        for i in range(args.moments):
            window = STEPS[i % 4]
            for attempt in range(3):
                delay = rng.uniform(0, 0.8) * durations[window]
                result = trial(spec, home / f"trial-{i:02d}-{attempt}" / "ds", env, window, delay,
                               shards, expected)
                if result["step_at_kill"] != FINISHED:
                    break
            trials.append({"window": window, "draws": attempt + 1, **result})
            print(json.dumps(trials[-1]), file=sys.stderr, flush=True)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    baseline_stats = json.loads((home / "baseline" / "ds" / "stats.json").read_text())
    summary = {
        "spec": {"images": SPEC["count"], "shards": shards, "size_px": 32, "steps": 2,
                 "reference": sorted(p.name for p in ref.iterdir()), "planted": planted},
        "baseline": {"total_s": round(total, 1), "step_ends_s": {k: round(v, 1) for k, v in ends.items()},
                     "decisions": baseline_stats.get("decisions")},
        "moments": len(trials),
        "killed_in": {s: sum(t["step_at_kill"] == s for t in trials)
                      for s in (*STEPS, FINISHED)},
        "identical": sum(t["identical"] for t in trials),
        "verify_ok": sum(t["verify_ok"] for t in trials),
        "leftovers": sum(bool(t["leftovers"]) for t in trials),
        "trials": trials,
    }
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    emit("crash", summary, args.record)


if __name__ == "__main__":
    main()
