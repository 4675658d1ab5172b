"""The package layering (pyproject.toml's import-linter contract, drawn in ARCHITECTURE.md):
`lint-imports` passes on the real package, every top-level package and module is in a layer,
and an upward import added to a copy of the package makes it fail, naming the chain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "synthdata"


def _lint(src_root: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src_root)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(config), "--no-cache"], cwd=src_root.parent,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def _layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def test_the_layers_contract_holds():
    done = _lint(REPO / "src", REPO / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_every_top_level_package_and_module_is_in_a_layer():
    layers = set(_layers())
    top = {f"synthdata.{p.stem}" for p in SRC.iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert top == layers, {"not in a layer": sorted(top - layers), "gone": sorted(layers - top)}


def test_an_upward_import_breaks_the_contract(tmp_path):
    """A copy of the package where the plan imports the dataset folder's card (upward)."""
    copy = tmp_path / "src" / "synthdata"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    seeds = copy / "plan" / "seeds.py"
    seeds.write_text(seeds.read_text() + "\nfrom synthdata.dataset import card  # noqa: E402\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    done = _lint(tmp_path / "src", tmp_path / "pyproject.toml")
    assert done.returncode != 0, done.stdout
    assert "synthdata.plan is not allowed to import synthdata.dataset" in done.stdout
    assert "synthdata.plan.seeds -> synthdata.dataset.card" in done.stdout
