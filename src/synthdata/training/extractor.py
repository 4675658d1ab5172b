"""`synthdata train-extractor`: a small domain image encoder from labelled images.

The encoder is a transformers `ResNetModel` (basic blocks, one gray channel) trained on images
preprocessed exactly as evaluation and screening preprocess them (`screening.embedders.
preprocess`: gray, resize to the input size, per-image standardisation), with a linear head on
the pooled features (supervised: cross-entropy on the labels), a projection head for SimCLR
(self-supervised: two augmented views of each image, NT-Xent), or both losses summed.
Augmentations act on the standardised image: translation, contrast, noise, blur; never flips
(a flip moves a finding to the other side). Validation holds out whole patients (stratified by
label; `evaluation.realset.split_items`) and records loss and accuracy per epoch.

It writes, into the output folder:

    extractor/config.json, extractor/model.safetensors   the encoder (transformers, safetensors)
    extractor/embedder.json                              input size, 1 channel, pooled output
    train.json                                           lineage: data and spec fingerprints,
                                                         per-epoch losses and validation, outputs
    train-spec.yaml, loss.png

`extractor/` is a local model folder as `screening/local_model.py` reads it, so it works as
`synthdata evaluate --features DIR/extractor` and as a screening retriever or embedder; the
heads are training aids and are not saved. Every draw (initialisation, order, augmentation)
comes from the spec's seed; with the same `threads` on the same hardware the bytes repeat.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml

from synthdata.errors import OutputError
from synthdata.fsutil import sha256_file, write_json_atomic, write_text_atomic
from synthdata.training.extractor_spec import ExtractorSpec, extractor_spec_hash
from synthdata.screening.embedders import preprocess
from synthdata.training.data import phantom_set
from synthdata.training.trainrecord import TRAIN_JSON
from synthdata.training.trainrecord import write_train_record
from synthdata.evaluation.realset import load_real_set
from synthdata.evaluation.realset import read_images
from synthdata.evaluation.realset import split_items
from synthdata.screening.local_model import LocalModelEmbedder

EXTRACTOR_DIR = "extractor"
SPEC_FILE = "train-spec.yaml"


def labelled_items(spec: ExtractorSpec):
    """The RealItems of the spec's data (phantom sets are made once, in the cache)."""

    if spec.data.phantoms is not None:
        return load_real_set(phantom_set(spec.data.phantoms)), "phantoms"
    return load_real_set(spec.data.real), "real"


def build_encoder(spec: ExtractorSpec):
    """The untrained encoder (transformers ResNetModel, 1 channel)."""
    from transformers import ResNetConfig, ResNetModel

    enc = spec.encoder
    config = ResNetConfig(num_channels=1, embedding_size=enc.hidden_sizes[0],
                          hidden_sizes=list(enc.hidden_sizes), depths=list(enc.depths),
                          layer_type="basic", hidden_act="relu", downsample_in_first_stage=False)
    return ResNetModel(config)


def augment(batch, spec: ExtractorSpec, gen):
    """Augmented copies of a (n, 1, s, s) standardised batch, re-standardised per image."""
    import torch
    import torch.nn.functional as F

    a = spec.augment
    n, _, s, _ = batch.shape
    x = batch
    if a.shift:
        pad = F.pad(x, (a.shift,) * 4, mode="replicate")
        ox, oy = (int(v) for v in torch.randint(0, 2 * a.shift + 1, (2,), generator=gen))
        x = pad[:, :, oy:oy + s, ox:ox + s]
    x = x * (1 + a.contrast * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5))
    x = x + a.noise * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    if a.blur:
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        kernel = (k[:, None] * k[None]) / 256
        blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel[None, None])
        pick = (torch.rand(n, 1, 1, 1, generator=gen) < a.blur).float()
        x = pick * blurred + (1 - pick) * x
    return (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)


def nt_xent(z1, z2, temperature: float):
    """SimCLR's loss: each view must pick its partner among the other 2n - 1 views."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def _arrays(items, size: int) -> np.ndarray:

    return np.stack([preprocess(img, size) for img in read_images(items)])[:, None]


class _Heads:
    """The encoder with its training heads (not saved)."""

    def __init__(self, spec: ExtractorSpec, n_labels: int):
        import torch

        self.encoder = build_encoder(spec)
        dim = spec.encoder.hidden_sizes[-1]
        self.classify = torch.nn.Linear(dim, n_labels)
        self.project = torch.nn.Sequential(torch.nn.Linear(dim, 128), torch.nn.ReLU(),
                                           torch.nn.Linear(128, 64))
        self.modules = torch.nn.ModuleList([self.encoder, self.classify, self.project])

    def features(self, x):
        return self.encoder(pixel_values=x).pooler_output.flatten(1)

    def loss(self, x, y, spec: ExtractorSpec, gen):
        import torch.nn.functional as F

        objective = spec.training.objective
        total = 0.0
        if objective in ("supervised", "both"):
            total = total + F.cross_entropy(self.classify(self.features(augment(x, spec, gen))), y)
        if objective in ("self_supervised", "both"):
            z1 = self.project(self.features(augment(x, spec, gen)))
            z2 = self.project(self.features(augment(x, spec, gen)))
            total = total + nt_xent(z1, z2, spec.training.temperature)
        return total


def _validate(heads: _Heads, x, y) -> dict:
    import torch
    import torch.nn.functional as F

    if len(x) == 0:
        return {"loss": None, "accuracy": None}
    heads.modules.eval()
    with torch.inference_mode():
        logits = torch.cat([heads.classify(heads.features(x[i:i + 256])) for i in range(0, len(x), 256)])
    heads.modules.train()
    return {"loss": float(F.cross_entropy(logits, y)),
            "accuracy": float((logits.argmax(1) == y).float().mean())}


def train_extractor(spec: ExtractorSpec, out_dir: str | Path) -> dict:
    """Train, write the extractor folder and train.json; returns the record.

    A folder that already holds this spec's finished training is left alone (returned with
    `already_trained`); a folder holding anything else is refused."""
    import torch

    root = Path(out_dir).resolve()
    spec_hash = extractor_spec_hash(spec)
    done = _prepare(root, spec, spec_hash)
    if done is not None:
        return {**done, "already_trained": True}
    start = time.perf_counter()
    if spec.training.threads:
        torch.set_num_threads(spec.training.threads)
    device = spec.training.device if spec.training.device != "auto" else \
        ("cuda" if torch.cuda.is_available() else "cpu")
    real_set, kind = labelled_items(spec)
    labels = real_set.labels
    train_idx, val_idx = split_items(real_set.items, spec.data.validation_fraction, spec.seed) \
        if spec.data.validation_fraction > 0 else (list(range(len(real_set.items))), [])
    x_all = torch.from_numpy(_arrays(real_set.items, spec.encoder.input_size))
    y_all = torch.tensor([labels.index(i.label) for i in real_set.items])
    xt, yt = x_all[train_idx].to(device), y_all[train_idx].to(device)
    xv, yv = x_all[val_idx].to(device), y_all[val_idx].to(device)
    torch.manual_seed(spec.seed)
    heads = _Heads(spec, len(labels))
    heads.modules.to(device).train()
    batch = min(spec.training.batch_size, len(xt))
    per_epoch = max(1, len(xt) // batch)
    opt = torch.optim.AdamW(heads.modules.parameters(), lr=spec.training.learning_rate,
                            weight_decay=spec.training.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.training.learning_rate,
                                                total_steps=spec.training.epochs * per_epoch)
    losses, history, best = [], [], (float("inf"), None, -1)
    for epoch in range(spec.training.epochs):
        gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)
        order = torch.randperm(len(xt), generator=gen)
        for step in range(per_epoch):
            idx = order[step * batch:(step + 1) * batch].to(device)
            loss = heads.loss(xt[idx], yt[idx], spec, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(round(float(loss.detach()), 6))
        val = _validate(heads, xv, yv)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses[-per_epoch:])), **val})
        supervised = spec.training.objective != "self_supervised"
        score = val["loss"] if (supervised and val["loss"] is not None) else -epoch
        if spec.training.keep == "last" or score < best[0]:
            best = (score, {k: v.detach().clone() for k, v in heads.encoder.state_dict().items()}, epoch)
    heads.encoder.load_state_dict(best[1])
    record = {"name": spec.name, "method": "extractor", "spec_hash": spec_hash, "seed": spec.seed,
              "objective": spec.training.objective, "labels": labels,
              "data": {"source": _source(spec, kind, real_set), "images": len(real_set.items),
                       "train_images": len(train_idx), "validation_images": len(val_idx),
                       "patients": len({i.group for i in real_set.items})},
              "data_fingerprint": real_set.fingerprint, "images": len(real_set.items),
              "kept_epoch": best[2], "validation": history, "loss": {"extractor": losses},
              "final_loss": {"extractor": float(np.mean(losses[-20:]))},
              "device": device, "torch_threads": torch.get_num_threads()}
    return _write(root, heads.encoder.cpu().eval(), spec, record, time.perf_counter() - start)


def _source(spec: ExtractorSpec, kind: str, real_set) -> dict:
    if kind == "phantoms":
        return {"kind": "phantoms", **spec.data.phantoms.model_dump(mode="json")}
    return {"kind": "real", "layout": real_set.layout, "name": Path(real_set.root).name}


def _prepare(root: Path, spec: ExtractorSpec, spec_hash: str) -> dict | None:
    """Refuse a foreign folder; return the record of a finished run of this spec."""

    spec_file = root / SPEC_FILE
    if spec_file.is_file():
        old = yaml.safe_load(spec_file.read_text()) or {}
        if old.get("spec_hash") != spec_hash:
            raise OutputError(f"{root} holds an extractor trained from a different spec; use "
                              "another output folder or delete it")
        record = root / TRAIN_JSON
        return json.loads(record.read_text()) if record.is_file() else None
    if root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()):
        raise OutputError(f"{root} is not empty and holds no extractor training; choose an "
                          "empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    body = {"spec_hash": spec_hash, **spec.model_dump(mode="json", exclude={"output"})}
    write_text_atomic(spec_file, yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return None


def _write(root: Path, encoder, spec: ExtractorSpec, record: dict, seconds: float) -> dict:
    """extractor/ (staged, then renamed), then train.json and loss.png last."""
    import shutil

    stage = root / f".{EXTRACTOR_DIR}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    encoder.save_pretrained(stage, safe_serialization=True)
    write_json_atomic(stage / "embedder.json", {"format": "transformers", "input_size":
                                                spec.encoder.input_size, "channels": 1,
                                                "output": "pooler"})
    for f in stage.iterdir():
        f.chmod(0o644)   # transformers writes the weights 0600; the folder may be shipped
    final = root / EXTRACTOR_DIR
    shutil.rmtree(final, ignore_errors=True)
    stage.rename(final)
    embedder = LocalModelEmbedder(final, device="cpu")
    record["outputs"] = {"extractor": {"path": EXTRACTOR_DIR, "files": {
        p.name: sha256_file(p) for p in sorted(final.iterdir())}}}
    record["output_fingerprint"] = embedder.fingerprint
    record["dim"] = embedder.dim
    record["timing"] = {"seconds": round(seconds, 1)}
    write_train_record(root, record)
    return record
