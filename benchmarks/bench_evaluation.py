"""Evaluation cost vs raw feature extraction, side by side in one run.

(a) raw: decode every synthetic PNG from its tar and every real image from its file, and run
    the extractor over them (`embed(normalise=False)`, batch 32) in one plain loop;
(b) `synthdata evaluate` on the same dataset folder and real set: the Prefect flow (one task per
    shard and per real chunk), content hashing, cold feature caches, FID/KID/PRDC overall, per
    label and real-vs-real, intra-prompt MS-SSIM, NN similarity, evaluation.json and plots;
(c) the same evaluation again (warm caches: metrics only).
The extractor is loaded and the Prefect server started before any timing. Ratio = b / a.

Also times the metrics alone on random features at `--metrics-at` synthetic images (default
10,000) against `--real` real ones, to extrapolate the ratio to sizes too slow to run here:
    ratio(N) ~= (a_per_image * (N + real) + flow_overhead + metrics(N)) / (a_per_image * (N + real)).

Images: the real set is `synthdata phantoms` output when that command exists, else procedural
pictures; the synthetic set is more of the same (another seed) written as synthdata shards of
1000 (KEY.png + KEY.json with label and prompt), with a minimal plan.json and spec.yaml. Image
content does not change the cost of a fixed-size extractor; it is a stand-in for generated
images, which cost minutes per thousand to make on CPU.

    python benchmarks/bench_evaluation.py [--count 2000] [--real 1000] [--metrics-at 10000] [--record]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit
from PIL import Image

LABELS = ("normal", "effusion", "nodule")


def picture(label: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 70 + 80 * np.exp(-((xx - 0.5) ** 2) / 0.08) * (yy > 0.1) + rng.normal(0, 10, (size, size))
    if label == "nodule":
        cy, cx = rng.uniform(0.3, 0.7, 2)
        img += 90 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.004)
    elif label == "effusion":
        img[int(size * rng.uniform(0.7, 0.85)):, :] += 80
    return np.clip(img, 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_real(root: Path, n: int, seed: int) -> Path:
    """The real set: `synthdata phantoms` output if available, else an ImageFolder of pictures."""
    try:
        from synthdata.phantoms import write_phantoms
    except ImportError:
        write_phantoms = None
    if write_phantoms is not None:
        write_phantoms(root, count=n, seed=seed)
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:06d}.png").write_bytes(png(picture(label, rng)))
    return root


def real_labels(real: Path) -> list[str]:
    from synthdata.evaluation.realset import load_real_set

    return load_real_set(real).labels


def make_synthetic(out: Path, n: int, labels: list[str], real: Path, seed: int) -> Path:
    """A dataset folder with n images in accepted shards of 1000 (see the module docstring)."""
    import yaml

    from synthdata.evaluation.realset import load_real_set, read_images
    from synthdata.folder import DatasetFolder, shard_name
    from synthdata.fsutil import write_json_atomic
    from synthdata.folder.shards import DeterministicTarWriter

    folder = DatasetFolder(out)
    folder.shards_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder.plan_info_file, {"format_version": 2, "name": "bench-eval"})
    folder.spec_file.write_text(yaml.safe_dump({"name": "bench-eval", "labels": {
        lab: {"prompts": [f"chest x-ray with {lab}"]} for lab in labels}}))
    # stand-in images: real-set images with fresh noise (so features differ from the real ones)
    items = load_real_set(real).items
    rng = np.random.default_rng(seed)
    pool = list(zip(items, read_images(items)))
    for shard in range(0, n, 1000):
        with open(folder.shards_dir / f"{shard_name(shard // 1000)}.tar", "wb") as f:
            writer = DeterministicTarWriter(f)
            for i in range(shard, min(n, shard + 1000)):
                item, image = pool[i % len(pool)]
                noisy = np.clip(image.astype(np.float32) + rng.normal(0, 8, image.shape), 0, 255)
                key = f"bench-{i:09d}"
                meta = {"key": key, "label": item.label, "prompt": f"chest x-ray with {item.label}, "
                                                                    f"case {i % 97}"}
                writer.add(f"{key}.json", json.dumps(meta).encode())
                writer.add(f"{key}.png", png(noisy.astype(np.uint8)))
            writer.close()
    return out


def raw_extraction(dataset: Path, real: Path, extractor) -> tuple[float, int]:
    """(seconds, images): decode + extract every synthetic and real image, plain loop."""
    from synthdata.evaluation.features import read_shard
    from synthdata.evaluation.realset import load_real_set, read_images
    from synthdata.folder import DatasetFolder

    t = time.perf_counter()
    n = 0
    for tar in DatasetFolder(dataset).accepted_tars():
        _, _, _, images = read_shard(tar)
        extractor.embed(images, normalise=False)
        n += len(images)
    items = load_real_set(real).items
    for start in range(0, len(items), 512):
        images = list(read_images(items[start:start + 512]))
        extractor.embed(images, normalise=False)
        n += len(images)
    return time.perf_counter() - t, n


def metrics_only(n_synth: int, n_real: int, dim: int) -> float:
    """Seconds of the metrics evaluate computes (overall, per label, floor, NN) on random features."""
    from synthdata.evaluation import metrics

    rng = np.random.default_rng(0)
    real = rng.normal(size=(n_real, dim)).astype(np.float32)
    synth = rng.normal(0.1, 1.0, size=(n_synth, dim)).astype(np.float32)
    lab_r = np.arange(n_real) % 3
    lab_s = np.arange(n_synth) % 3
    t = time.perf_counter()
    detail = metrics.KID_SUBSETS_DETAIL            # as the flow: 100 KID subsets overall, fewer below
    metrics.fidelity(real, synth)
    for j in range(3):
        metrics.fidelity(real[lab_r == j], synth[lab_s == j], kid_subsets=detail)
    metrics.fidelity(real[: n_real // 2], real[n_real // 2:], kid_subsets=detail)
    metrics.nn_similarity(synth)
    metrics.nn_similarity(real)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="synthetic images")
    ap.add_argument("--real", type=int, default=1000, help="real images")
    ap.add_argument("--extractor", default="efficientnet-lite0")
    ap.add_argument("--metrics-at", type=int, default=10_000)
    ap.add_argument("--work", type=Path, default=None, help="folder for the data (default: a temp dir)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-eval-"))
    os.environ["SYNTHDATA_CACHE"] = str(work / "cache")       # cold caches
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from synthdata.cli import quiet_environment

    quiet_environment()
    t = time.perf_counter()
    real = make_real(work / "real", args.real, seed=1)
    dataset = make_synthetic(work / "dataset", args.count, real_labels(real), real, seed=2)
    prep_s = time.perf_counter() - t

    from prefect.testing.utilities import prefect_test_harness

    from synthdata.evaluation.features import get_extractor
    from synthdata.evaluation.flow import evaluate

    extractor = get_extractor(args.extractor)
    extractor.embed([np.zeros((64, 64), np.uint8)] * 2, normalise=False)   # warm-up
    with prefect_test_harness(server_startup_timeout=120):
        raw_s, n_images = raw_extraction(dataset, real, extractor)
        t = time.perf_counter()
        result = evaluate(dataset, str(real), features=[args.extractor])
        eval_s = time.perf_counter() - t
        t = time.perf_counter()
        evaluate(dataset, str(real), features=[args.extractor])
        warm_s = time.perf_counter() - t
    per_image = raw_s / n_images
    metrics_s = metrics_only(args.metrics_at, args.real, extractor.dim)
    metrics_here = metrics_only(args.count, args.real, extractor.dim)
    overhead_here = eval_s - raw_s
    non_metric_overhead = max(overhead_here - metrics_here, 0.0)
    n_big = args.metrics_at + args.real
    extrapolated = (per_image * n_big + non_metric_overhead * n_big / n_images + metrics_s) / (per_image * n_big)
    data = json.loads((dataset / "evaluation" / "evaluation.json").read_text())
    emit("evaluation", {
        "extractor": args.extractor, "synthetic": args.count, "real": args.real,
        "images_extracted": n_images, "prepare_s": round(prep_s, 1),
        "a_raw_extraction_s": round(raw_s, 2), "b_evaluate_s": round(eval_s, 2),
        "c_evaluate_warm_cache_s": round(warm_s, 2), "ratio_b_over_a": round(eval_s / raw_s, 3),
        "raw_images_per_s": round(n_images / raw_s, 1), "flow_timings": result["timings"],
        "metrics_only_s": {str(args.count): round(metrics_here, 2), str(args.metrics_at): round(metrics_s, 2)},
        "extrapolated_ratio_at": {str(args.metrics_at): round(extrapolated, 3)},
        "extrapolation": ("flow overhead other than metrics scaled linearly with images; metrics "
                          f"timed at {args.metrics_at} synthetic on random features"),
        "fid": data["fid"], "real_vs_real_fid": data["real_vs_real"]["fid"],
    }, args.record)


if __name__ == "__main__":
    main()
