"""Scale: per-stage seconds per image and peak RSS of `synthdata run` at growing n, beside a raw
baseline of the same screening work.

For each n (1,000 and 10,000; 100,000 with --large) a fresh process runs the real Prefect flow
on `specs/scale-procedural.yaml` (builtin:procedural, 64 px, shards of 1,000) with count n,
screened with `retrievers: [pixel]` and the default `aligned` verification against a phantom
reference (`synthdata phantoms`, 2,000 images at 128 px by default), in a fresh
$SYNTHDATA_CACHE (the reference and calibration are built cold every time). Per stage it
reports seconds and seconds per image from run.json (`timings` and `timings.phases`), the
process's peak RSS (the kernel's high-water mark, ru_maxrss; not the temporary Prefect
server), disk used by raw/ and shards/ (hard-linked files counted once), and then a raw
baseline in the same process: decode the raw PNGs, embed them with the `pixel` embedder,
embed the reference the same way, and one FAISS IndexFlatIP search (k as the spec's).
Growth per stage between consecutive n: the exponent b of seconds ~ n^b (1 = linear, flat
cost per image).

    nice -n 10 python benchmarks/bench_scale.py [--counts 1000,10000] [--large] [--record]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "scale-procedural.yaml"
RUN_STAGES = ("plan_s", "generate_s", "screen_s", "record_s")


def _disk(folder: Path) -> dict:
    """Bytes of the tars under folder, and of their distinct inodes (hard links once)."""
    tars = sorted(folder.glob("*.tar")) if folder.is_dir() else []
    inodes = {p.stat().st_ino: p.stat().st_size for p in tars}
    return {"tars": len(tars), "bytes": sum(p.stat().st_size for p in tars),
            "distinct_bytes": sum(inodes.values())}


def _baseline(out: Path, reference: Path, k: int) -> dict:
    """Raw pixel embedding + raw FAISS search of the same synthetic images."""
    import faiss

    from synthdata.screening import shardio
    from synthdata.screening.embedder_factory import get_embedder
    from synthdata.screening.reference import iter_reference

    embedder = get_embedder("pixel")
    t = time.perf_counter()
    images = []
    for tar in sorted((out / "raw").glob("shard-*.tar")):
        images += shardio.shard_images(shardio.read_members(tar))[1]
    decode = time.perf_counter() - t
    t = time.perf_counter()
    query = embedder.embed(images)
    embed = time.perf_counter() - t
    t = time.perf_counter()
    ref = embedder.embed([im.pixels for im in iter_reference([str(reference)])])
    ref_embed = time.perf_counter() - t
    t = time.perf_counter()
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    index.search(query, k)
    search = time.perf_counter() - t
    n = len(images)
    return {"images": n, "decode_s": decode, "embed_s": embed, "search_s": search,
            "reference_embed_s": ref_embed, "reference_images": len(ref),
            "per_image_s": (decode + embed + search) / n,
            "per_image_without_decode_s": (embed + search) / n}


def one(n: int, work: Path, reference: Path, threshold: float) -> dict:
    """Run the flow at n in this process (called as a child); what it measured."""
    os.environ["SYNTHDATA_CACHE"] = str(work / f"cache-{n}")
    from synthdata.cli import quiet_environment

    quiet_environment()
    import yaml

    from synthdata.flow import synthdata_run

    data = yaml.safe_load(SPEC.read_text())
    data.update(count=n, memorization={"reference": [str(reference)], "retrievers": ["pixel"],
                                       "threshold": threshold})
    spec = work / f"scale-{n}.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    out = work / f"run-{n}"
    t = time.perf_counter()
    result = synthdata_run(str(spec), out_dir=str(out))
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    run = json.loads((out / "run.json").read_text())
    timings = run["timings"]
    stages = {s.removesuffix("_s"): {"seconds": timings[s], "per_image_s": timings[s] / n}
              for s in RUN_STAGES if s in timings}
    stages["outside_stages"] = {"seconds": wall - sum(timings.get(s, 0) for s in RUN_STAGES)}
    stages["outside_stages"]["per_image_s"] = stages["outside_stages"]["seconds"] / n
    phases = {name: {**p, "per_item_s": p["seconds"] / p["items"] if p["items"] else None}
              for name, p in timings.get("phases", {}).items()}
    base = _baseline(out, reference, data.get("memorization", {}).get("k", 5))
    screening = phases.get("screening", {}).get("per_item_s")
    return {"n": n, "wall_s": wall, "peak_rss_mib": round(peak, 1), "decisions": result["decisions"],
            "stages": stages, "phases": phases, "raw_baseline": base,
            "screening_over_raw": screening / base["per_image_s"] if screening else None,
            "execution": run.get("execution"),
            "disk": {"raw": _disk(out / "raw"), "shards": _disk(out / "shards"),
                     "raw_and_shards_distinct_bytes": _distinct(out)}}


def _distinct(out: Path) -> int:
    tars = [p for d in ("raw", "shards") for p in (out / d).glob("*.tar")]
    return sum({p.stat().st_ino: p.stat().st_size for p in tars}.values())


def growth(runs: list[dict]) -> dict:
    """Exponent b of seconds ~ n^b per stage and phase between consecutive runs."""
    out = {}
    for a, b in zip(runs, runs[1:]):
        ratio = math.log(b["n"] / a["n"])
        pairs = {**{f"stage.{k}": (v["seconds"], b["stages"].get(k, {}).get("seconds"))
                    for k, v in a["stages"].items()},
                 **{f"phase.{k}": (v["seconds"], b["phases"].get(k, {}).get("seconds"))
                    for k, v in a["phases"].items()},
                 "peak_rss": (a["peak_rss_mib"], b["peak_rss_mib"])}
        out[f"{a['n']}->{b['n']}"] = {k: round(math.log(y / x) / ratio, 3)
                                      for k, (x, y) in pairs.items() if x and y and x > 0 and y > 0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--counts", default="1000,10000", help="comma-separated sample counts")
    ap.add_argument("--large", action="store_true", help="also run 100,000 samples")
    ap.add_argument("--reference-count", type=int, default=2000)
    ap.add_argument("--reference-size", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.992,
                    help="aligned threshold (phantoms all look alike: 'auto' fails closed, as in specs/demo.yaml)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    reference = work / f"phantoms-{args.reference_count}-{args.reference_size}"
    if args.one is not None:
        print("RESULT " + json.dumps(one(args.one, work, reference, args.threshold)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "benchmarks"),
                                          os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    if not (reference / "metadata.csv").is_file():
        subprocess.run([sys.executable, "-m", "synthdata.cli", "phantoms", str(reference), "--count",
                        str(args.reference_count), "--seed", "7", "--size", str(args.reference_size)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    made = time.perf_counter() - t
    counts = [int(c) for c in args.counts.split(",")] + ([100_000] if args.large else [])
    runs = []
    for n in counts:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--work", str(work),
                               "--reference-count", str(args.reference_count), "--reference-size",
                               str(args.reference_size), "--threshold", str(args.threshold)],
                              env=env, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise SystemExit(f"n={n} failed:\n{proc.stderr[-4000:]}")
        runs.append(json.loads(line.removeprefix("RESULT ")))
        print(f"n={n}: {runs[-1]['wall_s']:.1f} s, peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB",
              file=sys.stderr)
    emit("scale", {"spec": str(SPEC.relative_to(REPO)), "reference": {
        "images": args.reference_count, "size": args.reference_size, "made_s": made,
        "command": f"synthdata phantoms OUT --count {args.reference_count} --seed 7 --size {args.reference_size}"},
        "threshold": args.threshold, "runs": runs, "growth_exponent": growth(runs),
        "work": str(work)}, args.record)


if __name__ == "__main__":
    main()
