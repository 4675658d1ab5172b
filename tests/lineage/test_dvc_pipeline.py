"""The root dvc.yaml in a temporary git + DVC repository: repro twice, partial reruns, push/pull.

Runs the real `synthdata` command line under `dvc repro` (Prefect flow included), on the demo
spec shrunk to one small shard with a tiny reference folder.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.lineage.conftest import DEMO_SPEC, REPO


pytestmark = pytest.mark.e2e


def _ran(stages) -> set[str]:
    return {s.name for s in stages}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".tar", ".parquet")}


@pytest.fixture
def project(tmp_path, prefect_server, monkeypatch) -> Path:
    """A git + DVC project with the repository's dvc.yaml/params.yaml and a one-shard spec."""
    from dvc.repo import Repo

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    root = tmp_path / "project"
    (root / "specs").mkdir(parents=True)
    (root / "real").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / "real" / f"r{i}.png")
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    # Relative to the spec's folder. Three reference images are too few to calibrate on
    # (threshold auto fails closed), so a number is configured.
    spec.update(count=8, shards={"size": 8},
                memorization={"reference": ["../real"], "threshold": 0.9})
    spec["generator"].update(steps=2, batch_size=4)
    (root / "specs" / "demo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    with Repo.init(str(root)) as repo, repo.config.edit() as conf:
        conf["remote"]["store"] = {"url": str(tmp_path / "remote")}
        conf["core"]["remote"] = "store"
    monkeypatch.chdir(root)
    return root


def test_repro_twice_partial_reruns_and_push_pull(project):
    from dvc.repo import Repo

    out = project / "datasets" / "demo-cxr"
    spec_file = project / "specs" / "demo.yaml"
    spec = yaml.safe_load(spec_file.read_text())

    def edit(section: str, **values) -> None:
        spec[section] = {**spec.get(section, {}), **values}
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))

    everything = {"resolve", "plan", "generate", "screen", "report"}
    with Repo(str(project)) as repo:
        assert _ran(repo.reproduce()) == everything
        assert (out / "stats.json").is_file() and (out / "manifest.parquet").is_file()
        assert repo.reproduce() == [], "second repro does nothing"

        edit("execution", workers=1)                 # performance only
        assert _ran(repo.reproduce()) == {"resolve"}
        edit("memorization", threshold=0.99)         # screening only
        assert _ran(repo.reproduce()) == {"resolve", "plan", "screen", "report"}
        assert yaml.safe_load((out / "spec.yaml").read_text())["memorization"]["threshold"] == 0.99
        edit("generator", steps=3)                   # the data
        assert _ran(repo.reproduce()) == everything
        assert repo.reproduce() == []

        before = _hashes(out)
        assert len([p for p in before if p.endswith(".tar")]) == 2
        assert repo.push() > 0
    shutil.rmtree(out)
    shutil.rmtree(project / ".dvc" / "cache")
    with Repo(str(project)) as repo:
        repo.pull()
        assert _hashes(out) == before, "pull restores byte-identical shards"
        assert repo.reproduce() == []
