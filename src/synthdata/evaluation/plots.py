"""Evaluation plots (matplotlib, headless): fidelity per label, utility with intervals, NN similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthdata.fsutil import atomic_path


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
    """FID overall, per label and the real-vs-real floor, as bars."""
    names = ["all"] + list(data.get("per_label", {}))
    values = [data.get("fid")] + [m.get("fid") for m in data.get("per_label", {}).values()]
    fig, ax = _figure()
    ax.bar(names, [v if v is not None else 0 for v in values], color="#4c72b0")
    floor = data["real_vs_real"].get("fid")
    if floor is not None:
        ax.axhline(floor, color="#c44e52", linestyle="--", label=f"real vs real {floor:.3g}")
        ax.legend()
    ax.set_ylabel(f"FID ({data['extractor']['name']})")
    ax.set_title("Fidelity: synthetic vs real (lower is closer)")
    fig.tight_layout()
    return _save(fig, path)


def utility_plot(utility: dict, path: Path) -> Path:
    """Macro AUC with its 95% interval per training condition."""
    from synthdata.evaluation.report import utility_rows

    rows = utility_rows(utility)
    fig, ax = _figure()
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
    ax.set_title("Utility: classifier trained on ... evaluated on held-out real images")
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
