"""Requested vs planned vs realized joint distributions, the plot and the card section."""

from __future__ import annotations

import json
import tarfile
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from synthdata.dataset.cohort_summary import (
    cohort_report,
    cohort_section,
    decade,
    requested_cells,
    write_cohort_report,
)
from synthdata.folder import DatasetFolder


def test_requested_planned_and_generated_agree(generated_cohort):
    spec, out = generated_cohort
    folder = DatasetFolder(out)
    summary = json.loads(folder.cohort_file.read_text())
    assert summary["table"]["name"] == "nih_cxr14_1000.csv" and summary["table"]["rows"] == 1000
    assert [d for d, _ in summary["dimensions"]] == ["sex", "age_decade", "decade"]
    report = write_cohort_report(folder)
    assert report["realized_from"] == "generated", "no screening ran: the generated samples count"
    plan = pq.read_table(folder.plan_file).to_pandas()
    assert {k: v["planned"] for k, v in report["labels"].items()} == dict(Counter(plan["label"]))
    assert all(v["realized"] == v["planned"] for v in report["labels"].values())
    assert sum(c["realized"] for c in report["cells"]) == 16
    for label, entry in report["labels"].items():
        assert abs(entry["requested"] - entry["planned"]) < 1e-6, "label counts are exact"
    assert report["tvd"]["planned_vs_requested"] == report["tvd"]["realized_vs_requested"]
    assert 0 <= report["tvd"]["planned_vs_requested"] < 0.5
    on_disk = json.loads(folder.cohort_report_file.read_text())
    assert on_disk["labels"] == report["labels"]
    image = Image.open(folder.cohort_plot_file)
    assert image.size[0] == 960 and np.asarray(image).std() > 0


def test_requested_cells_follow_the_table_and_stratification(generated_cohort):
    spec, _ = generated_cohort
    big = spec.model_copy(update={"count": 600})
    cells = requested_cells(big)
    assert abs(sum(cells.values()) - 600) < 1e-6
    import pandas as pd

    table = pd.read_csv(spec.cohort.table)
    male = (table["Patient Gender"] == "M").mean()
    requested_male = sum(v for c, v in cells.items() if c[1] == "male") / 600
    assert abs(requested_male - male) < 0.01, "stratified by sex: the table's share, to rounding"
    from synthdata.plan import rows as plan

    rows = plan.derive_rows(big, 0, 600).to_pandas()
    planned = Counter((r.label, json.loads(r.vars)["sex"], decade(json.loads(r.vars)["age"]))
                      for r in rows.itertuples())
    by_stratum = Counter()
    for (label, sex, dec, _), v in cells.items():
        by_stratum[(label, sex, dec)] += v
    assert max(abs(planned[c] - v) for c, v in by_stratum.items()) < 1.0 + 1e-9, \
        "stratified by sex x decade: every cell within rounding of its request"


def test_realized_counts_only_accepted_samples_once_screened(generated_cohort, tmp_path, monkeypatch):
    """Real screening (pixel embedder; two real pydicom test images as the reference; the
    threshold set at the median similarity so some samples are rejected): realized counts the
    accepted rows only."""
    import shutil
    from pathlib import Path

    import pydicom


    from synthdata.dataset.manifest import write_manifest
    from synthdata.screening.pipeline import screen_dataset
    from synthdata.spec.models import Memorization

    _, out = generated_cohort
    monkeypatch.setenv("SYNTHDATA_CACHE", str(tmp_path / "cache"))  # keep the session's screening cache as it is
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    reference = tmp_path / "real"
    reference.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / name, reference / name)
    cfg = Memorization(reference=[str(reference)], threshold=1.0)
    screen_dataset(copy, cfg)
    median = float(np.median(pq.read_table(copy / "screening.parquet")["similarity"].to_numpy()))
    screen_dataset(copy, cfg, threshold=median)
    write_manifest(copy)
    manifest = pq.read_table(copy / "manifest.parquet").to_pandas()
    accepted = Counter(manifest[manifest["accepted"] == True]["label"])  # noqa: E712
    assert 0 < sum(accepted.values()) < 16, manifest["decision"].tolist()
    report = cohort_report(copy)
    assert report["realized_from"] == "accepted"
    assert {k: v["realized"] for k, v in report["labels"].items() if v["realized"]} == dict(accepted)


def test_card_section(generated_cohort):
    _, out = generated_cohort
    write_cohort_report(out)
    text = "\n".join(cohort_section(out))
    assert text.startswith("## Cohort") and "nih_cxr14_1000.csv" in text
    assert "| label | requested | planned | generated |" in text
    assert "![requested vs realized](report/cohort.png)" in text
    assert cohort_section(out.parent / "nothing") == []


def test_tars_hold_no_pseudonyms(generated_cohort):
    """KEY.json holds the row's mapped values but nothing machine-local (source_row pseudonyms)."""
    _, out = generated_cohort
    plan = pq.read_table(out / "plan.parquet").to_pandas()
    with tarfile.open(out / "raw" / "shard-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    text = json.dumps(metas)
    assert not any(p in text for p in plan["source_row"]) and "p-" not in text
    by_key = {r.key: json.loads(r.vars) for r in plan.itertuples()}
    assert all(m["vars"] == by_key[m["key"]] for m in metas)
