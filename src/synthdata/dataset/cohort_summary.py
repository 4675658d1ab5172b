"""Requested vs planned vs realized joint distributions of a cohort dataset.

`write_cohort_summary(spec, folder)` runs with the plan (it needs the table) and writes
DIR/cohort.json: the table's summary and the *requested* distribution, i.e. the expected count
of each cell (label x sex x age decade x stratification variables) given the label counts and
the rows of each label (and stratum). `cohort_report(folder)` needs only the folder: it counts
the same cells in plan.parquet (*planned*) and among the samples of manifest.parquet
(*realized*: the accepted ones once screening has run, else the generated ones), and measures
the gap by total variation distance (half the L1 distance of the shares). `draw_cohort_plot`
and `cohort_section` turn that into a PNG and card lines.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_json_atomic
from synthdata.spec.models import Spec
from synthdata.fsutil import atomic_path
from synthdata.plan.rows import label_counts
from synthdata.plan.cohort import cohort_index

AGE_DIM = "age_decade"


def decade(value: str) -> str:
    """An age as its decade ('57' -> '50-59'); a non-numeric value (already binned) as it is."""
    try:
        age = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(age):
        return str(value)
    lo = int(math.floor(age / 10.0) * 10)
    return f"{lo}-{lo + 9}"


def dimensions(spec: Spec) -> dict[str, str]:
    """Report dimension -> cohort variable: sex, age_decade and the stratification variables."""
    cohort = spec.cohort
    sex = cohort.report.sex or ("sex" if "sex" in cohort.columns else None)
    age = cohort.report.age or ("age" if "age" in cohort.columns else None)
    dims = {}
    if sex:
        dims["sex"] = sex
    if age:
        dims[AGE_DIM] = age
    for var in (cohort.stratify.by if cohort.stratify else []):
        if var not in dims.values():
            dims[var] = var
    return dims


def _cell(label: str, values: dict, dims: dict[str, str]) -> tuple[str, ...]:
    return (label, *[decade(values[v]) if d == AGE_DIM else str(values[v]) for d, v in dims.items()])


def requested_cells(spec: Spec) -> dict[tuple[str, ...], float]:
    """Expected samples per cell: each (label, stratum) group's samples spread over the cells
    in proportion to the group's rows (the draw uses every row of a group once per cycle)."""

    index = cohort_index(spec)
    dims = dimensions(spec)
    counts = list(label_counts(spec).values())
    out: dict[tuple[str, ...], float] = {}
    for li, label in enumerate(spec.labels):
        groups, alloc = index.groups(li, counts[li])
        for rows, n in zip(groups, alloc):
            if n == 0:
                continue
            cells = Counter(_cell(label, {v: index.variables[v][r] for v in dims.values()}, dims)
                            for r in rows)
            for cell, k in cells.items():
                out[cell] = out.get(cell, 0.0) + float(n) * k / len(rows)
    return out


def write_cohort_summary(spec: Spec, folder: str | Path | DatasetFolder) -> Path:
    """DIR/cohort.json: table summary, label rows and counts, the requested distribution."""

    folder = folder if isinstance(folder, DatasetFolder) else DatasetFolder(folder)
    index = cohort_index(spec)
    dims = dimensions(spec)
    counts = label_counts(spec)
    summary = {
        "table": {"name": Path(spec.cohort.table).name, "sha256": index.sha256,
                  "rows": index.table_rows, "used_rows": index.used_rows,
                  "left_out": index.left_out, "overlapping_rows": index.overlapping_rows,
                  "finding_columns": index.findings, "deid_marker_rows": int(index.markers.sum())},
        "mode": spec.cohort.mode,
        "rules": {"uncertain": spec.cohort.uncertain, "missing": spec.cohort.missing,
                  "stratify": spec.cohort.stratify.model_dump() if spec.cohort.stratify else None},
        "labels": {name: {"where": spec.labels[name].where, "rows": int(len(rows)),
                          "count": counts[name]}
                   for name, rows in zip(spec.labels, index.label_rows)},
        "label_order": list(spec.labels),
        "dimensions": [[d, v] for d, v in dims.items()],
        "requested": [{"cell": list(cell), "expected": round(v, 6)}
                      for cell, v in sorted(requested_cells(spec).items())],
    }
    write_json_atomic(folder.cohort_file, summary)
    return folder.cohort_file


def _counts(rows: list[dict], dims: dict[str, str]) -> Counter:
    return Counter(_cell(r["label"], json.loads(r["vars"]), dims) for r in rows)


def tvd(a: dict, b: dict) -> float | None:
    """Total variation distance between two count tables (0: same shares, 1: disjoint)."""
    ta, tb = sum(a.values()), sum(b.values())
    if not ta or not tb:
        return None
    return 0.5 * sum(abs(a.get(k, 0) / ta - b.get(k, 0) / tb) for k in set(a) | set(b))


def cohort_report(folder: str | Path | DatasetFolder) -> dict:
    """Requested vs planned vs realized cells, per-label totals and distances (JSON-able)."""
    folder = folder if isinstance(folder, DatasetFolder) else DatasetFolder(folder)
    summary = json.loads(folder.cohort_file.read_text())
    dims = dict((d, v) for d, v in summary["dimensions"])
    requested = {tuple(c["cell"]): c["expected"] for c in summary["requested"]}
    plan = pq.read_table(folder.plan_file, columns=["key", "label", "vars", "deid_markers"]).to_pylist()
    planned = _counts(plan, dims)
    realized = markers_realized = realized_from = None
    if folder.manifest_file.is_file():
        manifest = pq.read_table(folder.manifest_file, columns=["key", "accepted"]).to_pylist()
        screened = any(m["accepted"] is not None for m in manifest)
        realized_from = "accepted" if screened else "generated"
        keys = {m["key"] for m in manifest if m["accepted"] or not screened}
        kept = [r for r in plan if r["key"] in keys]
        realized = _counts(kept, dims)
        markers_realized = sum(bool(r["deid_markers"]) for r in kept)
    cells = sorted(set(requested) | set(planned) | set(realized or {}))
    labels: dict[str, dict] = {name: {"requested": 0.0, "planned": 0, "realized": 0}
                               for name in summary["label_order"]}
    for cell in cells:
        entry = labels.setdefault(cell[0], {"requested": 0.0, "planned": 0, "realized": 0})
        entry["requested"] += requested.get(cell, 0.0)
        entry["planned"] += planned.get(cell, 0)
        entry["realized"] += (realized or {}).get(cell, 0)
    for entry in labels.values():
        entry["requested"] = round(entry["requested"], 6)
        entry["realized"] = entry["realized"] if realized is not None else None
    return {
        "dimensions": ["label", *dims], "variables": dims, "table": summary["table"],
        "mode": summary["mode"], "rules": summary["rules"], "labels": labels,
        "realized_from": realized_from,
        "cells": [{"cell": list(c), "requested": round(requested.get(c, 0.0), 6),
                   "planned": planned.get(c, 0),
                   "realized": realized.get(c, 0) if realized is not None else None} for c in cells],
        "tvd": {"planned_vs_requested": tvd(planned, requested),
                "realized_vs_requested": tvd(realized, requested) if realized is not None else None},
        "deid_markers": {"planned": sum(bool(r["deid_markers"]) for r in plan),
                         "realized": markers_realized},
    }


def write_cohort_report(folder: str | Path | DatasetFolder) -> dict:
    """Write DIR/cohort_report.json and DIR/report/cohort.png; return the report."""
    folder = folder if isinstance(folder, DatasetFolder) else DatasetFolder(folder)
    report = cohort_report(folder)
    write_json_atomic(folder.cohort_report_file, report)
    folder.report_dir.mkdir(parents=True, exist_ok=True)
    draw_cohort_plot(folder.cohort_plot_file, report)
    return report


def draw_cohort_plot(path: str | Path, report: dict, width: int = 960, row_height: int = 190) -> None:
    """One panel per label: requested (grey outline) vs planned (light blue) and realized (dark
    blue) counts of each cell, the cells being sex x age decade (x strata)."""

    labels = list(report["labels"])
    img = Image.new("RGB", (width, 40 + row_height * max(1, len(labels)) + 30), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    t = report["tvd"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    draw.text((10, 8), f"cohort: requested (grey outline) vs planned (light) vs realized (dark); "
              f"TVD planned {fmt(t['planned_vs_requested'])}, realized {fmt(t['realized_vs_requested'])}",
              fill="black", font=font)
    for li, label in enumerate(labels):
        cells = [c for c in report["cells"] if c["cell"][0] == label]
        top = 40 + li * row_height
        depth = len(report["dimensions"]) - 1
        x0, x1, y0, y1 = 10, width - 10, top + 16, top + row_height - 14 * depth - 12
        e = report["labels"][label]
        draw.text((10, top), f"{label}: requested {e['requested']:g}, planned {e['planned']}, "
                  f"realized {'-' if e['realized'] is None else e['realized']}", fill="black", font=font)
        peak = max([1.0] + [max(c["requested"], c["planned"], c["realized"] or 0) for c in cells])
        slot = (x1 - x0) / max(1, len(cells))
        for i, c in enumerate(cells):
            xa = x0 + i * slot
            for value, fill, outline, inset in ((c["planned"], "#a9c4eb", None, 0.1),
                                                (c["realized"], "#2e5fa8", None, 0.3),
                                                (c["requested"], None, "#555555", 0.0)):
                if value:
                    h = (y1 - y0) * value / peak
                    draw.rectangle([xa + slot * inset, y1 - h, xa + slot * (1 - inset) - 1, y1],
                                   fill=fill, outline=outline)
            chars = max(1, int(slot // 6))
            for d, part in enumerate(c["cell"][1:]):
                draw.text((xa + 1, y1 + 3 + 12 * d), str(part)[:chars], fill="#333333", font=font)
        draw.line([x0, y1, x1, y1], fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def cohort_section(folder: str | Path | DatasetFolder) -> list[str]:
    """Dataset-card lines (Markdown) for a cohort dataset; [] when the folder has no cohort."""
    folder = folder if isinstance(folder, DatasetFolder) else DatasetFolder(folder)
    if not folder.cohort_file.is_file():
        return []
    report = json.loads(folder.cohort_report_file.read_text()) if folder.cohort_report_file.is_file() \
        else cohort_report(folder)
    table = report["table"]
    left = ", ".join(f"{k}: {v}" for k, v in table["left_out"].items()) or "none"
    t = report["tvd"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    realized_as = report.get("realized_from") or "accepted"
    rows = [f"| label | requested | planned | {realized_as} |", "|---|---|---|---|"]
    for label, e in report["labels"].items():
        rows.append(f"| {label} | {e['requested']:g} | {e['planned']} | "
                    f"{'-' if e['realized'] is None else e['realized']} |")
    lines = ["## Cohort", "",
             (f"- drawn from rows of the real metadata table `{table['name']}` (sha256 "
              f"`{table['sha256'][:16]}`): {table['rows']} rows, {table['used_rows']} used; "
              f"left out: {left}"),
             (f"- mode `{report['mode']}`; uncertain findings: {report['rules']['uncertain']}, "
              f"blank findings: {report['rules']['missing']}; a row takes the first label whose "
              "`where` holds"),
             (f"- requested vs planned vs {realized_as} over {' x '.join(report['dimensions'])}: total "
              f"variation distance {fmt(t['planned_vs_requested'])} (planned), "
              f"{fmt(t['realized_vs_requested'])} ({realized_as}); details in `cohort_report.json`"),
             (f"- samples whose source report text held de-identification markers (removed before "
              f"prompting; `deid_markers` in plan.parquet): {report['deid_markers']['planned']} "
              f"planned, {'-' if report['deid_markers']['realized'] is None else report['deid_markers']['realized']} "
              f"{realized_as}"),
             "- `source_row` in plan.parquet names each sample's table row (a pseudonym when the "
             "table has patient ids); real images are not used", "", *rows, ""]
    if folder.cohort_plot_file.is_file():
        lines += [f"![requested vs realized]({folder.relative(folder.cohort_plot_file)})", ""]
    return lines
