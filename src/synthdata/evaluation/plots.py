"""Evaluation plots (matplotlib, headless): fidelity per label, utility with intervals, NN similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthdata.fsutil import atomic_path
from synthdata.dataset.evaluation_section import utility_rows


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _figure(width: float = 7.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def fidelity_plot(data: dict, path: Path) -> Path:
    """FID overall and per label as bars with their 95% intervals (where n allows), and the
    real-vs-real floor at equal n."""
    names = ["all"] + list(data.get("per_label", {}))
    values = [data.get("fid")] + [m.get("fid") for m in data.get("per_label", {}).values()]
    cis = [data.get("fid_ci")] + [m.get("fid_ci") for m in data.get("per_label", {}).values()]
    heights = np.array([v if v is not None else 0 for v in values], dtype=float)
    has_ci = np.array([bool(c) and None not in c for c in cis])
    fig, ax = _figure()
    ax.bar(names, heights, color=["#4c72b0" if h else "#a9bcd9" for h in has_ci])
    if has_ci.any():
        x = np.flatnonzero(has_ci)
        lo = np.array([heights[i] - cis[i][0] for i in x])
        hi = np.array([cis[i][1] - heights[i] for i in x])
        ax.errorbar(x, heights[x], yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="none",
                    ecolor="black", capsize=4, label="95% interval")
    floor = data["real_vs_real"].get("fid")
    if floor is not None:
        n = (data["real_vs_real"].get("n") or {}).get("real_a")
        ax.axhline(floor, color="#c44e52", linestyle="--",
                   label=f"real vs real {floor:.3g}" + (f" (n = {n} a side)" if n else ""))
    handles = ax.get_legend_handles_labels()[0]
    if not has_ci.all():
        from matplotlib.patches import Patch

        handles.append(Patch(color="#a9bcd9", label="no interval: too few images"))
    if handles:
        ax.legend(handles=handles, fontsize=8)
    ax.set_ylabel(f"FID ({data['extractor']['name']})")
    ax.set_title("Fidelity: synthetic vs real (lower is closer)")
    fig.tight_layout()
    return _save(fig, path)


def utility_plot(utility: dict, path: Path) -> Path:
    """The data-limited curves (macro AUC against the share of real training images, real only
    and with synthetic images under each protocol, 95% intervals shaded) beside the fixed
    conditions' AUCs with their intervals."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    curve = utility.get("curve") or []
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 7, 3.8), squeeze=False)
    if curve:
        ax = axes[0][0]
        series = [("real only", "mixing", "real_only", "#555555", "o"),
                  ("+ synthetic, mixing", "mixing", "with_synthetic", "#4c72b0", "s"),
                  ("+ synthetic, pretrain", "pretrain", "with_synthetic", "#dd8452", "^")]
        for name, protocol, condition, colour, marker in series:
            pts = sorted((p for p in curve if p["protocol"] == protocol and p["condition"] == condition),
                         key=lambda p: p["real_fraction"])
            if not pts:
                continue
            x = np.array([p["real_fraction"] * 100 for p in pts])
            y = np.array([np.nan if p["auc"] is None else p["auc"] for p in pts])
            lo = np.array([np.nan if p["ci_low"] is None else p["ci_low"] for p in pts])
            hi = np.array([np.nan if p["ci_high"] is None else p["ci_high"] for p in pts])
            ax.plot(x, y, marker=marker, color=colour, label=name)
            ax.fill_between(x, lo, hi, color=colour, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks([5, 10, 25, 50, 100], ["5%", "10%", "25%", "50%", "100%"])
        ax.set_xlabel("real training images (share of the real training split)")
        ax.set_ylabel("macro AUC on real test (95% CI)")
        ax.set_title("Data-limited utility")
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    rows = utility_rows(utility)
    x = np.arange(len(rows))
    auc = np.array([r["auc"] if r["auc"] is not None else np.nan for r in rows])
    lo = np.array([r["ci_low"] if r["ci_low"] is not None else np.nan for r in rows])
    hi = np.array([r["ci_high"] if r["ci_high"] is not None else np.nan for r in rows])
    ax.errorbar(x, auc, yerr=[np.nan_to_num(auc - lo), np.nan_to_num(hi - auc)], fmt="o",
                capsize=4, color="#4c72b0")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xticks(x, [r["trained on"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("macro AUC on real test (95% CI)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Utility: trained on ..., tested on real")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def nn_plot(synthetic: np.ndarray, real: np.ndarray, path: Path) -> Path:
    """Histograms of nearest-neighbour cosine similarity within synthetic and within real."""
    fig, ax = _figure()
    bins = np.linspace(min(np.nanmin(synthetic), np.nanmin(real)) if len(real) and len(synthetic)
                       else 0, 1, 41)
    for values, name, colour in ((synthetic, "synthetic-synthetic", "#4c72b0"),
                                 (real, "real-real", "#c44e52")):
        v = values[np.isfinite(values)]
        if len(v):
            ax.hist(v, bins=bins, alpha=0.6, density=True, label=name, color=colour)
    ax.set_xlabel("cosine similarity to nearest neighbour (same set)")
    ax.set_title("Diversity: near-duplicates sit at the right")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
