"""Rank several evaluated datasets in one table: same real set, same extractor, with intervals.

`synthdata evaluate A B ... --real REF` evaluates each dataset folder (one flow each; the real
features are computed once and then come from the cache) and prints this table. Figures from
different real sets or extractors do not compare, so `compare` refuses a mix and names it.
Rows are ordered by FID (lower first); `separated` says whether a row's FID interval lies
entirely below the next row's, i.e. whether the ranking between the two is measured or a tie.
"""

from __future__ import annotations

from pathlib import Path

from synthdata.errors import SynthdataError
from synthdata.dataset.evaluation_section import read_evaluation


class CompareError(SynthdataError):
    """Datasets that cannot be compared (not evaluated, or against different sets/extractors)."""


def _interval(pair) -> list | None:
    return list(pair) if pair and None not in pair else None


def row(name: str, data: dict) -> dict:
    """One dataset's figures for the comparison table."""
    util = (data.get("utility") or {}).get("synthetic") or {}
    kid = data.get("kid_unbiased") or {}
    cm = data.get("cmmd") or {}
    return {"dataset": name, "n_synthetic": (data.get("n") or {}).get("synthetic",
                                                                     data["samples"]["synthetic"]),
            "n_real": (data.get("n") or {}).get("real", data["samples"]["real"]),
            "fid": data.get("fid"), "fid_ci": _interval(data.get("fid_ci")),
            "fd_inf": (data.get("fd_inf") or {}).get("value"),
            "kid_unbiased": kid.get("value"), "kid_se": kid.get("se"),
            "cmmd": cm.get("value"), "cmmd_se": cm.get("se"),
            "precision": data.get("precision"), "recall": data.get("recall"),
            "floor_fid": (data.get("real_vs_real") or {}).get("fid"),
            "utility_synthetic_auc": util.get("auc"),
            "utility_synthetic_ci": _interval([util.get("ci_low"), util.get("ci_high")]) if util else None}


def compare(out_dirs: list[str | Path]) -> dict:
    """{real_set, extractor, rows (best first), warnings} for evaluated dataset folders."""
    loaded = []
    for d in out_dirs:
        data = read_evaluation(d)
        if data is None:
            raise CompareError(f"{d}: no evaluation/evaluation.json; run `synthdata evaluate {d} --real ...`")
        loaded.append((Path(d).name, data))
    real = {data["real_set"]["fingerprint"] for _, data in loaded}
    extractor = {data["extractor"]["fingerprint"] for _, data in loaded}
    if len(real) > 1 or len(extractor) > 1:
        detail = "; ".join(f"{name}: real set {data['real_set']['fingerprint'][:12]}, extractor "
                           f"{data['extractor']['name']} {data['extractor']['fingerprint'][:12]}"
                           for name, data in loaded)
        raise CompareError(f"datasets were evaluated against different real sets or extractors and "
                           f"do not compare: {detail}")
    rows = sorted((row(name, data) for name, data in loaded),
                  key=lambda r: (r["fid"] is None, r["fid"] if r["fid"] is not None else 0, r["dataset"]))
    for here, below in zip(rows, rows[1:] + [None]):
        here["separated_from_next"] = None if below is None or not here["fid_ci"] or not below["fid_ci"] \
            else bool(here["fid_ci"][1] < below["fid_ci"][0])
    warnings = sorted({w for _, data in loaded for w in (data.get("separability") or {}).get("warnings", [])})
    first = loaded[0][1]
    return {"real_set": first["real_set"]["fingerprint"], "extractor": first["extractor"],
            "rows": rows, "warnings": warnings}
