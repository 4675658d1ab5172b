"""The phantom world: is builtin:phantom measurably better than builtin:tiny, and useful?

Runs, with the real command line:
1. `synthdata phantoms WORK/real --count R --seed S --size PX`      (the "real" set, at the
   spec's image size)
2. `synthdata run SPEC --out WORK/phantom` with the spec's model (builtin:phantom) and count N
3. the same spec with `generator.model: builtin:tiny`               -> WORK/tiny
4. `synthdata evaluate WORK/{phantom,tiny} --real WORK/real --utility`
and prints FID (and the real-vs-real floor), KID, PRDC and the synthetic-only utility AUC with
its interval for both models. The spec's labels must be phantom labels (default:
specs/demo.yaml, on builtin:phantom). Screening is switched off in the copies (memorization.reference: []) so only
generation and evaluation are timed.

    python benchmarks/bench_phantom_world.py [--spec specs/demo.yaml] [--count 500] [--real 1000] [--record]
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

import yaml
from _common import emit

REPO = Path(__file__).resolve().parents[1]


def sh(*args: str) -> float:
    """Run a synthdata command; return its wall time."""
    t = time.perf_counter()
    print("$", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(args, check=True, cwd=REPO)
    return time.perf_counter() - t


def spec_copy(spec: Path, work: Path, name: str, model: str | None, count: int) -> Path:
    data = yaml.safe_load(spec.read_text())
    data["name"] = f"{data['name']}-{name}"
    data["count"] = count
    data.pop("output", None)
    data["memorization"] = {"reference": []}
    if model is not None:
        data["generator"]["model"] = model
    data["shards"] = {"size": max(64, count // 4)}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def figures(out: Path) -> dict:
    d = json.loads((out / "evaluation" / "evaluation.json").read_text())
    syn = d["utility"]["synthetic"]
    return {"fid": d["fid"], "kid": d["kid"], "precision": d["precision"], "recall": d["recall"],
            "density": d["density"], "coverage": d["coverage"],
            "real_vs_real_fid": d["real_vs_real"]["fid"],
            "utility_synthetic_auc": [syn["auc"], syn["ci_low"], syn["ci_high"]],
            "utility_real_auc": [d["utility"]["real"]["auc"], d["utility"]["real"]["ci_low"],
                                 d["utility"]["real"]["ci_high"]],
            "ms_ssim": d["diversity"]["intra_prompt"]["ms_ssim"],
            "per_label_fid": {k: v["fid"] for k, v in d["per_label"].items()},
            "samples": d["samples"]["synthetic"], "real": d["samples"]["real"],
            "real_set_fingerprint": d["real_set"]["fingerprint"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", type=Path, default=REPO / "specs" / "demo.yaml")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--real", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="phantom-world-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    size = yaml.safe_load(args.spec.read_text())["generator"].get("height", 64)
    times = {"phantoms_s": sh("synthdata", "phantoms", str(work / "real"), "--count", str(args.real),
                              "--seed", str(args.seed), "--size", str(size))}
    out = {}
    for name, model in (("phantom", None), ("tiny", "builtin:tiny")):
        spec = spec_copy(args.spec, work, name, model, args.count)
        times[f"run_{name}_s"] = sh("synthdata", "run", str(spec), "--out", str(work / name))
        times[f"evaluate_{name}_s"] = sh("synthdata", "evaluate", str(work / name), "--real",
                                         str(work / "real"), "--utility")
        out[name] = figures(work / name)
    checks = {"phantom_fid_below_half_tiny": out["phantom"]["fid"] < out["tiny"]["fid"] / 2,
              "floor_below_both": out["phantom"]["real_vs_real_fid"] < min(out["phantom"]["fid"],
                                                                           out["tiny"]["fid"]),
              "phantom_synthetic_auc_at_least_0.7": out["phantom"]["utility_synthetic_auc"][0] >= 0.7}
    emit("phantom_world", {"spec": str(args.spec.relative_to(REPO)) if args.spec.is_relative_to(REPO)
                           else str(args.spec), "count": args.count, "real": args.real,
                           "work": str(work), "models": out, "checks": checks,
                           "timings_s": {k: round(v, 1) for k, v in times.items()}}, args.record)


if __name__ == "__main__":
    main()
