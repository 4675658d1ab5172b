"""The screening report: counts, thresholds and how they were set, patients, histograms.

Written as `screening_report.json` and `screening_report.png` (drawn with Pillow) beside
`screening.parquet` (or `audit.parquet`). It holds pseudonymous ids and scores only, and
nothing that depends on wall-clock time or on the machine (no timings, no device), so
re-screening the same dataset the same way rewrites it byte-for-byte.

Patient level: every sample's nearest real image has a (pseudonymous) patient group; the
report counts near-copies (reject or review) per group, so a model that memorized one
patient many times shows at once.

Calibration and reference at a glance (plain strings the dataset card shows too):
`calibration_status` (per deciding matcher: ok / review band / FAILED with what to fix, the
recall, the false-positive estimate with its interval and trials), `patient_groups` (how
many groups, from what: DICOM, a metadata table's column, a path pattern, files) and
`reference_duplicates` (near-duplicate pairs across patients, and that each cluster counts
as one patient).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from synthdata import privacy
from synthdata.screening.kinds import GROUP_KIND, REAL_KIND, SKIPPED_KIND
from synthdata.screening import calibrate
from synthdata.screening.decide import ACCEPT, DECISIONS

TOP_PAIRS = 20
TOP_GROUPS = 50
SUMMARY_KEYS = ("method", "status", "threshold", "target_recall", "min_recall", "recall",
                "false_positive_estimate", "false_positive_interval", "max_fp", "copies",
                "trials", "trials_real", "trials_hard_negatives", "pairs", "coarse",
                "review_from", "warning", "failed", "note")


def public_context(context: dict) -> dict:
    """The matchers' context with reference ids pseudonymized (skipped files, metadata
    tables, near-duplicate pairs and their groups)."""

    out = dict(context)
    ref = context.get("reference")
    if ref:
        ref = dict(ref)
        skipped = ref.get("skipped", [])
        names = privacy.remember(sorted({s["id"] for s in skipped}), SKIPPED_KIND)
        ref["skipped"] = [{"id": names[s["id"]],
                           "reason": s["reason"].replace(s["id"], names[s["id"]])}
                          for s in skipped]
        tables = ref.get("group_tables", [])
        named = privacy.remember(sorted({t["table"] for t in tables}), SKIPPED_KIND)
        ref["group_tables"] = [{**t, "table": named[t["table"]]} for t in tables]
        dups = ref.get("duplicates")
        if dups:
            pairs = dups.get("examples", [])
            ids = privacy.remember(sorted({p[k] for p in pairs for k in ("a", "b")}), REAL_KIND)
            groups = privacy.remember(sorted({p[k] for p in pairs
                                              for k in ("group_a", "group_b")}), GROUP_KIND)
            ref["duplicates"] = {**dups, "examples": [
                {**p, "a": ids[p["a"]], "b": ids[p["b"]], "group_a": groups[p["group_a"]],
                 "group_b": groups[p["group_b"]]} for p in pairs]}
        out["reference"] = ref
    return out


def _status(name: str, info: dict) -> str:
    """One matcher's calibration in a line."""
    if "recall" not in info:
        return f"{name}: {info.get('method', 'set')} {info.get('threshold')}" + (
            f" ({info['note']})" if info.get("note") else "")
    lo, hi = info.get("false_positive_interval", [None, None])
    fp = info.get("false_positive_estimate")
    figures = (f"recall {info['recall']:.1%} of {info.get('copies')} synthesized copies, false "
               f"positives {fp:.2%} (95% {lo:.2%}-{hi:.2%}) of {info.get('trials')} "
               "other-patient trials" if fp is not None else f"recall {info['recall']:.1%}")
    status = info.get("status", "measured")
    if status == "failed":
        return f"{name}: FAILED, every sample goes to review. {info.get('failed', '')}"
    head = f"{name}: {status}, threshold {info['threshold']:.4f}"
    if status == "review band":
        head += f", review from {info['review_from']:.4f}"
    elif status == "measured":
        head = f"{name}: threshold {info['threshold']:.4f} set by hand, measured"
    return f"{head}; {figures}" + (" (coarse)" if info.get("coarse") else "")


def glance(context: dict) -> dict:
    """`calibration_status`, `patient_groups`, `reference_duplicates`: strings for people."""
    infos = context.get("threshold_info", {})
    out = {"calibration_status": "; ".join(
        _status(n, {**i, "status": i.get("status", "measured" if "recall" in i else None)})
        for n, i in infos.items())}
    ref = context.get("reference")
    if ref:
        sources = ", ".join(f"{v} from {k}" for k, v in sorted(ref["group_sources"].items()))
        tables = "; ".join(f"table {t['table']} column {t['patient_column']!r} for "
                           f"{t['images']} file(s)" for t in ref.get("group_tables", []))
        out["patient_groups"] = f"{ref['groups']} groups ({sources})" + (
            f"; {tables}" if tables else "")
        d = ref.get("duplicates")
        if d is not None:
            out["reference_duplicates"] = "none found" if not d["pairs"] else (
                f"{d['pairs']} near-duplicate pair(s) across patient groups ({d['same_pixels']} "
                f"same pixels, {d['by_verifier']} by the verifier at >= {d['verifier_bar']:.4f}) "
                f"in {d['clusters']} cluster(s); each cluster counts as one patient for the "
                "false-positive estimate")
    return out


def _scores(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _per_matcher(cols: dict, context: dict) -> dict:
    out = {}
    for name in context.get("matchers_scoring", []):
        s = _scores(cols.get(f"similarity_{name}", []))
        info = context["threshold_info"].get(name, {})
        out[name] = {
            "decides": name in context["deciding"],
            "threshold": context["thresholds"].get(name),
            **{k: info[k] for k in SUMMARY_KEYS if k in info},
            "histogram": calibrate.histogram(s[np.isfinite(s)]),
            "max": None if not np.isfinite(s).any() else round(float(np.nanmax(s)), 6)}
    return out


def build_report(table: pa.Table, context: dict, key: str = "key") -> dict:
    """The report of a decisions table (screening.parquet or audit.parquet rows)."""
    cols = table.to_pydict()
    n = table.num_rows
    decisions = {d: 0 for d in DECISIONS}
    for d in cols["decision"]:  # `not-screened` (no reference) is counted apart, never as accept
        decisions[d] = decisions.get(d, 0) + 1
    per_label: dict[str, dict[str, int]] = {}
    for label, d in zip(cols.get("label", []), cols["decision"]):
        counts = per_label.setdefault(label, {x: 0 for x in DECISIONS})
        counts[d] = counts.get(d, 0) + 1
    top1 = _scores(cols["similarity"])
    order = [i for i in np.argsort(-np.nan_to_num(top1, nan=-np.inf), kind="stable")
             if not np.isnan(top1[i])][:TOP_PAIRS]
    pairs = [{"key": cols[key][i], "nearest_real_id": cols["nearest_real_id"][i],
              "nearest_group": cols["nearest_group"][i], "decided_by": cols["decided_by"][i],
              "similarity": round(float(top1[i]), 6), "decision": cols["decision"][i]}
             for i in order]
    flagged = Counter(g for g, d in zip(cols["nearest_group"], cols["decision"])
                      if d != ACCEPT and g is not None)
    rejected = Counter(g for g, d in zip(cols["nearest_group"], cols["decision"])
                       if d == "reject" and g is not None)
    groups = [{"group": g, "near_copies": c, "rejected": rejected.get(g, 0)}
              for g, c in sorted(flagged.items(), key=lambda kv: (-kv[1], kv[0]))][:TOP_GROUPS]
    out = {
        "samples": n,
        "decisions": decisions,
        "rule": context.get("rule"),
        "threshold": round(float(context["thresholds"][context["deciding"][0]]), 6)
        if context.get("thresholds") else None,
        "thresholds": {k: round(float(v), 6) for k, v in context.get("thresholds", {}).items()},
        "review_band": context["review_band"],
        "k": context["k"],
        "threshold_info": {name: {k: info[k] for k in SUMMARY_KEYS if k in info}
                           for name, info in context.get("threshold_info", {}).items()},
        "calibration": context.get("threshold_info", {}),
        "embedder": {"name": " + ".join(context.get("deciding", [])),
                     "deciding": context.get("deciding", []),
                     "matchers": context.get("matchers", {})},
        "matchers": _per_matcher(cols, context),
        **glance(context),
        "reference": context.get("reference"),
        "similarity_histogram": calibrate.histogram(top1[~np.isnan(top1)]),
        "nearest_pairs": pairs,
        "patients": {"groups_with_near_copies": len(flagged), "top": groups},
        "notes": context.get("notes", []),
    }
    if per_label:
        out["per_label"] = dict(sorted(per_label.items()))
    if "near_duplicate_of" in cols:
        dup_sims = _scores(cols["near_duplicate_similarity"])
        dup_rows = [i for i in np.argsort(-np.nan_to_num(dup_sims, nan=-np.inf), kind="stable")
                    if cols["near_duplicate_of"][i] is not None]
        out["near_duplicates"] = {
            **context.get("near_duplicates", {}), "count": len(dup_rows),
            "pairs": [{"key": cols[key][i], "of": cols["near_duplicate_of"][i],
                       "similarity": round(float(dup_sims[i]), 6)} for i in dup_rows[:TOP_PAIRS]]}
    return out


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
    """Histogram PNG of the deciding similarity (blue) with the first deciding matcher's
    other-patient calibration scores (grey outline), threshold (red) and review band (orange)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    box = (50, 40, width - 20, height - 50)
    x0, y0, x1, y1 = box

    def x_of(v: float) -> float:
        return x0 + (x1 - x0) * (v + 1) / 2

    t, band = report["threshold"], report["review_band"]
    if t is not None and band > 0:
        draw.rectangle([x_of(t - band), y0, x_of(t), y1], fill="#ffe2b3")
    _bars(draw, report["similarity_histogram"]["counts"], box, "#4a7fd4", None)
    deciding = report["embedder"]["deciding"]
    calib = report["calibration"].get(deciding[0], {}) if deciding else {}
    if calib.get("histogram_other_patients"):
        _bars(draw, calib["histogram_other_patients"]["counts"], box, None, "#777777")
    if t is not None:
        draw.line([x_of(t), y0 - 10, x_of(t), y1], fill="#d62728", width=2)
    draw.line([x0, y1, x1, y1], fill="black")
    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        draw.line([x_of(v), y1, x_of(v), y1 + 5], fill="black")
        draw.text((x_of(v) - 10, y1 + 8), f"{v:g}", fill="black", font=font)
    d = report["decisions"]
    shown = "n/a" if t is None else f"{t:.4f}"
    counts = ", ".join(f"{k} {v}" for k, v in d.items())
    if report.get("reference") is None:
        counts = f"NOT SCREENED AGAINST REAL IMAGES (no reference): {counts}"
    draw.text((x0, 8), f"deciding similarity ({report['embedder']['name']}): {report['samples']} "
              f"samples, threshold {shown}; {counts}", fill="black", font=font)
    draw.text((x0, height - 22), "blue: samples' deciding similarity   grey: real vs other "
              "patients (calibration)   red: threshold   orange: review band", fill="#333333",
              font=font)
    img.save(path, format="PNG")
