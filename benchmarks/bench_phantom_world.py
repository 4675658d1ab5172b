"""The phantom world: is builtin:phantom measurably better than builtin:tiny, and useful?

Runs, with the real command line:
1. `synthdata phantoms WORK/real --count R --seed S --size PX`      (the "real" set, at the
   spec's image size; procedural phantoms, not clinical data)
2. `synthdata run SPEC --out WORK/phantom` with the spec's model (builtin:phantom) and count N
3. the same spec with `generator.model: builtin:tiny`               -> WORK/tiny
4. `synthdata evaluate WORK/phantom WORK/tiny --real WORK/real --utility --compare-out ...`:
   default settings (on a phantom set: builtin:phantom-encoder headline, efficientnet-lite0
   second opinion; linear-probe curves on the CPU), both ranked in one table
5. with `--cnn`: the data-limited curves again with the small CNN on the images
   (`--utility-classifier cnn --curve-draws D`) on a copy of WORK/phantom, on this CPU;
   with `--imagenet-curve`: the curves with the second opinion's features as the headline
   (`--features efficientnet-lite0 --utility`) on another copy; and, in-process from the
   feature caches, the linear-probe curves below the issue's range (1% and 2% of the real
   training split, 10 draws) with both extractors
6. separability against n (in-process, from the feature caches): at n synthetic images per
   model, do the FID intervals of builtin:phantom and builtin:tiny overlap? and those of two
   disjoint halves of builtin:phantom's images (they should)? and builtin:phantom's against the
   real-vs-real floor at that n?
and prints FID with its interval, FD at infinite n, unbiased KID and CMMD with SEs, the floor at
equal n, the synthetic-only AUC with its interval, the curves and the issue's checks as JSON.
Screening is off in the copies (memorization.reference: []). `--reuse` keeps WORK's phantoms and
generated datasets when they are complete.

    python benchmarks/bench_phantom_world.py [--count 200] [--real 1000] [--work DIR] [--reuse]
                                             [--cnn] [--imagenet-curve] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import emit

REPO = Path(__file__).resolve().parents[1]
SEPARABILITY_N = (5, 10, 20, 50, 100, 200)


def sh(*args: str) -> float:
    """Run a synthdata command; return its wall time."""
    t = time.perf_counter()
    print("$", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(args, check=True, cwd=REPO, stdout=sys.stderr)   # stdout is the JSON
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


def _pair(block: dict, lo: str = "ci_low", hi: str = "ci_high") -> list:
    return [block.get("auc"), block.get(lo), block.get(hi)]


def figures(out: Path) -> dict:
    d = json.loads((out / "evaluation" / "evaluation.json").read_text())
    util = d["utility"]
    second = {name: {"fid": b["fid"], "fid_ci": b["fid_ci"], "floor_fid": b["real_vs_real"]["fid"]}
              for name, b in d.get("per_extractor", {}).items() if name != d["extractor"]["name"]}
    return {"extractor": d["extractor"]["name"], "n": d["n"], "fid": d["fid"], "fid_ci": d["fid_ci"],
            "fid_resample_shift": d.get("fid_resample_shift"), "fd_inf": d["fd_inf"]["value"],
            "kid": d["kid"], "kid_unbiased": [d["kid_unbiased"]["value"], d["kid_unbiased"]["se"]],
            "cmmd": [d["cmmd"]["value"], d["cmmd"]["se"], d["cmmd"]["sigma"]],
            "precision": d["precision"], "recall": d["recall"], "coverage": d["coverage"],
            "matched_fid": [d["matched"]["fid"], d["matched"]["fid_std"], d["matched"]["n"]],
            "real_vs_real_fid": [d["real_vs_real"]["fid"], d["real_vs_real"]["fid_std"],
                                 d["real_vs_real"]["n"]],
            "utility_synthetic_auc": _pair(util["synthetic"]), "utility_real_auc": _pair(util["real"]),
            "utility_test": {"n_test": util["protocol"]["n_test"],
                             "patients": util["protocol"].get("n_test_groups")},
            "curve_gains": util["curve_gains"], "curve": util["curve"],
            "per_label_fid": {k: [v["fid"], v.get("fid_ci")] for k, v in d["per_label"].items()},
            "subgroups_sex": d.get("subgroups", {}).get("sex"),
            "separability": d["separability"], "second_opinion": second,
            "ms_ssim": d["diversity"]["intra_prompt"]["ms_ssim"],
            "samples": d["samples"]["synthetic"], "real": d["samples"]["real"],
            "real_set_fingerprint": d["real_set"]["fingerprint"]}


def separability(work: Path, extractor: str = "builtin:phantom-encoder", seed: int = 0) -> list[dict]:
    """FID intervals of the two models (and of two halves of one) at n synthetic images each."""
    from synthdata.evaluation import features as feat
    from synthdata.evaluation import metrics
    from synthdata.evaluation.fidstats import fid_interval, matched_floor
    from synthdata.evaluation.flow import dataset_tars
    from synthdata.evaluation.realset import load_real_set
    from synthdata.folder import DatasetFolder

    ext = feat.get_extractor(extractor, device="cpu")
    real = load_real_set(work / "real")
    groups = [i.group for i in real.items]
    rx = np.concatenate([feat.real_features(c, ext) for c in feat.real_chunks(real.items)])
    synth = {name: np.concatenate([feat.shard_features(t, ext).features
                                   for t in dataset_tars(DatasetFolder(work / name))[0]])
             for name in ("phantom", "tiny")}
    rows = []
    for n in SEPARABILITY_N:
        rng = np.random.default_rng([seed, n])
        pick = {k: v[np.sort(rng.choice(len(v), min(n, len(v)), replace=False))] for k, v in synth.items()}
        half = rng.permutation(len(synth["phantom"]))
        halves = [synth["phantom"][half[:min(n, len(half) // 2)]],
                  synth["phantom"][half[len(half) // 2:len(half) // 2 + min(n, len(half) // 2)]]]
        ci = {k: fid_interval(rx, v, real_groups=groups, resamples=100, seed=seed)["ci"] for k, v in pick.items()}
        hci = [fid_interval(rx, h, real_groups=groups, resamples=100, seed=seed)["ci"] for h in halves]
        floor = matched_floor(rx, pick["phantom"], real_groups=groups, draws=4, seed=seed)
        rows.append({"n": n, "phantom": [metrics.fid(rx, pick["phantom"]), *ci["phantom"]],
                     "tiny": [metrics.fid(rx, pick["tiny"]), *ci["tiny"]],
                     "models_separated": ci["phantom"][1] < ci["tiny"][0],
                     "halves_of_phantom": [hci[0], hci[1], len(halves[0])],
                     "halves_separated": hci[0][1] < hci[1][0] or hci[1][1] < hci[0][0],
                     "floor_at_n": [floor["real_vs_real"]["fid"], floor["real_vs_real"]["fid_std"]],
                     "phantom_at_n_vs_same_real": [floor["synthetic_vs_real"]["fid"],
                                                   floor["synthetic_vs_real"]["fid_std"]]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _features(work: Path, extractor: str):
    """(real features, real items, {model: (features, labels)}) from the caches."""
    from synthdata.evaluation import features as feat
    from synthdata.evaluation.flow import dataset_tars
    from synthdata.evaluation.realset import load_real_set
    from synthdata.folder import DatasetFolder

    ext = feat.get_extractor(extractor, device="cpu")
    real = load_real_set(work / "real")
    rx = np.concatenate([feat.real_features(c, ext) for c in feat.real_chunks(real.items)])
    synth = {}
    for name in ("phantom", "tiny"):
        parts = [feat.shard_features(t, ext) for t in dataset_tars(DatasetFolder(work / name))[0]]
        synth[name] = (np.concatenate([p.features for p in parts]), [lab for p in parts for lab in p.labels])
    return rx, real.items, synth


def low_fraction_curves(work: Path, seed: int = 0) -> dict:
    """The linear-probe curves at 1% and 2% of the real training split (same split, protocol
    and intervals as `synthdata evaluate --utility`), builtin:phantom's images, both extractors."""
    from synthdata.evaluation.curves import utility_curve
    from synthdata.evaluation.flow import TEST_FRACTION
    from synthdata.evaluation.realset import split_items

    out = {}
    for extractor in ("builtin:phantom-encoder", "efficientnet-lite0"):
        rx, items, synth = _features(work, extractor)
        code = {lab: i for i, lab in enumerate(sorted({i.label for i in items}))}
        y = np.array([code[i.label] for i in items])
        groups = [i.group for i in items]
        tr, te = split_items(items, TEST_FRACTION, seed)
        sx, sl = synth["phantom"]
        points, gains = utility_curve(rx[tr], y[tr], [groups[i] for i in tr], rx[te], y[te],
                                      [groups[i] for i in te], sx, np.array([code[v] for v in sl]),
                                      len(code), fractions=(0.01, 0.02), draws=10, seed=seed)
        out[extractor] = {"points": points, "gains": gains}
    return out


def checks(out: dict) -> dict:
    ph, tn = out["phantom"], out["tiny"]
    floor = ph["real_vs_real_fid"]
    gains = [g for g in ph["curve_gains"] if g["real_fraction"] <= 0.10]
    for name in ("cnn", "imagenet"):
        gains += [{**g, "curve": name} for g in out.get(f"{name}_curve_gains") or []
                  if g["real_fraction"] <= 0.10]
    return {"phantom_fid_below_half_tiny": ph["fid"] < 0.5 * tn["fid"],
            "fid_intervals_do_not_overlap": ph["fid_ci"][1] < tn["fid_ci"][0],
            "floor_at_equal_n_below_both": floor[0] + 2 * floor[1] < min(ph["matched_fid"][0], tn["matched_fid"][0],
                                                                        ph["fid_ci"][0], tn["fid_ci"][0]),
            "phantom_synthetic_auc_at_least_0.8": ph["utility_synthetic_auc"][0] >= 0.8,
            "synthetic_helps_at_5_or_10_percent": [g for g in gains if g["ci_low"] is not None and g["ci_low"] > 0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", type=Path, default=REPO / "specs" / "demo.yaml")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--real", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="keep WORK's phantoms and datasets")
    ap.add_argument("--cnn", action="store_true", help="also the CNN curves on this machine")
    ap.add_argument("--cnn-draws", type=int, default=1)
    ap.add_argument("--imagenet-curve", action="store_true",
                    help="also the curves on efficientnet-lite0 features, and below 5%%")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="phantom-world-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    size = yaml.safe_load(args.spec.read_text())["generator"].get("height", 64)
    times = {}
    if not (args.reuse and (work / "real" / "metadata.csv").is_file()):
        times["phantoms_s"] = sh("synthdata", "phantoms", str(work / "real"), "--count", str(args.real),
                                 "--seed", str(args.seed), "--size", str(size))
    for name, model in (("phantom", None), ("tiny", "builtin:tiny")):
        if not (args.reuse and (work / name / "run.json").is_file()):
            spec = spec_copy(args.spec, work, name, model, args.count)
            times[f"run_{name}_s"] = sh("synthdata", "run", str(spec), "--out", str(work / name))
    times["evaluate_both_s"] = sh("synthdata", "evaluate", str(work / "phantom"), str(work / "tiny"),
                                  "--real", str(work / "real"), "--utility",
                                  "--compare-out", str(work / "ranking.json"))
    out: dict = {name: figures(work / name) for name in ("phantom", "tiny")}
    out["ranking"] = json.loads((work / "ranking.json").read_text())["rows"]
    if args.cnn:
        copy = work / "phantom-cnn"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(work / "phantom", copy, ignore=shutil.ignore_patterns("evaluation"))
        times["evaluate_cnn_s"] = sh("synthdata", "evaluate", str(copy), "--real", str(work / "real"),
                                     "--features", "builtin:phantom-encoder", "--utility",
                                     "--utility-classifier", "cnn", "--curve-draws", str(args.cnn_draws))
        cnn = json.loads((copy / "evaluation" / "evaluation.json").read_text())["utility"]
        out["cnn_curve"], out["cnn_curve_gains"] = cnn["curve"], cnn["curve_gains"]
        out["cnn_protocol"] = cnn["curve_protocol"]
    if args.imagenet_curve:
        copy = work / "phantom-imagenet"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(work / "phantom", copy, ignore=shutil.ignore_patterns("evaluation"))
        times["evaluate_imagenet_s"] = sh("synthdata", "evaluate", str(copy), "--real", str(work / "real"),
                                          "--features", "efficientnet-lite0", "--utility")
        im = json.loads((copy / "evaluation" / "evaluation.json").read_text())["utility"]
        out["imagenet_curve"], out["imagenet_curve_gains"] = im["curve"], im["curve_gains"]
        out["imagenet_utility_synthetic_auc"] = _pair(im["synthetic"])
        out["low_fraction_curves"] = low_fraction_curves(work)
    t = time.perf_counter()
    out["separability"] = separability(work)
    times["separability_s"] = time.perf_counter() - t
    emit("phantom_world", {"spec": str(args.spec.relative_to(REPO)) if args.spec.is_relative_to(REPO)
                           else str(args.spec), "count": args.count, "real": args.real,
                           "work": str(work), "models": out, "checks": checks(out),
                           "timings_s": {k: round(v, 1) for k, v in times.items()}}, args.record)


if __name__ == "__main__":
    main()
