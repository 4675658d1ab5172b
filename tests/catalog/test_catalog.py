"""The model catalogue: shipped entries validate, catalog: expansion, rank, models verbs."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from synthdata.catalog import CatalogError, entries, entry_schema, get, rank
from synthdata.catalog.store import SHIPPED, load_entry
from synthdata.cli import app
from synthdata.errors import SpecError
from synthdata.plan.load import load_spec_text

SPEC = """\
name: cat-demo
count: 2
labels:
  normal: {{prompts: ["a chest x-ray"]}}
generator:
  model: {model}
{extra}"""


def _spec(model: str, **fields):
    extra = "".join(f"  {k}: {v}\n" for k, v in fields.items())
    return load_spec_text(SPEC.format(model=model, extra=extra), "spec.yaml")


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_entry_validates_against_the_json_schema(path):
    data = yaml.safe_load(path.read_text())
    jsonschema.validate(data, entry_schema())
    entry = load_entry(path)
    assert entry.id == path.stem
    if entry.source.kind == "hub":
        assert entry.links, "hub entries link their model card"


def test_shipped_catalogue_has_the_builtins_and_hub_models():
    known = entries()
    assert {"builtin-tiny", "builtin-phantom", "roentgen-v2", "sd-1-5", "sd-2-1-base"} <= set(known)
    assert known["roentgen-v2"].entry.source.hub == "stanfordmimi/RoentGen-v2"
    assert known["roentgen-v2"].entry.gated


def test_builtin_tiny_entry_loads_and_generates_through_the_real_generator():
    from synthdata.generation.generators.base import SampleRequest
    from synthdata.generation.generators.diffusers_gen import DiffusersGenerator

    spec = _spec("catalog:builtin-tiny", steps=2)
    assert spec.generator.model == "builtin:tiny"
    assert (spec.generator.height, spec.generator.width) == (64, 64)
    gen = DiffusersGenerator(spec.generator, device="cpu")
    gen.load()
    [image] = gen.generate([SampleRequest("k", "a chest x-ray", "", 1, 2, 4.0)])
    assert image.shape == (64, 64, 3)


def test_catalog_expansion_fills_only_what_the_spec_leaves_out():
    spec = _spec("catalog:sd-2-1-base", steps=7, height=256)
    gen = spec.generator
    assert gen.model == "stabilityai/stable-diffusion-2-1-base"
    assert gen.revision == "5ede9e4bf3e3fd1cb0ef2f7a3fff13ee514fdf06"
    assert (gen.steps, gen.height) == (7, 256)                 # the spec's own fields win
    assert (gen.scheduler, gen.guidance_scale, gen.width, gen.dtype) == ("euler", 7.5, 512, "float16")


def test_unpinned_hub_entry_needs_a_revision_in_the_spec():
    with pytest.raises(SpecError) as err:
        _spec("catalog:roentgen-v2")
    [problem] = err.value.problems
    assert problem.field == "generator.model" and problem.line == 6
    assert "no pinned revision" in problem.message
    spec = _spec("catalog:roentgen-v2", revision="0123456789abcdef0123456789abcdef01234567")
    assert spec.generator.model == "stanfordmimi/RoentGen-v2"
    assert (spec.generator.scheduler, spec.generator.steps, spec.generator.guidance_scale) == ("pndm", 75, 3.0)


def test_unknown_catalog_id_is_a_clean_spec_error():
    with pytest.raises(SpecError) as err:
        _spec("catalog:nope")
    assert str(err.value).startswith("spec.yaml:6: generator.model: unknown catalogue id 'nope'")
    assert "builtin-tiny" in str(err.value)


def _user_entry(folder, entry_id: str, fid: float, precision: float, extractor: str = "efficientnet-lite0"):
    folder.mkdir(exist_ok=True)
    (folder / f"{entry_id}.yaml").write_text(yaml.safe_dump({
        "id": entry_id, "name": entry_id, "source": {"path": "."}, "modality": "X-ray",
        "specialty": "radiology", "body_part": "chest", "license": "apache-2.0", "resolution": 64,
        "evaluations": [{"extractor": extractor, "real_set": {"name": "phantoms-1k"},
                         "metrics": {"fid": fid, "precision": precision},
                         "measured_by": "synthdata evaluate"}]}))


def test_rank_orders_by_direction_and_filters(tmp_path):
    user = tmp_path / "catalog"
    _user_entry(user, "model-a", fid=12.0, precision=0.4)
    _user_entry(user, "model-b", fid=3.0, precision=0.9)
    _user_entry(user, "model-c", fid=1.0, precision=0.1, extractor="pixel")
    ours = lambda ranked: [t[0].entry.id for t in ranked if t[0].entry.id.startswith("model-")]
    assert ours(rank("fid", user=user)) == ["model-c", "model-b", "model-a"]
    assert ours(rank("precision", user=user)) == ["model-b", "model-a", "model-c"]
    assert ours(rank("fid", extractor="efficientnet-lite0", user=user)) == ["model-b", "model-a"]
    # the shipped builtin-phantom entry carries measured figures and ranks among them
    assert "builtin-phantom" in [t[0].entry.id for t in rank("fid", extractor="pixel", user=user)]
    assert rank("fid", real_set="other", user=user) == []
    assert get("model-a", user).local_path() == user.resolve()
    out = CliRunner().invoke(app, ["models", "rank", "fid", "--catalog", str(user)])
    assert out.exit_code == 0 and out.output.index("model-c") < out.output.index("model-a")


def test_bad_and_duplicate_user_entries_are_named(tmp_path):
    user = tmp_path / "catalog"
    user.mkdir()
    (user / "bad.yaml").write_text("id: bad\nname: x\nsource: {hub: a/b, path: .}\n")
    with pytest.raises(CatalogError, match=r"bad.yaml: invalid catalogue entry: .*exactly one of"):
        entries(user)
    (user / "bad.yaml").unlink()
    _user_entry(user, "sd-1-5", fid=1.0, precision=0.5)
    with pytest.raises(CatalogError, match="already defined"):
        entries(user)


def test_models_list_and_show_cli():
    runner = CliRunner()
    out = runner.invoke(app, ["models", "list"], env={"COLUMNS": "160"})
    assert out.exit_code == 0
    for entry_id in ("builtin-tiny", "roentgen-v2", "sd-2-1-base"):
        assert entry_id in out.output
    shown = runner.invoke(app, ["models", "show", "roentgen-v2", "--json"])
    assert json.loads(shown.output)["recommended"]["steps"] == 75
    missing = runner.invoke(app, ["models", "show", "nope"])
    assert missing.exit_code == 2 and "unknown catalogue id" in missing.output


def test_rank_shows_intervals_and_whether_they_separate_neighbours(tmp_path):
    """Figures from `synthdata evaluate` carry METRIC_ci_low/high or METRIC_se; rank prints
    the interval and says when two neighbours' intervals overlap (a tie, not a ranking)."""
    from synthdata.catalog.store import evaluation_figures

    user = tmp_path / "catalog"
    for name, fid, ci in (("model-x", 30.0, [26.0, 40.0]), ("model-y", 36.0, [31.0, 44.0]),
                          ("model-z", 250.0, [240.0, 262.0])):
        ev = evaluation_figures({"fid": fid, "fid_ci": ci, "n": {"real": 1000, "synthetic": 200},
                                 "kid_unbiased": {"value": 0.3, "se": 0.05},
                                 "real_vs_real": {"fid": 8.0, "fid_std": 2.0},
                                 "real_set": {"fingerprint": "f" * 64, "images": 1000},
                                 "extractor": {"name": "builtin:phantom-encoder"},
                                 "samples": {"synthetic": 200},
                                 "utility": {"synthetic": {"auc": 0.9, "ci_low": 0.88, "ci_high": 0.92}}},
                                "world", "synthdata evaluate")
        _user_entry(user, name, fid=fid, precision=0.5)
        data = yaml.safe_load((user / f"{name}.yaml").read_text())
        data["evaluations"] = [ev.model_dump(mode="json", exclude_none=True)]
        (user / f"{name}.yaml").write_text(yaml.safe_dump(data))
    [(_, _, ev)] = [t for t in rank("fid", real_set="world", user=user) if t[0].entry.id == "model-x"]
    assert ev.interval("fid") == (26.0, 40.0) and ev.metrics["n_synthetic"] == 200
    assert ev.interval("kid_unbiased") == pytest.approx((0.3 - 1.96 * 0.05, 0.3 + 1.96 * 0.05))
    assert ev.interval("utility_synthetic_auc") == (0.88, 0.92) and ev.interval("precision") is None
    out = CliRunner().invoke(app, ["models", "rank", "fid", "--real-set", "world", "--catalog", str(user)],
                             env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if "model-" in line]
    assert "no (tie)" in rows[0] and "yes" in rows[1] and "26-40" in rows[0]
