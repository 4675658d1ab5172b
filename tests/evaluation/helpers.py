"""Constructed labelled image sets for evaluation tests (procedural pictures, not clinical data).

Each label draws a different structure on a noisy background: `normal` a smooth gradient,
`pneumonia` a bright blob, `effusion` a bright band at the bottom. Seeded, 64 x 64 gray.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("effusion", "normal", "pneumonia")


def picture(label: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One gray uint8 picture of a label."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 80 + 60 * yy + rng.normal(0, 12, (size, size))
    if label == "pneumonia":
        cy, cx = rng.uniform(0.3, 0.7, 2)
        img += 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
    elif label == "effusion":
        img[int(size * rng.uniform(0.7, 0.8)):, :] += 90
    return np.clip(img, 0, 255).astype(np.uint8)


def labelled_images(per_label: int, seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(name, label, image) triples, `per_label` of each label."""
    rng = np.random.default_rng(seed)
    return [(f"{label}-{i:03d}", label, picture(label, rng)) for label in LABELS
            for i in range(per_label)]


def png(image: np.ndarray) -> bytes:
    """PNG bytes of an image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_imagefolder(root: Path, items) -> Path:
    """root/<label>/<name>.png."""
    for name, label, image in items:
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{name}.png").write_bytes(png(image))
    return root


def write_table(root: Path, items, kind: str = "csv") -> Path:
    """root/images/<name>.png and root/metadata.csv (or labels.parquet) with path,label,patient_id."""
    import pandas as pd

    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (name, label, image) in enumerate(items):
        (root / "images" / f"{name}.png").write_bytes(png(image))
        rows.append({"path": f"images/{name}.png", "label": label, "patient_id": f"pt{n // 2:04d}",
                     "caption": f"a picture of {label}"})
    df = pd.DataFrame(rows)
    if kind == "csv":
        df.to_csv(root / "metadata.csv", index=False)
        return root
    df.to_parquet(root / "labels.parquet")
    return root / "labels.parquet"


def write_webdataset(root: Path, items, per_tar: int = 10, label_in: str = "json") -> Path:
    """root/part-NNN.tar with KEY.png and KEY.json {"label"} (or KEY.cls holding the label)."""
    root.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(items), per_tar):
        with tarfile.open(root / f"part-{start // per_tar:03d}.tar", "w") as tar:
            for name, label, image in items[start:start + per_tar]:
                key = name.replace("-", "_")
                extra = (f"{key}.json", json.dumps({"label": label}).encode()) if label_in == "json" \
                    else (f"{key}.cls", label.encode())
                for member, data in ((f"{key}.png", png(image)), extra):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root
