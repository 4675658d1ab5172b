"""Planning cost of cohort specs: table read + index build, and plan rows/s vs a plain spec.

    python benchmarks/bench_cohort_plan.py [--table tests/data/nih_cxr14_3000.csv] [--count 200000]

The table is an NIH ChestX-ray14-shaped CSV (the vendored extract, or the full
Data_Entry_2017_v2020.csv.gz read from the torchxrayvision wheel). Three specs of the same
count and prompts: plain (independent variables), cohort (mirror, stratified by sex x decade)
and cohort with a patient column (pseudonyms computed per row).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import emit

REPO = Path(__file__).resolve().parents[1]

PLAIN = """\
name: plain
seed: 7
count: {count}
labels:
  normal: {{weight: 0.54, prompts: ["{{view}} x-ray, {{age}} year old {{sex}}, normal"]}}
  effusion: {{weight: 0.12, prompts: ["{{view}} x-ray, {{age}} year old {{sex}}, effusion"]}}
  other: {{weight: 0.34, prompts: ["{{view}} x-ray, {{age}} year old {{sex}}, other"]}}
vars: {{sex: [female, male], age: {{min: 1, max: 95}}, view: [PA, AP], decade: [a, b]}}
generator: {{height: 64, width: 64}}
"""

COHORT = """\
name: cohort
seed: 7
count: {count}
cohort:
  table: {table}
  {patient}
  columns:
    sex: {{column: Patient Gender, values: {{M: male, F: female}}}}
    age: Patient Age
    decade: {{column: Patient Age, bins: decade}}
    view: View Position
  stratify: {{by: [sex, decade]}}
labels:
  normal: {{where: 'Finding_Labels == "No Finding"', prompts: ["{{view}} x-ray, {{age}} year old {{sex}}, normal"]}}
  effusion: {{where: '"Effusion" in Finding_Labels', prompts: ["{{view}} x-ray, {{age}} year old {{sex}}, effusion"]}}
  other: {{where: 'true', prompts: ["{{view}} x-ray, {{age}} year old {{sex}}, other"]}}
generator: {{height: 64, width: 64}}
"""


def timed_plan(text: str) -> dict:
    from synthdata.plan import rows as plan
    from synthdata.plan.cohort import table as table_module
    from synthdata.plan.load import load_spec_text

    table_module._CACHE.clear()
    import synthdata.plan.cohort as cohort_module

    cohort_module._CACHE.clear()
    t0 = time.perf_counter()
    spec = load_spec_text(text)
    t1 = time.perf_counter()
    n = plan.total_count(spec)
    digest = plan.plan_hash(spec)
    t2 = time.perf_counter()
    return {"load_and_index_s": round(t1 - t0, 3), "plan_s": round(t2 - t1, 3),
            "rows_per_s": round(n / (t2 - t1)), "rows": n, "plan_hash": digest[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--table", default=str(REPO / "tests" / "data" / "nih_cxr14_3000.csv"))
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("SYNTHDATA_CACHE", tempfile.mkdtemp(prefix="bench-cohort-"))
    table = Path(args.table).resolve()
    result = {
        "table": table.name, "count": args.count,
        "plain": timed_plan(PLAIN.format(count=args.count)),
        "cohort": timed_plan(COHORT.format(count=args.count, table=table, patient="")),
        "cohort_pseudonyms": timed_plan(COHORT.format(count=args.count, table=table,
                                                      patient="patient_column: Patient ID")),
    }
    result["cohort_vs_plain_plan_time"] = round(result["cohort"]["plan_s"] / result["plain"]["plan_s"], 2)
    emit("cohort_plan", result, args.record)


if __name__ == "__main__":
    main()
