"""Utility: does training on the synthetic images help a classifier of real images? A fixed protocol.

Classifiers are trained on frozen features (the evaluation's extractor) with a linear model,
`StandardScaler` + multinomial `LogisticRegression` (scikit-learn, lbfgs, C=1, up to 2000
iterations), under five training conditions, and all evaluated on the same held-out real test
split:

- `real`: the real training split;
- `real_limited`: `{"10%": ..., "25%": ...}`, a seeded stratified subsample of the real
  training split (at least one image per label);
- `synthetic`: the synthetic images only;
- `real_plus_synthetic`: the real training split plus the synthetic images.

Each condition reports `auc` (macro one-vs-rest ROC AUC over the labels), `ci_low` and
`ci_high` (95% percentile bootstrap over the test set's *patients* when their groups are given,
else its images; `bootstrap` resamples, the same resamples for every condition so they compare
paired), `per_label` (the same per label) and `n_train`. Everything is seeded: the same
features and seed give identical numbers. The data-limited curves and the pre-training
protocol are `curves.py`.
"""

from __future__ import annotations

import re

import numpy as np

from synthdata.errors import SynthdataError
from synthdata.evaluation.bootstrap import bootstrap_weights
from synthdata.evaluation.bootstrap import weighted_auc

LIMITED = (("10%", 0.10), ("25%", 0.25))
BOOTSTRAP = 1000
CONDITIONS = ("real", "real_limited", "synthetic", "real_plus_synthetic")


class LabelMappingError(SynthdataError):
    """Synthetic labels that have no real counterpart."""


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def match_labels(synthetic: list[str], real: list[str]) -> dict[str, str]:
    """synthetic label -> real label, matched by name (case, spaces, - and _ ignored).

    Raises LabelMappingError naming every synthetic label without a real match.
    """
    real_by_norm = {_norm(r): r for r in real}
    mapping, missing = {}, []
    for label in sorted(set(synthetic)):
        if _norm(label) in real_by_norm:
            mapping[label] = real_by_norm[_norm(label)]
        else:
            missing.append(label)
    if missing:
        raise LabelMappingError(
            f"synthetic label(s) {', '.join(missing)} have no real counterpart; the real set's "
            f"labels are {', '.join(sorted(real))} (labels are matched by name)")
    return mapping


def auc_matrix(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U from average ranks); NaN where a row has one class.

    scores, positive: (B, n) arrays. Equal to sklearn's roc_auc_score row by row.
    """
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1).astype(np.float64)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 n_labels: int, seed: int) -> np.ndarray:
    """Class probabilities (n_test, n_labels); labels absent from training get probability 0."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros((len(x_test), n_labels))
    classes = np.unique(y_train)
    if len(classes) == 1:
        out[:, classes[0]] = 1.0
        return out
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000,
                                                               random_state=seed))
    model.fit(x_train, y_train)
    out[:, model.classes_] = model.predict_proba(x_test)
    return out


def _score(probs: np.ndarray, y_test: np.ndarray, labels: list[str], weights: np.ndarray) -> dict:

    per_label, boot_aucs = {}, []
    for j, label in enumerate(labels):
        pos = (y_test == j)
        point = auc_matrix(probs[None, :, j], pos[None, :])[0]
        b = weighted_auc(probs[:, j], pos, weights)
        boot_aucs.append(b)
        lo, hi = (np.nanpercentile(b, [2.5, 97.5]) if np.isfinite(b).any() else (np.nan, np.nan))
        per_label[label] = {"auc": _num(point), "ci_low": _num(lo), "ci_high": _num(hi)}
    points = [v["auc"] for v in per_label.values() if v["auc"] is not None]
    macro_boot = np.nanmean(np.stack(boot_aucs), axis=0) if boot_aucs else np.array([np.nan])
    finite = macro_boot[np.isfinite(macro_boot)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    return {"auc": _num(np.mean(points)) if points else None, "ci_low": _num(lo),
            "ci_high": _num(hi), "per_label": per_label}


def _num(x) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None


def _limited(y: np.ndarray, fraction: float, n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified seeded subsample: round(fraction * n) per label, at least 1."""
    keep = []
    for j in range(n_labels):
        idx = np.flatnonzero(y == j)
        if len(idx):
            n = max(1, int(round(fraction * len(idx))))
            keep.append(np.sort(rng.choice(idx, size=n, replace=False)))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)


def utility(x_real: np.ndarray, y_real: list[str], x_test: np.ndarray, y_test: list[str],
            x_synth: np.ndarray, y_synth: list[str], *, seed: int = 0,
            bootstrap: int = BOOTSTRAP, groups_test: list[str] | None = None) -> dict:
    """The protocol of the module docstring; labels are the real training labels' names.
    `groups_test`: the test images' patients (the bootstrap then resamples patients)."""

    labels = sorted(set(y_real) | set(y_test))
    index = {lab: i for i, lab in enumerate(labels)}
    yr = np.array([index[v] for v in y_real])
    yt = np.array([index[v] for v in y_test])
    ys = np.array([index[v] for v in y_synth])
    rng = np.random.default_rng(seed)
    boot = bootstrap_weights(groups_test, len(yt), bootstrap, rng)
    n = len(labels)

    def run(x: np.ndarray, y: np.ndarray) -> dict:
        probs = _fit_predict(x, y, x_test, n, seed)
        return {**_score(probs, yt, labels, boot), "n_train": int(len(y))}

    out: dict = {"real": run(x_real, yr)}
    out["real_limited"] = {}
    for name, fraction in LIMITED:
        keep = _limited(yr, fraction, n, np.random.default_rng([seed, int(fraction * 100)]))
        out["real_limited"][name] = run(x_real[keep], yr[keep])
    out["synthetic"] = run(x_synth, ys)
    out["real_plus_synthetic"] = run(np.concatenate([x_real, x_synth]), np.concatenate([yr, ys]))
    out["protocol"] = {"classifier": "StandardScaler + LogisticRegression(C=1, lbfgs)",
                       "features": "frozen (evaluation extractor)", "bootstrap": bootstrap,
                       "seed": seed, "labels": labels, "n_test": int(len(yt)),
                       "resampled": "patients" if groups_test is not None else "images",
                       "n_test_groups": int(len(set(groups_test))) if groups_test is not None
                       else int(len(yt)),
                       "limited_fractions": [name for name, _ in LIMITED]}
    return out
