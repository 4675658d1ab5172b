"""`synthdata evaluate` as a Prefect flow: features one task per shard (and per real chunk),
then metrics, diversity, alignment and utility, then evaluation.json, plots, card and artifacts.

    result = synthdata_evaluate(out_dir, real="data/real", features=["efficientnet-lite0"],
                                utility=True)

Features are cached by content and extractor (`features.py`), so a second evaluation of the
same shards against the same real set only recomputes the metrics. Task names carry shard and
chunk numbers only; no real image id or path is sent to Prefect.
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from synthdata.errors import OutputError
from synthdata.evaluation import diversity as div
from synthdata.evaluation import features as feat
from synthdata.evaluation import metrics, plots, report
from synthdata.evaluation.realset import RealItem, RealSet, load_real_set, split_items
from synthdata.evaluation.utility import BOOTSTRAP, match_labels
from synthdata.evaluation.utility import utility as run_utility
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_json_atomic
from synthdata.screening.shardio import decode_png

TEST_FRACTION = 0.3
# Feature tasks at once: two let one shard's decoding overlap another's model forward; more
# only oversubscribe torch's own threads (one model per process is shared by all of them).
FEATURE_WORKERS = 2


@task(name="shard-features", retries=1, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="features-{extractor}-shard-{shard}")
def shard_features_task(tar: str, shard: int, extractor: str, device: str) -> feat.ShardFeatures:
    """Features of one synthetic shard (cached by tar content and extractor)."""
    return feat.shard_features(tar, feat.get_extractor(extractor, device=device))


@task(name="real-features", retries=1, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="features-{extractor}-real-{chunk}")
def real_features_task(items: list[RealItem], chunk: int, extractor: str, device: str) -> np.ndarray:
    """Features of one chunk of real images (cached privately)."""
    return feat.real_features(items, feat.get_extractor(extractor, device=device))


def dataset_tars(folder: DatasetFolder) -> tuple[list[Path], str]:
    """The accepted shards, or the complete raw shards when screening has not run."""
    accepted = folder.accepted_tars()
    if accepted:
        return accepted, "accepted"
    raw = [folder.raw_tar(s) for s in folder.complete_shards()]
    if not raw:
        raise OutputError(f"{folder.root}: no complete shards to evaluate; run `synthdata run` first")
    return raw, "raw"


class Synthetic:
    """The synthetic side: features, labels, prompts and where each sample lives."""

    def __init__(self, parts: list[feat.ShardFeatures], tars: list[Path]):
        self.features = np.concatenate([p.features for p in parts]) if parts else np.zeros((0, 1))
        self.labels = [lab for p in parts for lab in p.labels]
        self.prompts = [pr for p in parts for pr in p.prompts]
        self.where = [(str(t), k) for p, t in zip(parts, tars) for k in p.keys]

    def images(self, indices: list[int]) -> dict[int, np.ndarray]:
        """Decoded images of the given sample indices."""
        by_tar: dict[str, dict[str, int]] = {}
        for i in indices:
            tar, key = self.where[i]
            by_tar.setdefault(tar, {})[f"{key}.png"] = i
        out = {}
        for tar_path, wanted in by_tar.items():
            with tarfile.open(tar_path, "r:") as tar:
                for member in tar:
                    if member.name in wanted:
                        out[wanted[member.name]] = decode_png(tar.extractfile(member).read())  # type: ignore[union-attr]
        return out


def _features(tars: list[Path], real_items: list[RealItem], extractor: str, device: str
              ) -> tuple[Synthetic, np.ndarray]:
    """Submit one task per shard and per real chunk; gather them in order."""
    shard_futs = [shard_features_task.submit(str(t), n, extractor, device) for n, t in enumerate(tars)]
    chunks = feat.real_chunks(real_items)
    real_futs = [real_features_task.submit(c, n, extractor, device) for n, c in enumerate(chunks)]
    parts = [f.result() for f in shard_futs]
    real = [f.result() for f in real_futs]
    dim = parts[0].features.shape[1] if parts else 1
    return Synthetic(parts, tars), (np.concatenate(real) if real else np.zeros((0, dim), np.float32))


def per_label(real_x: np.ndarray, real_labels: list[str], synth: Synthetic,
              mapping: dict[str, str], seed: int) -> dict:
    """Fidelity of each (mapped) label's synthetic images against that label's real images."""
    out = {}
    rl = np.array(real_labels)
    sl = np.array([mapping[lab] for lab in synth.labels])
    for label in sorted(set(mapping.values())):
        out[label] = metrics.fidelity(real_x[rl == label], synth.features[sl == label], seed=seed,
                                      kid_subsets=metrics.KID_SUBSETS_DETAIL)
    return out


def fidelity_block(real: RealSet, real_x: np.ndarray, synth: Synthetic, mapping: dict[str, str],
                   seed: int) -> dict:
    """Headline metrics, per label and the real-vs-real floor for one extractor."""
    labels = [i.label for i in real.items]
    a, b = split_items(real.items, 0.5, seed)
    floor = metrics.fidelity(real_x[a], real_x[b], seed=seed, kid_subsets=metrics.KID_SUBSETS_DETAIL)
    return {**metrics.fidelity(real_x, synth.features, seed=seed),
            "per_label": per_label(real_x, labels, synth, mapping, seed),
            "real_vs_real": floor}


def _utility(real: RealSet, real_x: np.ndarray, test: RealSet | None, test_x: np.ndarray | None,
             synth: Synthetic, mapping: dict[str, str], seed: int, bootstrap: int) -> dict:
    wanted = set(mapping.values())
    y_all = [i.label for i in real.items]
    if test is None:
        train_idx, test_idx = split_items(real.items, TEST_FRACTION, seed)
        x_tr, y_tr = real_x[train_idx], [y_all[i] for i in train_idx]
        x_te, y_te = real_x[test_idx], [y_all[i] for i in test_idx]
        split = f"seeded split of --real by group: {TEST_FRACTION:.0%} test"
    else:
        x_tr, y_tr = real_x, y_all
        x_te, y_te = test_x, [i.label for i in test.items]
        split = "--test"
    keep_tr = [i for i, v in enumerate(y_tr) if v in wanted]
    keep_te = [i for i, v in enumerate(y_te) if v in wanted]
    out = run_utility(x_tr[keep_tr], [y_tr[i] for i in keep_tr], x_te[keep_te],
                      [y_te[i] for i in keep_te], synth.features,
                      [mapping[v] for v in synth.labels], seed=seed, bootstrap=bootstrap)
    out["protocol"]["test_split"] = split
    return out


_LISTED: dict[str, RealSet] = {}


def _real_set(ref: str) -> RealSet:
    """The listing of a real set, reusing the one `check_inputs` made in this process."""
    return _LISTED.pop(str(Path(ref).resolve()), None) or load_real_set(ref)


def check_inputs(out_dir: str | Path, real: str, test: str | None = None) -> tuple[RealSet, RealSet | None]:
    """Everything that can be wrong with the inputs, checked before any flow starts.

    The dataset folder is readable and has shards, the real (and test) sets list, and every
    label of the spec has a real counterpart by name. Raises SynthdataError subclasses.
    """
    import yaml

    folder = DatasetFolder(out_dir).require()
    dataset_tars(folder)
    real_set = load_real_set(real)
    test_set = load_real_set(test) if test else None
    spec_labels = list((yaml.safe_load(folder.spec_file.read_text()) or {}).get("labels", {}))
    match_labels(spec_labels, real_set.labels)
    _LISTED[str(Path(real).resolve())] = real_set
    if test_set is not None:
        match_labels(spec_labels, test_set.labels)
        _LISTED[str(Path(test).resolve())] = test_set
    return real_set, test_set


def evaluate(out_dir: str | Path, real: str, **options) -> dict:
    """Check the inputs, then run the `synthdata-evaluate` flow (what the CLI calls)."""
    check_inputs(out_dir, real, options.get("test") if options.get("utility") else None)
    return synthdata_evaluate(str(out_dir), real, **options)


@flow(name="synthdata-evaluate", persist_result=False, validate_parameters=False,
      task_runner=ThreadPoolTaskRunner(max_workers=FEATURE_WORKERS))
def synthdata_evaluate(out_dir: str, real: str, features: list[str] | None = None,
                       utility: bool = False, test: str | None = None,
                       alignment: str | None = None, seed: int = 0, device: str = "auto",
                       max_pairs: int = div.MAX_PAIRS, bootstrap: int = BOOTSTRAP,
                       card: bool = True) -> dict:
    """Evaluate a dataset folder against real images; write DIR/evaluation/ (and refresh the
    dataset card when there is one and `card`). Returns a summary."""
    from synthdata.outputs import acquire_lock

    folder = DatasetFolder(out_dir).require()
    lock = acquire_lock(folder.root)
    try:
        return _evaluate(folder, real, list(features or [feat.DEFAULT_EXTRACTOR]), utility, test,
                         alignment, seed, device, max_pairs, bootstrap, card)
    finally:
        lock.release()


def _evaluate(folder: DatasetFolder, real_ref: str, extractors: list[str], want_utility: bool,
              test_ref: str | None, alignment_model: str | None, seed: int, device: str,
              max_pairs: int, bootstrap: int, card: bool) -> dict:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    tars, which = dataset_tars(folder)
    real = _real_set(real_ref)
    test = _real_set(test_ref) if (want_utility and test_ref) else None
    timings["list_s"], clock = time.perf_counter() - clock, time.perf_counter()
    data: dict = {"format_version": report.FORMAT_VERSION, "seed": seed, "shards": which,
                  "k": metrics.PRDC_K}
    blocks: dict[str, dict] = {}
    first: tuple[Synthetic, np.ndarray, object] | None = None
    for name in extractors:
        extractor = feat.get_extractor(name, device=device)
        synth, real_x = _features(tars, real.items, name, device)
        timings[f"features_{name}_s"], clock = time.perf_counter() - clock, time.perf_counter()
        if first is None:
            mapping = match_labels(synth.labels, real.labels)
            first = (synth, real_x, extractor)
        blocks[name] = {"extractor": feat.describe(extractor),
                        **fidelity_block(real, real_x, synth, mapping, seed)}
        timings[f"metrics_{name}_s"], clock = time.perf_counter() - clock, time.perf_counter()
    synth, real_x, extractor = first
    main = blocks[extractors[0]]
    data.update({k: main[k] for k in ("extractor", *report.HEADLINE, "per_label", "real_vs_real")})
    data["kid_subsets"] = main.get("kid_subsets")
    if main.get("notes"):
        data["notes"] = main["notes"]
    if len(extractors) > 1:
        data["per_extractor"] = blocks
    counts_real = real.counts()
    data["real_set"] = {"fingerprint": real.fingerprint, "layout": real.layout,
                        "images": len(real.items), "labels": counts_real,
                        "skipped": len(real.skipped)}
    synth_counts: dict[str, int] = {}
    for lab in synth.labels:
        synth_counts[mapping[lab]] = synth_counts.get(mapping[lab], 0) + 1
    data["samples"] = {"synthetic": len(synth.labels), "real": len(real.items),
                       "per_label": {lab: {"synthetic": synth_counts.get(lab, 0),
                                           "real": counts_real.get(lab, 0)}
                                     for lab in sorted(set(counts_real) | set(synth_counts))}}
    data["labels"] = {"mapping": mapping,
                      "real_only": sorted(set(real.labels) - set(mapping.values()))}
    nn_synth = metrics.nn_similarity(synth.features)
    nn_real = metrics.nn_similarity(real_x)
    data["diversity"] = {
        "intra_prompt": div.intra_prompt_msssim(synth.prompts, synth.labels, synth.images,
                                                max_pairs=max_pairs, seed=seed),
        "nearest_neighbour": {"synthetic": metrics.summary(nn_synth),
                              "real": metrics.summary(nn_real)}}
    timings["diversity_s"], clock = time.perf_counter() - clock, time.perf_counter()
    if alignment_model:
        from synthdata.evaluation.alignment import TextImageModel, alignment

        model = TextImageModel(alignment_model, device=device)
        images = synth.images(list(range(len(synth.labels))))
        data["alignment"] = alignment(model, [images[i] for i in range(len(synth.labels))],
                                      synth.prompts, synth.labels)
        timings["alignment_s"], clock = time.perf_counter() - clock, time.perf_counter()
    if want_utility:
        test_x = None
        if test is not None:
            test_x = np.concatenate([real_features_task.submit(c, n, extractors[0], device).result()
                                     for n, c in enumerate(feat.real_chunks(test.items))])
        data["utility"] = _utility(real, real_x, test, test_x, synth, mapping, seed, bootstrap)
        timings["utility_s"], clock = time.perf_counter() - clock, time.perf_counter()
    _write(folder, data, nn_synth, nn_real, card)
    timings["write_s"] = time.perf_counter() - clock
    return {"out_dir": str(folder.root), "evaluation": str(report.evaluation_file(folder)),
            "fid": data["fid"], "real_vs_real_fid": data["real_vs_real"]["fid"],
            "samples": data["samples"]["synthetic"], "timings": timings}


def _write(folder: DatasetFolder, data: dict, nn_synth: np.ndarray, nn_real: np.ndarray,
           card: bool) -> None:
    """evaluation.json, plots, the card (when there is one) and Prefect artifacts."""
    out = folder.evaluation_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report.evaluation_file(folder), data)
    plots.fidelity_plot(data, out / "fidelity.png")
    plots.nn_plot(nn_synth, nn_real, out / "nn_similarity.png")
    if "utility" in data:
        plots.utility_plot(data["utility"], out / "utility.png")
    if card and folder.card_file.is_file():
        from synthdata.card import write_card

        write_card(folder.root)
    import yaml

    spec = yaml.safe_load(folder.spec_file.read_text()) if folder.spec_file.is_file() else {}
    name = (spec or {}).get("name") or folder.root.name
    report.publish_artifacts(data, str(name))
