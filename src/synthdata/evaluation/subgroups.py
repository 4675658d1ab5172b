"""Fidelity per subgroup: is the model worse for one label, sex, age decade, view, cohort value?

A subgroup is the images with one value of one attribute on both sides: the label, and every
attribute the real set's table (or tar JSON) and the synthetic samples' variables (`vars` of
each sample's JSON: sex, age, view, any cohort variable) share by name (case, spaces, `-`, `_`
ignored). Ages become decades ("40-49"). An attribute with more than `MAX_VALUES` values is
left out (it is an identifier, not a subgroup) and said so.

Each subgroup reports n per side, FID, precision and recall, and FID's bootstrap interval (real
images resampled by patient) when both sides have at least `MIN_N_INTERVAL` images. With fewer
it says so instead of printing an interval; with fewer than `MIN_N_FIGURES` no figure is
computed at all. `MIN_N_INTERVAL` is measured on the phantom world (benchmarks/RESULTS.md
section 14): from 20 synthetic images on, the FID intervals of builtin:phantom and builtin:tiny
(a trained and a noise model) no longer overlapped; at 10 they did, so an interval there says
nothing a reader can use.

FID's small-n bias differs between subgroups of different sizes (on the phantom world
builtin:phantom's FID was 100 at 20 images, 44 at 50 and 35 at 200), so raw subgroup FIDs
compare badly. `fid_common_n` puts every value of an attribute on the same footing: FID of
the same numbers of real and synthetic images (the attribute's smallest subgroup that has
figures), mean over 3 seeded draws; `common_n` records them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from synthdata.evaluation import metrics
from synthdata.evaluation.fidstats import fid_interval

MIN_N_FIGURES = 10
MIN_N_INTERVAL = 20
COMMON_N_DRAWS = 3
MAX_VALUES = 20
SUBGROUP_BOOTSTRAP = 100


def norm(name: str) -> str:
    """Attribute names compare without case, spaces, - and _."""
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def bucket(name: str, value) -> str | None:
    """The subgroup value of an attribute: ages as decades, everything else as text."""
    if value is None or str(value).strip() in ("", "nan", "None"):
        return None
    if norm(name) == "age":
        try:
            decade = int(float(value)) // 10 * 10
        except ValueError:
            return str(value)
        return f"{decade}-{decade + 9}"
    return str(value).strip()


def shared_attributes(real: Sequence[dict], synthetic: Sequence[dict]) -> dict[str, tuple[str, str]]:
    """{display name: (real key, synthetic key)} for attributes present on both sides."""
    real_keys = {norm(k): k for row in real for k in row}
    synth_keys = {norm(k): k for row in synthetic for k in row}
    return {synth_keys[n]: (real_keys[n], synth_keys[n]) for n in sorted(set(real_keys) & set(synth_keys))}


def subgroup_block(real_x: np.ndarray, real_values: Sequence[str | None], real_groups: Sequence[str],
                   synth_x: np.ndarray, synth_values: Sequence[str | None], *, seed: int = 0,
                   resamples: int = SUBGROUP_BOOTSTRAP) -> dict:
    """{value: {n_real, n_synthetic, fid, fid_ci, precision, recall, note}} for one attribute."""
    rv = np.array([v if v is not None else "\0" for v in real_values], dtype=object)
    sv = np.array([v if v is not None else "\0" for v in synth_values], dtype=object)
    out = {}
    for value in sorted((set(rv) & set(sv)) - {"\0"}):
        ri, si = np.flatnonzero(rv == value), np.flatnonzero(sv == value)
        entry: dict = {"n_real": int(len(ri)), "n_synthetic": int(len(si))}
        n = min(len(ri), len(si))
        if n < MIN_N_FIGURES:
            entry["note"] = f"n too small for any figure ({n} < {MIN_N_FIGURES} images on one side)"
            out[value] = entry
            continue
        fig = metrics.fidelity(real_x[ri], synth_x[si], seed=seed, kid_subsets=metrics.KID_SUBSETS_DETAIL)
        entry.update({k: fig.get(k) for k in ("fid", "precision", "recall")})
        if n >= MIN_N_INTERVAL:
            entry["fid_ci"] = fid_interval(real_x[ri], synth_x[si],
                                           real_groups=[real_groups[i] for i in ri],
                                           resamples=resamples, seed=seed)["ci"]
        else:
            entry["fid_ci"] = None
            entry["note"] = (f"no interval: {n} images on one side (< {MIN_N_INTERVAL}); "
                             "differences between subgroups this small are not measurable")
        out[value] = entry
    return out


def common_n(real_x: np.ndarray, real_values: Sequence[str | None], synth_x: np.ndarray,
             synth_values: Sequence[str | None], block: dict, *, seed: int = 0) -> dict:
    """Add `fid_common_n` to each value of an attribute's block (see the module docstring);
    returns {real, synthetic}: the common numbers of images (or {} with fewer than 2 values)."""
    scored = [v for v, m in block.items() if m.get("fid") is not None]
    if len(scored) < 2:
        return {}
    n_real = min(block[v]["n_real"] for v in scored)
    n_syn = min(block[v]["n_synthetic"] for v in scored)
    rv, sv = np.asarray(real_values, dtype=object), np.asarray(synth_values, dtype=object)
    for value in scored:
        ri, si = np.flatnonzero(rv == value), np.flatnonzero(sv == value)
        fids = []
        for d in range(COMMON_N_DRAWS):
            rng = np.random.default_rng([seed, 53, d])
            fids.append(metrics.fid(real_x[np.sort(rng.choice(ri, n_real, replace=False))],
                                    synth_x[np.sort(rng.choice(si, n_syn, replace=False))]))
        block[value]["fid_common_n"] = float(np.mean(fids))
    return {"real": int(n_real), "synthetic": int(n_syn)}


def subgroups(real_x: np.ndarray, real_attrs: Sequence[dict], real_groups: Sequence[str],
              synth_x: np.ndarray, synth_attrs: Sequence[dict], *, seed: int = 0,
              resamples: int = SUBGROUP_BOOTSTRAP) -> dict:
    """{attribute: {value: ..., common_n}} for every shared attribute, plus `notes` for those
    left out."""
    out: dict = {}
    notes = []
    for name, (rk, sk) in shared_attributes(real_attrs, synth_attrs).items():
        rv = [bucket(rk, row.get(rk)) for row in real_attrs]
        sv = [bucket(sk, row.get(sk)) for row in synth_attrs]
        distinct = {v for v in rv + sv if v is not None}
        if len(distinct) > MAX_VALUES:
            notes.append(f"{name}: {len(distinct)} values (> {MAX_VALUES}); not a subgroup")
            continue
        block = subgroup_block(real_x, rv, real_groups, synth_x, sv, seed=seed, resamples=resamples)
        if block:
            shared = common_n(real_x, rv, synth_x, sv, block, seed=seed)
            out[name] = {**block, "common_n": shared} if shared else block
    if notes:
        out["notes"] = notes
    return out
