"""`synthdata evaluate` end to end: the real CLI and Prefect flow on shards of the demo spec
(built-in tiny model, noise images) against constructed labelled pictures (helpers.py)."""

from __future__ import annotations

import json
import stat

import pytest
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.evaluation import evaluation_section
from synthdata.fsutil import cache_root

pytestmark = pytest.mark.e2e


def _artifacts(keys: list[str]) -> dict:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys)), sort=ArtifactSort.CREATED_DESC)

    # other tests (the DVC evaluate stage) write the same keys earlier in the session:
    # the newest artifact per key is this module's evaluate run
    newest: dict = {}
    for artifact in asyncio.run(read()):
        newest.setdefault(artifact.key, artifact)
    return newest


ARGS = ["--features", "efficientnet-lite0", "--features", "pixel", "--utility", "--seed", "3"]


@pytest.fixture(scope="module")
def evaluated(demo_shards, real_folder, prefect_server):
    """The demo shards evaluated once through the CLI: (result, args)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_API_URL", prefect_server)
        args = ["evaluate", str(demo_shards), "--real", str(real_folder), *ARGS]
        return CliRunner().invoke(app, args), args


def test_evaluate_cli_writes_json_plots_card_and_private_cache(evaluated, demo_shards,
                                                              real_folder, prefect_server,
                                                              monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    runner = CliRunner()
    result, args = evaluated
    assert result.exit_code == 0, result.output
    evaluation = demo_shards / "evaluation" / "evaluation.json"
    data = json.loads(evaluation.read_text())

    assert data["shards"] == "raw" and data["extractor"]["name"] == "efficientnet-lite0"
    assert data["samples"]["synthetic"] == 32 and data["samples"]["real"] == 60
    for key in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage"):
        assert isinstance(data[key], float), key
    # noise images are far from the pictures; two halves of the pictures are close
    assert data["real_vs_real"]["fid"] < data["fid"]
    assert data["per_label"].keys() == {"effusion", "normal", "pneumonia"}
    assert data["per_extractor"].keys() == {"efficientnet-lite0", "pixel"}
    assert data["per_extractor"]["pixel"]["extractor"]["dim"] == 1024
    assert data["labels"] == {"mapping": {"effusion": "effusion", "normal": "normal",
                                          "pneumonia": "pneumonia"}, "real_only": []}
    intra = data["diversity"]["intra_prompt"]
    assert intra["pairs"] > 0 and intra["window"] == 3 and 0 <= intra["ms_ssim"] <= 1
    assert data["diversity"]["nearest_neighbour"]["synthetic"]["max"] <= 1.0 + 1e-6
    # the statistics of issue 22: interval, n per side, unbiased and extrapolated figures
    assert data["n"] == {"real": 60, "synthetic": 32}
    low, high = data["fid_ci"]
    assert low <= data["fid"] <= high and data["fid_resamples"] == 200
    assert isinstance(data["fd_inf"]["value"], float) and len(data["fd_inf"]["points"]) == 8
    for key in ("kid_unbiased", "cmmd"):
        assert data[key]["n_real"] == 60 and data[key]["n_synthetic"] == 32 and data[key]["se"] > 0
    floor, matched = data["real_vs_real"], data["matched"]
    assert floor["n"] == {"real_a": 30, "real_b": 30} and matched["n"] == {"real": 30, "synthetic": 30}
    assert len(floor["fid_draws"]) == floor["draws"] == 8
    assert floor["fid"] + 2 * floor["fid_std"] < matched["fid"]   # noise vs pictures, at equal n
    assert data["per_label"]["effusion"]["fid_ci"] is None          # 20 real pictures per label
    assert data["per_extractor"]["pixel"]["fid_ci"][0] is not None
    util = data["utility"]
    for name in ("real", "synthetic", "real_plus_synthetic"):
        assert set(util[name]) >= {"auc", "ci_low", "ci_high", "per_label", "n_train"}
    curve = util["curve"]
    assert {(p["real_fraction"], p["protocol"], p["condition"]) for p in curve} == {
        (f, p, c) for f in (0.05, 0.1, 0.25, 0.5, 1.0) for p in ("mixing", "pretrain")
        for c in ("real_only", "with_synthetic")}
    assert all(set(p) >= {"real_fraction", "protocol", "condition", "auc", "ci_low", "ci_high"}
               for p in curve)
    assert util["curve_protocol"]["classifier"].startswith("linear probe")   # no GPU: the CPU path
    assert set(util["real_limited"]) == {"10%", "25%"}
    assert util["real"]["auc"] > 0.9                      # the pictures are easy to tell apart
    assert util["protocol"]["n_test"] > 0
    assert str(real_folder) not in evaluation.read_text()  # no real path in the dataset folder

    for plot in ("fidelity.png", "nn_similarity.png", "utility.png"):
        assert (demo_shards / "evaluation" / plot).stat().st_size > 1000
    card = "\n".join(evaluation_section(demo_shards))
    assert card.startswith("## Evaluation against real images") and "real vs real (floor)" in card
    assert f"{data['fid']:.4g}" in card and "real_plus_synthetic" in card
    assert "FD at infinite n" in card and "Data-limited curves" in card and "| 5% | mixing |" in card
    artifacts = _artifacts(["demo-cxr-fidelity", "demo-cxr-evaluation"])
    assert artifacts["demo-cxr-fidelity"].type == "table" and "effusion" in str(artifacts["demo-cxr-fidelity"].data)
    assert "Utility" in artifacts["demo-cxr-evaluation"].data

    # real-image features are cached privately; synthetic shard features beside them
    private = cache_root() / "private" / "evaluation"
    files = [p for p in private.rglob("*.npz")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in {f.parent for f in files} | {private})
    assert list((cache_root() / "evaluation" / "features").rglob("*.npz"))

    # the same evaluation again: served from the caches, the same bytes
    before = evaluation.read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert runner.invoke(app, args).exit_code == 0
    assert evaluation.read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_evaluate_ranks_several_datasets_in_one_table(demo_shards, real_folder, tmp_path,
                                                    prefect_server, monkeypatch):
    """Two copies of the demo shards against the same pictures: one table, tied intervals;
    a dataset evaluated against another real set is refused."""
    import shutil

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    copies = [tmp_path / "a", tmp_path / "b"]
    for c in copies:
        shutil.copytree(demo_shards, c, ignore=shutil.ignore_patterns("evaluation"))
    out = tmp_path / "ranking.json"
    result = CliRunner().invoke(app, ["evaluate", *map(str, copies), "--real", str(real_folder),
                                      "--features", "pixel", "--compare-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ranked" in result.output and "ranking ->" in result.output
    table = json.loads(out.read_text())
    assert [r["dataset"] for r in table["rows"]] == ["a", "b"]
    assert table["rows"][0]["fid"] == table["rows"][1]["fid"] and table["rows"][0]["separated_from_next"] is False
    assert table["extractor"]["name"] == "pixel" and table["rows"][0]["n_synthetic"] == 32

    from synthdata.evaluation.compare import CompareError, compare

    data = json.loads((copies[1] / "evaluation" / "evaluation.json").read_text())
    data["real_set"]["fingerprint"] = "0" * 64
    (copies[1] / "evaluation" / "evaluation.json").write_text(json.dumps(data))
    with pytest.raises(CompareError, match="different real sets"):
        compare(copies)


def test_evaluate_refuses_unmatched_labels(demo_shards, tmp_path, prefect_server, monkeypatch):
    from helpers import labelled_images, write_imagefolder

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    real = write_imagefolder(tmp_path / "other", [(n, {"pneumonia": "nodule"}.get(lab, lab), im)
                                                  for n, lab, im in labelled_images(6)])
    result = CliRunner().invoke(app, ["evaluate", str(demo_shards), "--real", str(real),
                                      "--features", "pixel"])
    assert result.exit_code == 2
    assert "pneumonia have no real counterpart" in result.output
    assert "Traceback" not in result.output


def test_models_add_registers_a_trained_folder_with_its_evaluation(evaluated, demo_shards, tmp_path,
                                                                   monkeypatch):
    """`models add` on a pipeline folder (the built-in tiny pipeline's files) with a train.json
    holding the fields `add` reads (the whole file is `synthdata train`'s, issue 11), and the
    evaluation.json of the demo shards (generated by that pipeline) evaluated above."""
    assert evaluated[0].exit_code == 0
    import shutil

    from synthdata.catalog import get, rank
    from synthdata.generation.generators.builtin import ensure_builtin
    from synthdata.plan.load import load_spec_text

    train = tmp_path / "train-out"
    shutil.copytree(ensure_builtin("tiny"), train / "model")
    (train / "train.json").write_text(json.dumps({"name": "tiny-copy", "method": "full",
                                                  "base_fingerprint": "b" * 64,
                                                  "outputs": {"model": {"path": "model"}}}))
    user = tmp_path / "catalog"
    result = CliRunner().invoke(app, ["models", "add", str(train), "--evaluation", str(demo_shards),
                                      "--real-set-name", "pictures-60", "--modality", "X-ray",
                                      "--resolution", "64", "--catalog", str(user)])
    assert result.exit_code == 0, result.output
    entry = get("tiny-copy", user).entry
    figures = json.loads((demo_shards / "evaluation" / "evaluation.json").read_text())
    [ev] = entry.evaluations
    assert ev.metrics["fid"] == figures["fid"] and ev.extractor == "efficientnet-lite0"
    assert ev.real_set.fingerprint == figures["real_set"]["fingerprint"]
    assert ev.metrics["utility_synthetic_auc"] == figures["utility"]["synthetic"]["auc"]
    assert entry.training == {"method": "full", "base_fingerprint": "b" * 64}
    assert [t[0].entry.id for t in rank("fid", real_set="pictures-60", user=user)] == ["tiny-copy"]
    monkeypatch.setenv("SYNTHDATA_CATALOG", str(user))
    spec = load_spec_text("name: x\ncount: 1\nlabels: {a: {prompts: [p]}}\n"
                          "generator: {model: 'catalog:tiny-copy'}\n", "spec.yaml")
    assert spec.generator.model == str((train / "model").resolve()) and spec.generator.height == 64
    again = CliRunner().invoke(app, ["models", "add", str(tmp_path), "--catalog", str(user)])
    assert again.exit_code == 2 and "no readable train.json" in again.output
