"""Screening: approximate vs exact nearest-neighbour search, and embedding / query throughput.

- Index: 100k reference x 10k query 512-d unit vectors, clustered like image embeddings
  (Zipf-sized low-rank clusters, see `clustered`); half the queries are perturbed copies of
  reference vectors, half are new draws. Exact `IndexFlatIP` vs the index synthdata chooses
  above `exact_limit` (HNSW; efSearch tuned on 1000 vectors held out of the build to recall@1
  >= 0.99, plus one step of headroom): build (incl. tuning) and search times, recall@1 and
  recall@10 of the approximate index against exact on all 10k queries.
- Overhead: queries/s through synthdata's `NNIndex.search` vs calling FAISS directly.
- Embedders: images/s of `pixel` (256 x 256 inputs) and `efficientnet-lite0` (when installed).

    python benchmarks/bench_screening.py [--n-ref 100000] [--n-query 10000] [--dim 512] [--record]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from _common import emit

from synthdata.screening import index as ix
from synthdata.screening.embedders import l2_normalise
from synthdata.screening.embedder_factory import get_embedder


def clustered(n_ref: int, n_query: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and query unit vectors shaped like image embeddings.

    1000 clusters with Zipf-like sizes (a few large modes, many small ones: hubness), each a
    rank-24 Gaussian around its centre (embeddings have low intrinsic dimension) plus a little
    isotropic noise. Queries: half are perturbed copies of reference vectors (cosine ~0.95 to
    their source: what screening must catch), half are new draws from the same clusters.
    """
    rng = np.random.default_rng(seed)
    n_clusters, rank = 1000, 24
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    weights /= weights.sum()
    bases = (rng.standard_normal((n_clusters, rank, dim)) / np.sqrt(rank)).astype(np.float32)

    def draw(n: int) -> np.ndarray:
        c = rng.choice(n_clusters, n, p=weights)
        z = 2.0 * rng.standard_normal((n, rank)).astype(np.float32)
        x = centres[c] + np.einsum("nr,nrd->nd", z, bases[c])
        return l2_normalise(x + 0.2 * rng.standard_normal((n, dim)).astype(np.float32))

    ref = draw(n_ref)
    half = n_query // 2
    copies = ref[rng.integers(0, n_ref, half)] + (0.33 / np.sqrt(dim)) * rng.standard_normal(
        (half, dim)).astype(np.float32)
    return ref, np.concatenate([l2_normalise(copies), draw(n_query - half)])


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def bench_index(n_ref: int, n_query: int, dim: int, k: int) -> dict:
    ref, queries = clustered(n_ref, n_query, dim)
    flat_plan = ix.IndexChoice("flat", dim)
    flat, flat_build = timed(ix.build_index, ref, flat_plan)
    (exact_sims, exact_ids), flat_search = timed(flat.search, queries, k)
    (_, raw_ids), raw_flat_search = timed(flat.index.search, queries, k)
    assert (raw_ids == exact_ids).all()

    plan = ix.choose_index(n_ref, dim, exact_limit=n_ref - 1)
    (approx, order, info), approx_build = timed(ix.build_tuned, ref, plan)
    (sims, ids), approx_search = timed(approx.search, queries, k)
    ids = np.where(ids >= 0, order[np.maximum(ids, 0)], -1)
    _, raw_approx_search = timed(approx.index.search, queries, k)
    recall1 = float(np.mean(ids[:, 0] == exact_ids[:, 0]))
    recall10 = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact_ids)]))
    half = n_query // 2
    return {
        "n_ref": n_ref, "n_query": n_query, "dim": dim, "k": k,
        "faiss_threads": faiss.omp_get_max_threads(),
        "exact": {"index": "IndexFlatIP", "build_s": round(flat_build, 3),
                  "search_s": round(flat_search, 3),
                  "queries_per_s": round(n_query / flat_search, 1),
                  "raw_faiss_queries_per_s": round(n_query / raw_flat_search, 1)},
        "approximate": {"index": info, "build_and_tune_s": round(approx_build, 3),
                        "search_s": round(approx_search, 3),
                        "queries_per_s": round(n_query / approx_search, 1),
                        "raw_faiss_queries_per_s": round(n_query / raw_approx_search, 1),
                        "recall_at_1": round(recall1, 4), "recall_at_10": round(recall10, 4),
                        "recall_at_1_copies": round(float(np.mean(
                            ids[:half, 0] == exact_ids[:half, 0])), 4),
                        "recall_at_1_new": round(float(np.mean(
                            ids[half:, 0] == exact_ids[half:, 0])), 4),
                        "max_top1_similarity_error": round(float(np.max(
                            exact_sims[:, 0] - sims[:, 0])), 6)},
    }


def bench_embedders(n_pixel: int, n_cnn: int) -> dict:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256), dtype=np.uint8) for _ in range(n_pixel)]
    out = {}
    pixel = get_embedder("pixel")
    pixel.embed(images[:8])
    _, s = timed(pixel.embed, images)
    out["pixel"] = {"images": n_pixel, "size": "256x256", "images_per_s": round(n_pixel / s, 1)}
    try:
        cnn = get_embedder("efficientnet-lite0")
    except Exception as exc:  # noqa: BLE001 - optional figure
        out["efficientnet-lite0"] = {"skipped": str(exc)}
        return out
    cnn.embed(images[:4])
    _, s = timed(cnn.embed, images[:n_cnn])
    out["efficientnet-lite0"] = {"images": n_cnn, "size": "256x256 -> 224", "device": cnn.device,
                                 "batch_size": cnn.batch_size,
                                 "images_per_s": round(n_cnn / s, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ref", type=int, default=100_000)
    parser.add_argument("--n-query", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n-pixel", type=int, default=2000)
    parser.add_argument("--n-cnn", type=int, default=64)
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args()
    payload = {"index": bench_index(args.n_ref, args.n_query, args.dim, args.k),
               "embedders": bench_embedders(args.n_pixel, args.n_cnn)}
    emit("screening", payload, args.record)


if __name__ == "__main__":
    main()
