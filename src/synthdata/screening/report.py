"""The screening report: counts, threshold provenance, histogram and nearest pairs.

Written as `DIR/screening_report.json` and `DIR/screening_report.png` (drawn with Pillow).
It holds ids and scores only, and nothing that depends on wall-clock time or on the machine
(no timings, no device), so re-screening the same dataset the same way rewrites it
byte-for-byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from synthdata.screening import calibrate
from synthdata.screening.decide import DECISIONS

TOP_PAIRS = 20


def build_report(table: pa.Table, context: dict) -> dict:
    """The report of a screening table (screening.parquet's rows) and its context."""
    cols = table.to_pydict()
    n = table.num_rows
    decisions = {d: 0 for d in DECISIONS}
    per_label: dict[str, dict[str, int]] = {}
    for label, d in zip(cols["label"], cols["decision"]):
        decisions[d] += 1
        per_label.setdefault(label, {x: 0 for x in DECISIONS})[d] += 1
    top1 = np.array([s if s is not None else np.nan for s in cols["similarity"]], dtype=np.float64)
    order = [i for i in np.argsort(-np.nan_to_num(top1, nan=-np.inf), kind="stable")
             if not np.isnan(top1[i])][:TOP_PAIRS]
    pairs = [{"key": cols["key"][i], "real_id": cols["nearest_real_ids"][i][0],
              "similarity": round(float(top1[i]), 6), "decision": cols["decision"][i]}
             for i in order]
    dup_sims = np.array([s if s is not None else np.nan
                         for s in cols["near_duplicate_similarity"]], dtype=np.float64)
    dup_rows = [i for i in np.argsort(-np.nan_to_num(dup_sims, nan=-np.inf), kind="stable")
                if cols["near_duplicate_of"][i] is not None]
    return {
        "samples": n,
        "decisions": decisions,
        "per_label": dict(sorted(per_label.items())),
        "threshold": round(float(context["threshold"]), 6),
        "review_band": context["review_band"],
        "k": context["k"],
        "threshold_info": context["threshold_info"],
        "embedder": context["embedder"],
        "reference": context["reference"],
        "similarity_histogram": calibrate.histogram(top1[~np.isnan(top1)]),
        "nearest_pairs": pairs,
        "near_duplicates": {
            "count": len(dup_rows),
            "pairs": [{"key": cols["key"][i], "of": cols["near_duplicate_of"][i],
                       "similarity": round(float(dup_sims[i]), 6)} for i in dup_rows[:TOP_PAIRS]],
        },
        "notes": context.get("notes", []),
    }


def _bars(draw: ImageDraw.ImageDraw, counts: list[int], box: tuple[int, int, int, int],
          fill: str | None, outline: str | None) -> None:
    x0, y0, x1, y1 = box
    top = max(max(counts), 1)
    width = (x1 - x0) / len(counts)
    for i, c in enumerate(counts):
        if c == 0:
            continue
        h = (y1 - y0) * c / top
        draw.rectangle([x0 + i * width, y1 - h, x0 + (i + 1) * width - 1, y1],
                       fill=fill, outline=outline)


def draw_histogram(path: str | Path, report: dict, width: int = 720, height: int = 400) -> None:
    """Histogram PNG: synthetic top-1 similarity (blue), real-vs-real (grey outline),
    threshold (red line) and review band (orange)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    box = (50, 40, width - 20, height - 50)
    x0, y0, x1, y1 = box

    def x_of(v: float) -> float:
        return x0 + (x1 - x0) * (v + 1) / 2

    t, band = report["threshold"], report["review_band"]
    if band > 0:
        draw.rectangle([x_of(t - band), y0, x_of(t), y1], fill="#ffe2b3")
    _bars(draw, report["similarity_histogram"]["counts"], box, "#4a7fd4", None)
    real = (report.get("reference") or {}).get("calibration_histogram")
    if real:
        _bars(draw, real["counts"], box, None, "#777777")
    draw.line([x_of(t), y0 - 10, x_of(t), y1], fill="#d62728", width=2)
    draw.line([x0, y1, x1, y1], fill="black")
    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        draw.line([x_of(v), y1, x_of(v), y1 + 5], fill="black")
        draw.text((x_of(v) - 10, y1 + 8), f"{v:g}", fill="black", font=font)
    d = report["decisions"]
    draw.text((x0, 8), f"nearest-real similarity ({report['embedder']['name']}): "
              f"{report['samples']} samples, threshold {t:.4f}; accept {d['accept']}, "
              f"review {d['review']}, reject {d['reject']}", fill="black", font=font)
    draw.text((x0, height - 22), "blue: synthetic vs nearest real   grey: real vs nearest "
              "other real (each scaled to its maximum)   red: threshold   orange: review band", fill="#333333", font=font)
    img.save(path, format="PNG")
