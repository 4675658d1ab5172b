"""The root dvc.yaml's `evaluate` stage in a temporary git + DVC project, with the real `dvc`
and `synthdata`: the demo spec shrunk to one shard of 8 (built-in tiny model, no screening
reference) evaluated against constructed pictures (helpers.py) named in evaluate_inputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import labelled_images, write_imagefolder

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_evaluate_stage_is_a_dvc_metric(tmp_path, prefect_server, monkeypatch):
    from dvc.repo import Repo

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    root = tmp_path / "project"
    (root / "specs").mkdir(parents=True)
    write_imagefolder(root / "data" / "real", labelled_images(6))
    spec = yaml.safe_load((REPO / "specs" / "demo-tiny.yaml").read_text())
    spec.update(count=8, shards={"size": 8}, memorization={"reference": []}, execution={"workers": 1})
    spec["generator"].update(steps=2, batch_size=8)
    (root / "specs" / "demo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["evaluate_inputs"] == {}, "no evaluate stage unless a real set is named"
    params["evaluate_inputs"] = {"real": "data/real"}
    params.update(out="datasets/demo-cxr", work="build/dvc/demo-cxr")  # the tiny spec's dataset
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    Repo.init(str(root)).close()
    monkeypatch.chdir(root)

    metric = "datasets/demo-cxr/evaluation/evaluation.json"
    with Repo(str(root)) as repo:
        ran = {s.name for s in repo.reproduce("evaluate@real")}
        assert {"resolve", "plan", "generate", "screen", "evaluate@real"} <= ran
        shown = repo.metrics.show()[""]["data"][metric]["data"]
        assert shown["fid"] > shown["real_vs_real"]["fid"] and shown["samples"]["synthetic"] == 8
        assert repo.reproduce("evaluate@real") == [], "nothing changed: nothing reruns"
        (root / "data" / "real" / "normal" / "normal-000.png").unlink()   # the real set changed
        assert {s.name for s in repo.reproduce("evaluate@real")} == {"evaluate@real"}
        assert repo.metrics.show()[""]["data"][metric]["data"]["samples"]["real"] == 17
