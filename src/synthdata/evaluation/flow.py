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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from synthdata.errors import OutputError
from synthdata.evaluation import diversity as div
from synthdata.evaluation import features as feat
from synthdata.dataset import evaluation_section as evaluation_json
from synthdata.evaluation import metrics, plots
from synthdata.evaluation.artifacts import publish_artifacts
from synthdata.evaluation.curves import DRAWS, FRACTIONS, PROTOCOLS, linear_trainer, utility_curve
from synthdata.evaluation.extractors import default_extractors
from synthdata.evaluation.fidelity import fidelity_block
from synthdata.evaluation.fidstats import FID_BOOTSTRAP
from synthdata.evaluation.realset import RealItem, RealSet, load_real_set, split_items
from synthdata.evaluation.utility import BOOTSTRAP, match_labels
from synthdata.evaluation.utility import utility as run_utility
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_json_atomic
from synthdata.screening.shardio import decode_png
from synthdata.dataset.card import write_card
from synthdata.dataset.prepare import acquire_lock
from synthdata.evaluation.alignment import TextImageModel, alignment
from synthdata.evaluation.cnn import CnnTrainer, preprocess_images
from synthdata.evaluation.realset import read_images
from synthdata.screening.embedders import resolve_device

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
    """What the dataset publishes: once screening ran (screening.parquet or shards/ exists)
    the accepted shards only, never the rejected or review samples; before, the complete raw
    shards."""
    if folder.screening_file.is_file() or folder.shards_dir.is_dir():
        accepted = folder.accepted_tars()
        if not accepted:
            raise OutputError(f"{folder.root}: screening accepted no sample, so there is nothing "
                              "published to evaluate (see screening_report.json)")
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
        self.attrs = [a for p in parts for a in (p.attrs or [{}] * len(p.keys))]
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


def fidelity_for(real: RealSet, real_x: np.ndarray, synth: Synthetic, mapping: dict[str, str],
                 seed: int, resamples: int = FID_BOOTSTRAP) -> dict:
    """The fidelity block of one extractor (`fidelity.py`): headline with intervals, the floor
    at equal n, per label and per subgroup."""
    return fidelity_block(real_x, [i.label for i in real.items], [i.group for i in real.items],
                          [i.attributes() for i in real.items], synth.features,
                          [mapping[lab] for lab in synth.labels], synth.attrs, seed=seed,
                          resamples=resamples)


def _utility(real: RealSet, real_x: np.ndarray, test: RealSet | None, test_x: np.ndarray | None,
             synth: Synthetic, mapping: dict[str, str], opt: Options) -> dict:
    seed, bootstrap = opt.seed, opt.bootstrap
    wanted = set(mapping.values())
    if test is None:
        train_idx, test_idx = split_items(real.items, TEST_FRACTION, seed)
        train_items, test_items = [real.items[i] for i in train_idx], [real.items[i] for i in test_idx]
        x_tr, x_te = real_x[train_idx], real_x[test_idx]
        split = f"seeded split of --real by group: {TEST_FRACTION:.0%} test"
    else:
        train_items, test_items, x_tr, x_te = real.items, test.items, real_x, test_x
        split = "--test"
    keep_tr = [i for i, it in enumerate(train_items) if it.label in wanted]
    keep_te = [i for i, it in enumerate(test_items) if it.label in wanted]
    train_items = [train_items[i] for i in keep_tr]
    test_items = [test_items[i] for i in keep_te]
    y_tr, y_te = [i.label for i in train_items], [i.label for i in test_items]
    g_te = [i.group for i in test_items]
    y_syn = [mapping[v] for v in synth.labels]
    out = run_utility(x_tr[keep_tr], y_tr, x_te[keep_te], y_te, synth.features, y_syn, seed=seed,
                      bootstrap=bootstrap, groups_test=g_te)
    out["protocol"]["test_split"] = split
    labels = out["protocol"]["labels"]
    code = {lab: i for i, lab in enumerate(labels)}
    enc = (lambda ys: np.array([code[v] for v in ys], np.int64))
    trainer, inputs = _curve_trainer(opt.utility_classifier, opt.device, seed, x_tr[keep_tr],
                                     x_te[keep_te], synth, train_items, test_items)
    points, gains = utility_curve(inputs[0], enc(y_tr), [i.group for i in train_items], inputs[1],
                                  enc(y_te), g_te, inputs[2], enc(y_syn), len(labels), seed=seed,
                                  bootstrap=bootstrap, trainer=trainer, draws=opt.curve_draws)
    out["curve"], out["curve_gains"] = points, gains
    out["curve_protocol"] = {"fractions": list(FRACTIONS), "protocols": list(PROTOCOLS),
                             "draws_below_100%": opt.curve_draws, "of": "the real training split",
                             "subsets": "whole patients, stratified by label, seeded",
                             "interval": "95% percentile, test patients resampled",
                             **(trainer.describe() if hasattr(trainer, "describe") else
                                {"classifier": "linear probe on frozen features (probe.py; "
                                 "pretrain = L2-SP toward the synthetic solution)"})}
    return out


def _curve_trainer(classifier: str, device: str, seed: int, x_tr, x_te, synth: Synthetic,
                   train_items: list[RealItem], test_items: list[RealItem]):
    """(trainer, (train, test, synthetic) inputs): frozen features for the linear probe, or
    preprocessed images for the CNN (`--utility-classifier`; auto = CNN on a GPU)."""

    dev = resolve_device(device)
    use_cnn = classifier == "cnn" or (classifier == "auto" and dev.startswith("cuda"))
    if not use_cnn:
        return linear_trainer, (x_tr, x_te, synth.features)

    images = synth.images(list(range(len(synth.labels))))
    return (CnnTrainer(device=dev, seed=seed),
            (preprocess_images(list(read_images(train_items))),
             preprocess_images(list(read_images(test_items))),
             preprocess_images([images[i] for i in range(len(synth.labels))])))


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


@dataclass(frozen=True)
class Options:
    """What an evaluation computes, beside the dataset and the real set."""

    extractors: list[str]
    utility: bool = False
    test: str | None = None
    alignment: str | None = None
    seed: int = 0
    device: str = "auto"
    max_pairs: int = div.MAX_PAIRS
    bootstrap: int = BOOTSTRAP
    fid_bootstrap: int = FID_BOOTSTRAP
    utility_classifier: str = "auto"
    card: bool = True
    curve_draws: int = DRAWS


@flow(name="synthdata-evaluate", persist_result=False, validate_parameters=False,
      task_runner=ThreadPoolTaskRunner(max_workers=FEATURE_WORKERS))
def synthdata_evaluate(out_dir: str, real: str, features: list[str] | None = None,
                       utility: bool = False, test: str | None = None,
                       alignment: str | None = None, seed: int = 0, device: str = "auto",
                       max_pairs: int = div.MAX_PAIRS, bootstrap: int = BOOTSTRAP,
                       card: bool = True, fid_bootstrap: int = FID_BOOTSTRAP,
                       utility_classifier: str = "auto", curve_draws: int = DRAWS) -> dict:
    """Evaluate a dataset folder against real images; write DIR/evaluation/ (and refresh the
    dataset card when there is one and `card`). Returns a summary.

    Without `features`: `builtin:phantom-encoder` then `efficientnet-lite0` when the real set
    is a `synthdata phantoms` set, else `efficientnet-lite0` (`extractors.default_extractors`).
    `utility_classifier`: `linear` (probe on frozen features), `cnn` (`cnn.py`), or `auto`
    (the CNN on a GPU, else the probe) for the data-limited curves; `curve_draws`: real
    subsets drawn per fraction below 100%.
    """

    folder = DatasetFolder(out_dir).require()
    lock = acquire_lock(folder.root)
    options = Options(list(features or default_extractors(real)), utility, test, alignment, seed,
                      device, max_pairs, bootstrap, fid_bootstrap, utility_classifier, card,
                      curve_draws)
    try:
        return _evaluate(folder, real, options)
    finally:
        lock.release()


def _evaluate(folder: DatasetFolder, real_ref: str, opt: Options) -> dict:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    tars, which = dataset_tars(folder)
    real = _real_set(real_ref)
    test = _real_set(opt.test) if (opt.utility and opt.test) else None
    timings["list_s"], clock = time.perf_counter() - clock, time.perf_counter()
    data: dict = {"format_version": evaluation_json.FORMAT_VERSION, "seed": opt.seed, "shards": which,
                  "k": metrics.PRDC_K}
    blocks: dict[str, dict] = {}
    first: tuple[Synthetic, np.ndarray, object] | None = None
    for name in opt.extractors:
        extractor = feat.get_extractor(name, device=opt.device)
        synth, real_x = _features(tars, real.items, name, opt.device)
        timings[f"features_{name}_s"], clock = time.perf_counter() - clock, time.perf_counter()
        if first is None:
            mapping = match_labels(synth.labels, real.labels)
            first = (synth, real_x, extractor)
        blocks[name] = {"extractor": feat.describe(extractor, name),
                        **fidelity_for(real, real_x, synth, mapping, opt.seed, opt.fid_bootstrap)}
        timings[f"metrics_{name}_s"], clock = time.perf_counter() - clock, time.perf_counter()
    synth, real_x, extractor = first
    main = blocks[opt.extractors[0]]
    data.update({k: main[k] for k in ("extractor", *evaluation_json.HEADLINE, *evaluation_json.STATISTICS,
                                      "per_label", "real_vs_real") if k in main})
    data["kid_subsets"] = main.get("kid_subsets")
    if main.get("notes"):
        data["notes"] = main["notes"]
    if len(opt.extractors) > 1:
        data["per_extractor"] = blocks
    counts_real = real.counts()
    data["real_set"] = {"fingerprint": real.fingerprint, "layout": real.layout,
                        "images": len(real.items), "labels": counts_real,
                        "skipped": len(real.skipped), "patients": len({i.group for i in real.items})}
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
                                                max_pairs=opt.max_pairs, seed=opt.seed),
        "nearest_neighbour": {"synthetic": {**metrics.summary(nn_synth), "n": len(nn_synth)},
                              "real": {**metrics.summary(nn_real), "n": len(nn_real)}}}
    timings["diversity_s"], clock = time.perf_counter() - clock, time.perf_counter()
    if opt.alignment:
        model = TextImageModel(opt.alignment, device=opt.device)
        images = synth.images(list(range(len(synth.labels))))
        data["alignment"] = alignment(model, [images[i] for i in range(len(synth.labels))],
                                      synth.prompts, synth.labels)
        timings["alignment_s"], clock = time.perf_counter() - clock, time.perf_counter()
    if opt.utility:
        test_x = None
        if test is not None:
            test_x = np.concatenate([real_features_task.submit(c, n, opt.extractors[0], opt.device).result()
                                     for n, c in enumerate(feat.real_chunks(test.items))])
        data["utility"] = _utility(real, real_x, test, test_x, synth, mapping, opt)
        timings["utility_s"], clock = time.perf_counter() - clock, time.perf_counter()
    _write(folder, data, nn_synth, nn_real, opt.card)
    timings["write_s"] = time.perf_counter() - clock
    return {"out_dir": str(folder.root), "evaluation": str(evaluation_json.evaluation_file(folder)),
            "fid": data["fid"], "real_vs_real_fid": data["real_vs_real"]["fid"],
            "samples": data["samples"]["synthetic"], "timings": timings}


def _write(folder: DatasetFolder, data: dict, nn_synth: np.ndarray, nn_real: np.ndarray,
           card: bool) -> None:
    """evaluation.json, plots, the card (when there is one) and Prefect artifacts."""
    out = folder.evaluation_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(evaluation_json.evaluation_file(folder), data)
    plots.fidelity_plot(data, out / "fidelity.png")
    plots.nn_plot(nn_synth, nn_real, out / "nn_similarity.png")
    if "utility" in data:
        plots.utility_plot(data["utility"], out / "utility.png")
    if card and folder.card_file.is_file():
        write_card(folder.root)
    import yaml

    spec = yaml.safe_load(folder.spec_file.read_text()) if folder.spec_file.is_file() else {}
    name = (spec or {}).get("name") or folder.root.name
    publish_artifacts(data, str(name))
