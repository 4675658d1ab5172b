"""One extractor's fidelity block of evaluation.json: the headline figures with their statistics,
the floor at equal n, per label and per subgroup.

    fid, kid, kid_std, precision, recall, density, coverage, n_real, n_synthetic   (full sets)
    n {real, synthetic}
    fid_ci [low, high], fid_std, fid_resamples,       bootstrap, real images by patient,
    fid_resample_shift                                 re-centred on the estimate (fidstats.py)
    fd_inf {value, slope, points}                      FID extrapolated to infinite n
    kid_unbiased {value, se, n_real, n_synthetic}      all images, grouped jackknife SE
    cmmd {value, se, sigma, n_real, n_synthetic}       RBF MMD² x 1000, median real bandwidth
    matched {fid, fid_std, fid_draws, kid, ..., n}     synthetic vs real at the floor's n
    real_vs_real {fid, fid_std, fid_draws, ..., n, draws}   the floor at equal n
    per_label {label: fidelity + fid_ci (where n allows) + note}
    subgroups {attribute: {value: {n_real, n_synthetic, fid, fid_ci, precision, recall, note}}}
    separability {fid_ci_width, warning}               can this n tell two models apart?
"""

from __future__ import annotations

import numpy as np

from synthdata.evaluation import metrics
from synthdata.evaluation.fidstats import (FID_BOOTSTRAP, fd_infinity, fid_interval,
                                           matched_floor)
from synthdata.evaluation.mmd import cmmd, kid_unbiased
from synthdata.evaluation.subgroups import MIN_N_INTERVAL, subgroups

# Measured on the phantom world (benchmarks/RESULTS.md section 14): the smallest number of
# synthetic images per model at which the FID intervals of builtin:phantom and builtin:tiny
# stop overlapping with builtin:phantom-encoder features. Below it, no FID difference between
# two models is worth reading.
MIN_N_SEPARATE = 20


def _ci(values) -> list:
    return [None if v is None else float(v) for v in values]


def separability(n_synthetic: int, fid_value: float | None, ci: list, floor: dict) -> dict:
    """How finely this evaluation can rank models, and a warning when it cannot."""
    width = None if None in ci else ci[1] - ci[0]
    out: dict = {"fid_ci_width": width, "min_n_separate": MIN_N_SEPARATE, "warnings": []}
    if n_synthetic < MIN_N_SEPARATE:
        out["warnings"].append(
            f"{n_synthetic} synthetic images: fewer than {MIN_N_SEPARATE}, the n below which even "
            "a trained and a noise model were not told apart on the phantom world; do not rank "
            "models on these figures")
    if width is not None and fid_value is not None and width > 0.2 * abs(fid_value):
        out["warnings"].append(
            f"FID's 95% interval is {width:.3g} wide at this n: models whose FIDs differ by less "
            "than that are not separated (compare intervals, not points)")
    fl_mean, fl_std = floor.get("fid"), floor.get("fid_std")
    if ci[0] is not None and fl_mean is not None and fl_std is not None and ci[0] <= fl_mean + 2 * fl_std:
        out["warnings"].append("FID's interval reaches the real-vs-real floor: at this n the "
                               "dataset is not distinguishable from real images by this extractor")
    return out


def per_label(real_x: np.ndarray, real_labels: list[str], real_groups: list[str],
              synth_x: np.ndarray, synth_labels: list[str], seed: int) -> dict:
    """Fidelity of each label's synthetic images against that label's real images, with FID's
    interval where both sides have enough images (else a note saying so)."""
    out = {}
    rl, sl = np.array(real_labels), np.array(synth_labels)
    for label in sorted(set(synth_labels)):
        ri, si = np.flatnonzero(rl == label), np.flatnonzero(sl == label)
        block = metrics.fidelity(real_x[ri], synth_x[si], seed=seed,
                                 kid_subsets=metrics.KID_SUBSETS_DETAIL)
        if block.get("fid") is not None and min(len(ri), len(si)) >= MIN_N_INTERVAL:
            block["fid_ci"] = _ci(fid_interval(real_x[ri], synth_x[si],
                                               real_groups=[real_groups[i] for i in ri],
                                               resamples=100, seed=seed)["ci"])
        else:
            block["fid_ci"] = None
            block.setdefault("notes", []).append(
                f"no FID interval: {min(len(ri), len(si))} images on one side (< {MIN_N_INTERVAL})")
        out[label] = block
    return out


def fidelity_block(real_x: np.ndarray, real_labels: list[str], real_groups: list[str],
                   real_attrs: list[dict], synth_x: np.ndarray, synth_labels: list[str],
                   synth_attrs: list[dict], *, seed: int = 0,
                   resamples: int = FID_BOOTSTRAP) -> dict:
    """The block of the module docstring for one extractor's features (labels already mapped
    to the real names)."""
    out = metrics.fidelity(real_x, synth_x, seed=seed)
    out["n"] = {"real": int(len(real_x)), "synthetic": int(len(synth_x))}
    notes = list(out.pop("notes", []))
    if out.get("fid") is not None:
        interval = fid_interval(real_x, synth_x, real_groups=real_groups, resamples=resamples, seed=seed)
        out.update({"fid_ci": _ci(interval["ci"]), "fid_std": interval["std"],
                    "fid_resamples": resamples, "fid_resample_shift": interval["shift"]})
        out["fd_inf"] = fd_infinity(real_x, synth_x, real_groups=real_groups, seed=seed) \
            if min(len(real_x), len(synth_x)) >= 10 else None
    else:
        out["fid_ci"], out["fd_inf"] = [None, None], None
    for key, fn in (("kid_unbiased", kid_unbiased), ("cmmd", cmmd)):
        try:
            out[key] = fn(real_x, synth_x, real_groups=real_groups, seed=seed)
        except ValueError as exc:
            out[key] = None
            notes.append(f"{key}: {exc}")
    try:
        floor = matched_floor(real_x, synth_x, real_groups=real_groups, seed=seed,
                              kid_subsets=metrics.KID_SUBSETS_DETAIL)
        n = floor["n"]
        out["real_vs_real"] = {**floor["real_vs_real"], "n": {"real_a": n["real_a"], "real_b": n["real_b"]},
                               "draws": floor["draws"]}
        out["matched"] = {**floor["synthetic_vs_real"], "n": {"real": n["real_a"],
                                                               "synthetic": n["synthetic"]},
                          "draws": floor["draws"]}
    except ValueError as exc:
        out["real_vs_real"] = {"fid": None, "notes": [str(exc)]}
        out["matched"] = None
    out["per_label"] = per_label(real_x, real_labels, real_groups, synth_x, synth_labels, seed)
    out["subgroups"] = subgroups(real_x, real_attrs, real_groups, synth_x, synth_attrs, seed=seed)
    out["separability"] = separability(len(synth_x), out.get("fid"), out["fid_ci"], out["real_vs_real"])
    if notes:
        out["notes"] = notes
    return out
