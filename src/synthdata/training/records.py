"""`train.json`, the loss plot, and reading them back for lineage and screening.

`DIR/train.json` sits beside what the run made (`DIR/model/`, `DIR/lora.safetensors`,
`DIR/embedding.pt`). `training_chain(path)` finds it from any of those paths (or DIR) and
checks that it names that output; `training_reference(path)` lists the training images
(phantom sources are re-materialised in the cache, byte-identical), so a generation spec can
screen against them (`memorization.reference: from-training`).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from synthdata.fsutil import sha256_file, write_json_atomic

TRAIN_JSON = "train.json"
LOSS_PLOT = "loss.png"
FORMAT = "synthdata-train/v1"


def write_train_record(root: Path, record: dict) -> Path:
    """Write DIR/train.json (atomically) and DIR/loss.png."""
    record = {"format": FORMAT, **record}
    draw_loss(root / LOSS_PLOT, record.get("loss", {}), title=f"{record.get('name')} ({record.get('method')})")
    write_json_atomic(root / TRAIN_JSON, record)
    return root / TRAIN_JSON


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def draw_loss(path: Path, losses: dict[str, list[float]], title: str = "", width: int = 720,
              height: int = 360) -> None:
    """Loss per step of each stage (thin) and its moving average (thick), drawn with Pillow."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, y0, x1, y1 = 60, 30, width - 20, height - 40
    curves = [(name, v) for name, v in losses.items() if v]
    colours = ["#4a7fd4", "#d62728", "#2ca02c", "#9467bd"]
    draw.line([x0, y1, x1, y1], fill="black")
    draw.line([x0, y0, x0, y1], fill="black")
    draw.text((x0, 8), f"training loss: {title}", fill="black", font=font)
    if curves:
        top = max(max(v) for _, v in curves)
        bottom = min(min(v) for _, v in curves)
        span = (top - bottom) or 1.0
        for k, (name, values) in enumerate(curves):
            n = max(len(values) - 1, 1)
            colour = colours[k % len(colours)]

            def pts(vs: list[float]) -> list[tuple[float, float]]:
                return [(x0 + (x1 - x0) * i / n, y1 - (y1 - y0) * (v - bottom) / span) for i, v in enumerate(vs)]

            if len(values) > 1:
                draw.line(pts(values), fill="#c8c8c8", width=1)
                draw.line(pts(_smooth(values, max(1, len(values) // 50))), fill=colour, width=2)
            draw.text((x1 - 160, y0 + 14 * k), f"{name}: {len(values)} steps, last {values[-1]:.4f}",
                      fill=colour, font=font)
        draw.text((4, y0 - 4), f"{top:.3g}", fill="black", font=font)
        draw.text((4, y1 - 8), f"{bottom:.3g}", fill="black", font=font)
    draw.text((x0, y1 + 10), "step", fill="black", font=font)
    img.save(path, format="PNG")


def _record_dir(path: str | Path) -> Path | None:
    p = Path(path).expanduser()
    for candidate in (p, p.parent) if p.is_dir() else (p.parent,):
        if (candidate / TRAIN_JSON).is_file():
            return candidate
    return None


def read_train_record(path: str | Path) -> dict | None:
    """The train.json of a training output (DIR, DIR/model, DIR/lora.safetensors, DIR/embedding.pt), or None."""
    root = _record_dir(path)
    if root is None:
        return None
    try:
        record = json.loads((root / TRAIN_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    p = Path(path).expanduser().resolve()
    if p != root.resolve() and not _names_output(record, root, p):
        return None
    return record


def _names_output(record: dict, root: Path, p: Path) -> bool:
    """True when the path is an output the record lists (and a file's content still matches)."""
    for info in record.get("outputs", {}).values():
        target = (root / info["path"]).resolve()
        if target != p:
            continue
        if "sha256" in info:
            return p.is_file() and sha256_file(p) == info["sha256"]
        return True
    return False


def training_chain(path: str | Path) -> dict | None:
    """What a trained model was made from, for lineage: method, base and data fingerprints,
    image count, hyperparameters, final loss (no per-image paths). None if not trained here."""
    record = read_train_record(path)
    if record is None:
        return None
    keys = ("name", "method", "spec_hash", "seed", "base", "base_fingerprint", "data_fingerprint",
            "captions_fingerprint", "images", "hyperparameters", "final_loss", "outputs", "output_fingerprint")
    chain = {k: record.get(k) for k in keys}
    chain["data_source"] = record.get("data", {}).get("source")
    chain["train_json"] = str(_record_dir(path) / TRAIN_JSON)
    return chain


def training_reference(path: str | Path) -> list[str] | None:
    """The images a model was trained on (absolute paths; phantom sets re-made in the cache when
    missing), for screening against them. None when the path has no train.json."""
    record = read_train_record(path)
    if record is None:
        return None
    source = record.get("data", {}).get("source", {})
    if source.get("kind") == "phantoms":
        from synthdata.training.data import phantom_set
        from synthdata.training.spec import PhantomSource

        folder = phantom_set(PhantomSource(**{k: source[k] for k in ("count", "seed", "size", "labels")}))
        return [str(folder / rel) for rel in record["training_images"]]
    if source.get("kind") == "webdataset":
        return sorted({i.split("#", 1)[0] for i in record["training_images"]})
    return list(record["training_images"])


def _trained_parts(generator) -> list[tuple[str, Path]]:
    """(role, path) of the generator's model folder and adapter files."""
    from synthdata.fingerprint import model_folder

    parts = [("model", model_folder(generator))]
    parts += [(f"textual_inversion[{i}]", Path(t.path)) for i, t in enumerate(generator.textual_inversion)]
    parts += [(f"lora[{i}]", Path(lo.path)) for i, lo in enumerate(generator.lora)]
    return parts


def generator_training(generator) -> dict:
    """{role: training_chain} for the parts of a generator that `synthdata train` made (run.json)."""
    chains = {role: training_chain(path) for role, path in _trained_parts(generator)}
    return {role: chain for role, chain in chains.items() if chain is not None}


def resolve_from_training(memorization, generator):
    """`memorization` with `from-training` replaced by the images the generator's model and
    adapters were trained on; unchanged when the reference does not ask for it."""
    from synthdata.errors import ModelError

    if "from-training" not in memorization.reference:
        return memorization
    images: list[str] = []
    for _, path in _trained_parts(generator):
        images += training_reference(path) or []
    if not images:
        raise ModelError(f"memorization.reference: 'from-training' needs a model or adapter made by "
                        f"`synthdata train` (a train.json beside it); {generator.model!r} and its "
                        f"adapters have none: list the training images instead")
    reference = [r for r in memorization.reference if r != "from-training"] + sorted(set(images))
    return memorization.model_copy(update={"reference": reference})
