"""The dataset card (DIR/README.md) and the Prefect artifacts shown on a flow run.

The card is Markdown with YAML front matter in the Hugging Face dataset-card manner (license,
task_categories, tags, size_categories, configs -> data_files), so the folder can be pushed to
the Hub or read by `datasets.load_dataset` as is. Everything in it comes from the folder
(spec.yaml, plan, manifest/stats, screening results, run.json): rewriting it is always safe.
It names no absolute local path: a local model or LoRA by its name (the fingerprint names its
content), the dataset by the folder's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from synthdata.dataset import records

from synthdata.dataset.manifest import manifest_table

from synthdata.dataset.run_record import read_run_record

from synthdata.dataset.stats import dataset_stats, planned_counts, value_counts
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_text_atomic
from synthdata.privacy import public_path
from synthdata.progress import artifact_key
from synthdata.dataset.cohort_summary import cohort_section
from synthdata.dataset.evaluation_section import evaluation_section

SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
BUILTIN_LICENSE = "apache-2.0"
NOT_SCREENED_TAG = "not-screened-against-real-images"
NOT_SCREENED_TEXT = (
    "**Not screened against real images.** The spec names no `memorization.reference`, so no "
    "sample was compared with real images: near-copies of real patients' images, if the model "
    "memorized any, are not caught. The {n} samples in `shards/` passed the quality checks only "
    "and carry the decision `not-screened` (never `accept`). Do not share this dataset as "
    "privacy-screened; screen it with `synthdata screen` after adding a reference.")


def size_category(n: int) -> str:
    """The Hugging Face size_categories bucket of n samples."""
    return next((name for limit, name in SIZE_BUCKETS if n < limit), "n>1B" if n > 1e9 else "100M<n<1B")


def model_license(out_dir: str | Path) -> str | None:
    """The generating model's license as the run recorded it (run.json: model.license), so the
    card is written the same with or without the model on this machine; built-ins are Apache-2.0."""
    spec = records.spec_data(out_dir)
    if spec["generator"]["model"].startswith("builtin:"):
        return BUILTIN_LICENSE
    run = read_run_record(out_dir) or {}
    return (run.get("model") or {}).get("license")


def _split(root: Path) -> str:
    """The folder consumers read: shards/ once screening ran, else raw/."""
    folder = DatasetFolder(root)
    return folder.SHARDS if folder.shards_dir.is_dir() else folder.RAW


def screening_summary(out_dir: str | Path) -> dict | None:
    """Decisions, per-label results, score range and the nearest pairs; None when not screened."""
    import pyarrow.compute as pc

    folder = DatasetFolder(out_dir)
    root = folder.root
    screened = records.screening_table(root)
    if screened is None:
        return None
    extra = folder.screening_report_file
    info = json.loads(extra.read_text()) if extra.is_file() else {}
    if isinstance(info.get("embedder"), dict):
        info["embedder"] = info["embedder"].get("name", info["embedder"])
    info.update({f"threshold {k}": v for k, v in (info.get("threshold_info") or {}).items()})
    mem = records.spec_data(root).get("memorization", {})
    manifest = manifest_table(root)
    table = manifest.filter(pc.is_valid(manifest["decision"]))
    decisions = value_counts(pc.fill_null(screened["decision"], "unknown"))
    labels: dict[str, dict[str, int]] = {}
    for row in table.group_by(["label", "decision"]).aggregate([("key", "count")]).to_pylist():
        labels.setdefault(row["label"], {})[row["decision"]] = row["key_count"]
    top = screened.filter(pc.is_valid(screened["score"])).sort_by(
        [("score", "descending"), ("key", "ascending")]).slice(0, 5)
    raw = pq.read_table(folder.screening_file)
    thresholds = set(pc.unique(raw["threshold"]).to_pylist()) - {None} if "threshold" in raw.column_names else set()
    return {
        "embedder": info.get("embedder", mem.get("matchers", mem.get("embedder"))),
        "threshold": info.get("threshold", thresholds.pop() if len(thresholds) == 1 else mem.get("threshold")),
        "review_band": info.get("review_band", mem.get("review_band")),
        "k": info.get("k", mem.get("k")),
        "reference": mem.get("reference", []),
        "details": {k: v for k, v in info.items() if not isinstance(v, (dict, list))},
        "state": records.screening_state(root),
        "screened": screened.num_rows, "decisions": dict(sorted(decisions.items())), "labels": labels,
        "max_score": pc.max(screened["score"]).as_py(),
        "nearest_pairs": [{"key": r["key"], "nearest_real_id": r["nearest_real_id"], "score": r["score"]}
                          for r in top.to_pylist()],
    }


def label_rows(out_dir: str | Path) -> list[dict]:
    """The label table: index, planned, generated, accepted and share of accepted, per label."""
    stats = dataset_stats(out_dir)
    names = list(records.spec_data(out_dir)["labels"])
    total_acc = sum((v["accepted"] or 0) for v in stats["labels"].values()) or None
    rows = []
    for label, v in stats["labels"].items():
        rows.append({"label": label, "index": names.index(label) if label in names else -1,
                     "planned": v["planned"], "generated": v["generated"], "accepted": v["accepted"],
                     "share": None if v["accepted"] is None or not total_acc
                     else round(v["accepted"] / total_acc, 4)})
    return rows


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "_(none)_"
    cols = list(rows[0])

    def fmt(col: str, v) -> str:
        if v is None:
            return "-"
        if col == "share":
            return f"{v:.1%}"
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def front_matter(out_dir: str | Path) -> dict:
    """The card's YAML front matter (Hugging Face dataset-card metadata)."""
    root = Path(out_dir)
    spec = records.spec_data(root)
    stats = dataset_stats(root)
    n = stats["samples"]["accepted"] if stats["samples"]["accepted"] is not None else stats["samples"]["generated"]
    lic = model_license(root)
    data = f"{_split(root)}/*.tar"
    screened = records.screening_state(root) == records.SCREENED
    meta = {"pretty_name": spec["name"],
            "license": lic if lic in (BUILTIN_LICENSE,) else "other",
            "task_categories": ["image-classification", "text-to-image"],
            "tags": ["synthetic", "medical-imaging", "webdataset", "synthdata", "diffusers",
                     *([] if screened else [NOT_SCREENED_TAG])],
            "size_categories": [size_category(n)],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data}]}]}
    if meta["license"] == "other":
        meta["license_name"] = f"model-license-{lic}" if lic else "see-generating-model-license"
    return meta


PURPOSE = ("Synthetic images generated by synthdata from a declarative spec: every sample's label, "
           "prompt, variables and seed were planned before generation, and every sample can be "
           "traced (`synthdata lineage DIR KEY`) and regenerated (`synthdata reproduce DIR KEY`). "
           "Intended for research, augmentation and pipeline testing; not for clinical use.")
FILES = ("Each sample is `KEY.png`, `KEY.json` (metadata), `KEY.cls` (label index) and `KEY.txt` "
         "(prompt). `manifest.parquet` lists every generated sample, accepted or not, with its image "
         "hash and screening result; `run.json` records how the run was made.")


def _training_lines(run: dict) -> list[str]:
    """One line per model part that `synthdata train` made (run.json model.training)."""
    out = []
    for role, chain in ((run.get("model") or {}).get("training") or {}).items():
        source = chain.get("data_source") or {}
        kind = f", {source.get('kind')} data" if source.get("kind") else ""
        out.append(f"- {role} trained by `synthdata train` ({chain.get('method')}): {chain.get('images')} "
                   f"training images{kind} (data fingerprint `{(chain.get('data_fingerprint') or '-')[:16]}`), "
                   f"base fingerprint `{(chain.get('base_fingerprint') or '-')[:16]}`")
    return out


def _model_section(root: Path, spec: dict, run: dict) -> list[str]:
    gen = spec["generator"]
    lic = model_license(root)
    first = next(iter(records.raw_rows(root)), {})
    model_fp = (run.get("model") or {}).get("fingerprint") or first.get("model_fingerprint")
    hashes = {k: run.get(k) or first.get(k) or "-" for k in ("spec_hash", "plan_hash")}
    execution = run.get("execution") or {}
    tis = ", ".join(t["token"] for t in gen.get("textual_inversion", [])) or "none"
    loras = ", ".join(f"`{public_path(lo['path'], root)}`" for lo in gen.get("lora", [])) or "none"
    libraries = ", ".join(f"{k} {v}" for k, v in (run.get("libraries") or {}).items()) or "-"
    lines = ["## Model", "",
             f"- model: {_model_name(gen['model'], root)} (revision `{gen.get('revision')}`)",
             f"- model license: {lic or 'unknown (check the model card before using its outputs)'}",
             f"- model fingerprint: `{model_fp}`",
             f"- textual inversion: {tis}", f"- LoRA: {loras}",
             *_training_lines(run), "",
             "## Generation settings", "",
             (f"- seed {spec['seed']}, {sum(planned_counts(root).values())} "
              f"samples, shards of {spec['shards']['size']}, batch size {gen['batch_size']}"),
             (f"- scheduler `{gen['scheduler']}`, {gen['steps']} steps, guidance {gen['guidance_scale']}, "
              f"{gen['width']}x{gen['height']}, dtype {gen['dtype']}"),
             f"- negative prompt: {gen.get('negative_prompt') or '-'}",
             f"- spec hash `{hashes['spec_hash']}`, plan hash `{hashes['plan_hash']}`",
             (f"- engine {execution.get('engine', '-')}, workers {execution.get('workers', '-')}, "
              f"threads per worker {execution.get('threads_per_worker', '-')}"),
             f"- libraries: {libraries}", "", "Prompt templates:", ""]
    lines += [f"- `{label}`: " + " / ".join(f"`{p}`" for p in cfg["prompts"])
              for label, cfg in spec["labels"].items()]
    return [*lines, ""]


def _model_name(model: str, root: Path) -> str:
    """The model as the card names it: a built-in, catalogue or hub id as written; a local
    folder by its name only (the fingerprint identifies its content)."""
    if model.startswith(("/", "~")):
        return f"`{public_path(model, root)}` (a local folder)"
    return f"`{model}`"


def _screening_section(screening: dict | None) -> list[str]:
    lines = ["## Memorization screening", ""]
    if screening is None:
        return [*lines, ("Not run: no sample has been compared with real images. Do not share this "
                         "dataset as privacy-screened."), ""]
    results = ", ".join(f"{k} {v}" for k, v in screening["decisions"].items())
    if screening["state"] == records.NOT_SCREENED:
        n = screening["decisions"].get("not-screened", 0)
        return [*lines, NOT_SCREENED_TEXT.format(n=n), "", f"- results: {results}", ""]
    return [*lines,
            (f"- method: nearest neighbour of each synthetic image among the real reference images, "
             f"embedder `{screening['embedder']}`, top-{screening['k']}"),
            (f"- threshold: {screening['threshold']} (reject at or above; review band "
             f"{screening['review_band']})"),
            f"- reference: {len(screening['reference'])} source(s); only ids and scores are recorded",
            *[f"- {k}: {v}" for k, v in screening["details"].items()],
            f"- results: {results}",
            f"- highest similarity: {screening['max_score']}", "",
            "Nearest pairs:", "", _md_table(screening["nearest_pairs"]), ""]


def _usage_section(root: Path, split: str) -> list[str]:
    return ["## How to load", "", "```python",
            "import torch", "import synthdata", "from synthdata.loader import collate", "",
            f'DATASET = "{root.name}"  # the path of this folder',
            "dataset, label_map = synthdata.load(DATASET)  # (image CxHxW float, label index, metadata)",
            "loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=2, collate_fn=collate)",
            "", "from datasets import load_dataset",
            f'ds = load_dataset("webdataset", data_files={{"train": f"{{DATASET}}/{split}/*.tar"}}, split="train")',
            "```", "", FILES, ""]


def _limitations(spec: dict, state: str) -> list[str]:
    lines = ["## Known limitations", ""]
    model = spec["generator"]["model"]
    if model == "builtin:tiny":
        lines.append("- Generated with the built-in tiny random-weight model: **the images are noise**. "
                     "This dataset only exercises the pipeline.")
    elif model == "builtin:procedural":
        lines.append("- Generated with `builtin:procedural`: procedural chest-radiograph phantoms drawn per "
                     "label (no model, not clinical data). For scale tests and benchmarks only.")
    elif model == "builtin:phantom":
        lines.append("- Generated with `builtin:phantom`, a tiny model trained on procedural chest-radiograph "
                     "phantoms (not clinical data): the images resemble those phantoms, not real anatomy. "
                     "For demonstrations and pipeline tests only.")
    lines.append("- Synthetic images follow the prompts' variable distributions, not real prevalence or "
                 "anatomy; labels are the prompts' intent, not verified findings.")
    lines.append({records.SCREENED: "- Memorization screening bounds near-copies in the chosen "
                                    "embedding only; it is not a guarantee of privacy.",
                  records.NOT_SCREENED: "- **Not screened against real images** (no reference): "
                                        "near-copies of real images are not caught.",
                  records.NOT_RUN: "- Not screened for memorization."}[state])
    lines.append("- Bit-exact reproduction needs the same model files, library versions, device and "
                 "thread count (see run.json).")
    return [*lines, ""]


def _extra_sections(root: Path) -> list[str]:
    """Sections other packages contribute when the folder has their files (cohort, evaluation)."""

    return cohort_section(root) + evaluation_section(root)


def card_text(out_dir: str | Path) -> str:
    """The whole dataset card as Markdown."""
    root = Path(out_dir)
    spec = records.spec_data(root)
    run = read_run_record(root) or {}
    stats = dataset_stats(root)
    screening = screening_summary(root)
    split = _split(root)
    accepted = "-" if stats["samples"]["accepted"] is None else stats["samples"]["accepted"]
    state = records.screening_state(root)
    kept = "accepted" if state != records.NOT_SCREENED else "not screened against real images"
    parts = ["---", yaml.safe_dump(front_matter(root), sort_keys=False).rstrip(), "---", "",
             f"# {spec['name']}", "", spec.get("description") or "", "",
             "## Purpose", "", PURPOSE, "",
             "## Labels", "", _md_table(label_rows(root)), "",
             (f"Samples: {stats['samples']['planned']} planned, {stats['samples']['generated']} "
              f"generated, {accepted} {kept} (in `{split}/`)."), "",
             *_model_section(root, spec, run), *_screening_section(screening),
             *_extra_sections(root),
             *_usage_section(root, split), *_limitations(spec, state)]
    return "\n".join(parts)


def write_card(out_dir: str | Path) -> Path:
    """Write DIR/README.md atomically."""
    path = DatasetFolder(out_dir).card_file
    write_text_atomic(path, card_text(out_dir))
    return path


def publish_prefect_artifacts(out_dir: str | Path) -> list[str]:
    """Label table and screening summary as Prefect artifacts on the current flow run.

    A no-op returning [] outside a Prefect flow or task run. Returns the artifact ids.
    """
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return []
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    root = Path(out_dir)
    name = artifact_key(records.spec_data(root)["name"])
    ids = [create_table_artifact(table=label_rows(root), key=f"{name}-labels",
                                 description=f"{name}: samples per label, planned vs actual")]
    screening = screening_summary(root)
    if screening is None:
        text = f"# {name}: screening\n\nNot run: no sample has been compared with real images."
    elif screening["state"] == records.NOT_SCREENED:
        text = "\n".join([f"# {name}: NOT screened against real images", "",
                          NOT_SCREENED_TEXT.format(n=screening["decisions"].get("not-screened", 0)),
                          "", _md_table([{"decision": k, "count": v}
                                         for k, v in screening["decisions"].items()])])
    else:
        text = "\n".join([
            f"# {name}: memorization screening", "",
            (f"embedder `{screening['embedder']}`, threshold {screening['threshold']}, "
             f"{screening['screened']} samples screened"), "",
            _md_table([{"decision": k, "count": v} for k, v in screening["decisions"].items()]), "",
            "Nearest pairs:", "", _md_table(screening["nearest_pairs"])])
    ids.append(create_markdown_artifact(markdown=text, key=f"{name}-screening",
                                        description=f"{name}: screening summary"))
    return [str(i) for i in ids]
