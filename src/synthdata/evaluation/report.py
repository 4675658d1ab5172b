"""Assemble evaluation.json from features, and what the card, artifacts and plots show of it.

`evaluation.json` (DIR/evaluation/) holds no timestamps or machine paths: the same dataset,
real set, extractor and seed give the same file, so DVC can diff it as a metric. Its keys:

    format_version, seed, shards ("accepted" | "raw"), extractor {name, fingerprint, dim, ...},
    real_set {fingerprint, layout, images, labels}, samples {synthetic, real, per_label},
    fid, kid, kid_std, precision, recall, density, coverage, k        (default extractor)
    per_label {label: the same}
    per_extractor {name: {extractor, fid, ..., per_label}}             (when several)
    real_vs_real {the same metrics between two seeded halves of the real set, n_real, n_synthetic}
    diversity {intra_prompt {ms_ssim, ms_ssim_std, grouping, groups, pairs, window},
               nearest_neighbour {synthetic {mean, median, p95, max}, real {...}}}
    labels {mapping {synthetic: real}, real_only [...]}
    alignment {...}                                                    (with --alignment)
    utility {real, real_limited {"10%", "25%"}, synthetic, real_plus_synthetic: {auc, ci_low,
             ci_high, per_label, n_train}, protocol}                  (with --utility)
"""

from __future__ import annotations

import json
from pathlib import Path

from synthdata.folder import DatasetFolder

FORMAT_VERSION = 1
HEADLINE = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")
EVALUATION_JSON = "evaluation.json"


def evaluation_file(folder: DatasetFolder) -> Path:
    """DIR/evaluation/evaluation.json."""
    return folder.evaluation_dir / EVALUATION_JSON


def read_evaluation(out_dir: str | Path) -> dict | None:
    """DIR/evaluation/evaluation.json as data, or None when the dataset was not evaluated."""
    path = evaluation_file(DatasetFolder(out_dir))
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def headline_rows(data: dict) -> list[dict]:
    """One row per comparison: the dataset, the real-vs-real floor, and each label."""
    rows = [{"set": "synthetic vs real", **{k: data.get(k) for k in HEADLINE}},
            {"set": "real vs real (floor)", **{k: data["real_vs_real"].get(k) for k in HEADLINE}}]
    for label, m in data.get("per_label", {}).items():
        rows.append({"set": f"label {label}", **{k: m.get(k) for k in HEADLINE}})
    return rows


def utility_rows(utility: dict) -> list[dict]:
    """One row per training condition: macro AUC and its 95% interval."""
    rows = []
    for name in ("real", "real_limited", "synthetic", "real_plus_synthetic"):
        entries = utility[name].items() if name == "real_limited" else [("", utility[name])]
        for sub, v in entries:
            rows.append({"trained on": f"{name} {sub}".strip(), "auc": v["auc"], "ci_low": v["ci_low"],
                         "ci_high": v["ci_high"], "n_train": v["n_train"]})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of dicts as a Markdown table."""
    if not rows:
        return "_(none)_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def evaluation_section(out_dir: str | Path) -> list[str]:
    """The dataset card's evaluation section (Markdown lines); [] when not evaluated."""
    data = read_evaluation(out_dir)
    if data is None:
        return []
    ext = data["extractor"]
    div = data.get("diversity", {})
    intra = div.get("intra_prompt", {})
    nn = div.get("nearest_neighbour", {}).get("synthetic", {})
    lines = ["## Evaluation against real images", "",
             (f"`synthdata evaluate` with extractor `{ext['name']}` against a real set of "
              f"{data['samples']['real']} images (fingerprint `{data['real_set']['fingerprint'][:16]}`); "
              f"{data['samples']['synthetic']} synthetic images ({data['shards']} shards). "
              "Lower FID/KID is closer to the real images; the real-vs-real row is the floor a "
              f"perfect generator would reach. PRDC at k={data['k']}."), "",
             markdown_table(headline_rows(data)), "",
             (f"Diversity: intra-{intra.get('grouping', 'prompt')} MS-SSIM {_fmt(intra.get('ms_ssim'))} "
              f"over {intra.get('pairs', 0)} pairs (lower is more diverse); synthetic nearest-neighbour "
              f"cosine similarity mean {_fmt(nn.get('mean'))}, max {_fmt(nn.get('max'))}."), ""]
    if "utility" in data:
        lines += ["Utility (classifier on frozen features, evaluated on held-out real images; macro "
                  "one-vs-rest AUC with bootstrap 95% interval):", "",
                  markdown_table(utility_rows(data["utility"])), ""]
    if "alignment" in data:
        al = data["alignment"]
        lines += [f"Image-text alignment (`{al['model']}`): CLIP score {_fmt(al['clip_score'])}, "
                  f"zero-shot label accuracy {_fmt(al['zero_shot_accuracy'])}.", ""]
    lines += ["Details: `evaluation/evaluation.json` and the plots beside it.", ""]
    return lines


def publish_artifacts(data: dict, name: str) -> list[str]:
    """The headline and utility tables as Prefect artifacts (no-op outside a flow run)."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return []
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = "".join(c if c.isalnum() else "-" for c in name.lower())
    ids = [create_table_artifact(table=headline_rows(data), key=f"{key}-fidelity",
                                 description=f"{name}: fidelity vs real ({data['extractor']['name']})")]
    text = [f"# {name}: evaluation", "", markdown_table(headline_rows(data))]
    if "utility" in data:
        text += ["", "## Utility", "", markdown_table(utility_rows(data["utility"]))]
    ids.append(create_markdown_artifact(markdown="\n".join(text), key=f"{key}-evaluation",
                                        description=f"{name}: evaluation summary"))
    return [str(i) for i in ids]
