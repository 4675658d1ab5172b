"""`evaluation.json`, the contract between `synthdata evaluate` (which writes it) and the
dataset's card, artifacts, plots and the catalogue (which read it): its keys, how to read it,
and the card's evaluation section and tables drawn from it.

`evaluation.json` (DIR/evaluation/) holds no timestamps or machine paths: the same dataset,
real set, extractor and seed give the same file, so DVC can diff it as a metric. Its keys:

    format_version, seed, shards ("accepted" | "raw"), extractor {name, fingerprint, dim, ...},
    real_set {fingerprint, layout, images, labels}, samples {synthetic, real, per_label},
    fid, kid, kid_std, precision, recall, density, coverage, k        (headline extractor, all images)
    n {real, synthetic}, fid_ci [low, high], fid_std, fid_resamples, fd_inf {value, slope, points},
    kid_unbiased {value, se, ...}, cmmd {value, se, sigma, ...}, matched {fid, fid_std, ..., n},
    separability {fid_ci_width, min_n_separate, warnings}             (fidelity.py)
    per_label {label: the same, fid_ci where n allows}
    subgroups {attribute: {value: {n_real, n_synthetic, fid, fid_ci, precision, recall, note}}}
    per_extractor {name: {extractor, fid, ..., per_label}}             (when several)
    real_vs_real {the same metrics between disjoint real sets at the matched n, mean over draws,
                  fid_std, fid_draws, n {real_a, real_b}, draws}
    diversity {intra_prompt {ms_ssim, ms_ssim_std, grouping, groups, pairs, window},
               nearest_neighbour {synthetic {mean, median, p95, max}, real {...}}}
    labels {mapping {synthetic: real}, real_only [...]}
    alignment {...}                                                    (with --alignment)
    utility {real, real_limited {"10%", "25%"}, synthetic, real_plus_synthetic: {auc, ci_low,
             ci_high, per_label, n_train}, protocol,
             curve [{real_fraction, protocol, condition, auc, ci_low, ci_high, ...}],
             curve_gains [{real_fraction, protocol, gain, ci_low, ci_high, intervals_overlap}],
             curve_protocol}                                          (with --utility)
"""

from __future__ import annotations

import json
from pathlib import Path

from synthdata.folder import DatasetFolder

FORMAT_VERSION = 2   # 2: statistics, n per side, floor at equal n, subgroups, curves (issue 22)
HEADLINE = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage")
STATISTICS = ("n", "fid_ci", "fid_std", "fid_resamples", "fid_resample_shift", "fd_inf", "kid_unbiased", "cmmd",
              "matched", "subgroups", "separability")
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


def _ci(pair) -> str:
    if not pair or None in pair:
        return "-"
    return f"{pair[0]:.4g}-{pair[1]:.4g}"


def statistics_rows(data: dict) -> list[dict]:
    """The headline's statistics: FID with its interval, FD∞, unbiased KID and CMMD with
    standard errors, and FID at equal n against the floor at that n; n per side on every row."""
    n = data.get("n") or {}
    rows = [{"figure": "FID (all images)", "value": _fmt(data.get("fid")),
             "95% CI or ± SE": _ci(data.get("fid_ci")), "n real": n.get("real"),
             "n synthetic": n.get("synthetic")},
            {"figure": "FD at infinite n", "value": _fmt((data.get("fd_inf") or {}).get("value")),
             "95% CI or ± SE": "-", "n real": "extrapolated", "n synthetic": "extrapolated"}]
    for key, name in (("kid_unbiased", "KID (unbiased)"), ("cmmd", "CMMD (RBF MMD² x 1000)")):
        block = data.get(key) or {}
        rows.append({"figure": name, "value": _fmt(block.get("value")),
                     "95% CI or ± SE": f"± {block['se']:.2g}" if block.get("se") is not None else "-",
                     "n real": block.get("n_real"), "n synthetic": block.get("n_synthetic")})
    for key, name in (("matched", "FID at equal n"), ("real_vs_real", "real vs real at equal n (floor)")):
        block = data.get(key) or {}
        bn = block.get("n") or {}
        rows.append({"figure": name, "value": _fmt(block.get("fid")),
                     "95% CI or ± SE": f"± {block['fid_std']:.2g} (std over {block.get('draws')} draws)"
                     if block.get("fid_std") is not None else "-",
                     "n real": bn.get("real", bn.get("real_a")),
                     "n synthetic": bn.get("synthetic", bn.get("real_b"))})
    return rows


def curve_rows(utility: dict) -> list[dict]:
    """The data-limited curves as rows: fraction, protocol, real only and with synthetic."""
    by = {(p["real_fraction"], p["protocol"], p["condition"]): p for p in utility.get("curve", [])}
    rows = []
    for (fraction, protocol, condition), p in sorted(by.items()):
        if condition != "with_synthetic":
            continue
        base = by.get((fraction, protocol, "real_only"), {})
        rows.append({"real": f"{fraction:.0%}", "protocol": protocol,
                     "n real": p.get("n_train_real"),
                     "real only": f"{_fmt(base.get('auc'))} ({_ci([base.get('ci_low'), base.get('ci_high')])})",
                     "with synthetic": f"{_fmt(p['auc'])} ({_ci([p['ci_low'], p['ci_high']])})"})
    return rows


def subgroup_rows(data: dict) -> list[dict]:
    """One row per (attribute, value): n per side, FID with its interval or why there is none,
    and FID at the attribute's common n (comparable between its values)."""
    rows = []
    for attr, values in (data.get("subgroups") or {}).items():
        if attr == "notes":
            continue
        common = values.get("common_n") or {}
        for value, m in values.items():
            if value == "common_n":
                continue
            rows.append({"attribute": attr, "value": value, "n real": m["n_real"],
                         "n synthetic": m["n_synthetic"], "fid": m.get("fid"),
                         "fid 95% CI": _ci(m.get("fid_ci")) if m.get("fid_ci") else (m.get("note") or "-"),
                         "fid at common n": (f"{m['fid_common_n']:.4g} ({common['real']}/{common['synthetic']})"
                                             if m.get("fid_common_n") is not None else "-"),
                         "recall": m.get("recall")})
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
             *(["Statistics (headline extractor; real images resampled by patient; the "
                "matched FID and the floor compare equal numbers of images per side):", "",
                markdown_table(statistics_rows(data)), ""] if "fid_ci" in data else []),
             *[f"> **Warning:** {w}" for w in (data.get("separability") or {}).get("warnings", [])],
             *([""] if (data.get("separability") or {}).get("warnings") else []),
             (f"Diversity: intra-{intra.get('grouping', 'prompt')} MS-SSIM {_fmt(intra.get('ms_ssim'))} "
              f"over {intra.get('pairs', 0)} pairs (lower is more diverse); synthetic nearest-neighbour "
              f"cosine similarity mean {_fmt(nn.get('mean'))}, max {_fmt(nn.get('max'))}."), ""]
    if "utility" in data:
        lines += ["Utility (classifier on frozen features, evaluated on held-out real images; macro "
                  "one-vs-rest AUC with bootstrap 95% interval):", "",
                  markdown_table(utility_rows(data["utility"])), ""]
        if data["utility"].get("curve"):
            lines += [f"Data-limited curves ({data['utility']['curve_protocol']['classifier']}; "
                      "macro AUC, 95% interval over test patients; `pretrain` = pre-train on the "
                      "synthetic images, then fine-tune on the real subset):", "",
                      markdown_table(curve_rows(data["utility"])), ""]
    if subgroup_rows(data):
        lines += ["Fidelity per subgroup (FID interval only where both sides have enough images):", "",
                  markdown_table(subgroup_rows(data)), ""]
    if "alignment" in data:
        al = data["alignment"]
        lines += [f"Image-text alignment (`{al['model']}`): CLIP score {_fmt(al['clip_score'])}, "
                  f"zero-shot label accuracy {_fmt(al['zero_shot_accuracy'])}.", ""]
    lines += ["Details: `evaluation/evaluation.json` and the plots beside it.", ""]
    return lines
