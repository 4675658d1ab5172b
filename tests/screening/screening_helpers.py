"""Helpers of the screening tests: real medical images, planted copies, raw shards.

Real images come from registry packages (pydicom's and nibabel's bundled test data); they
are used as reference and for planted copies only inside temporary folders.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance

from synthdata.fsutil import atomic_path
from synthdata.privacy import pseudonymize
from synthdata.screening.kinds import REAL_KIND
from synthdata.folder import DatasetFolder
from synthdata.folder.shards import Sample, encode_png, write_marker, write_tar

PYDICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "JPEG2000.dcm",
                 "examples_overlay.dcm", "image_dfl.dcm", "SC_rgb_rle_2frame.dcm",
                 "examples_palette.dcm", "examples_rgb_color.dcm"]
NIBABEL_FILES = ["anatomical.nii", "example4d.nii.gz"]
# Real images NOT in the reference: distinct images that must pass.
HELD_OUT_PYDICOM = ["examples_ybr_color.dcm", "liver_1frame.dcm"]
HELD_OUT_NIBABEL = ["functional.nii", "example_nifti2.nii.gz"]
LABELS = ["normal", "pneumonia"]


def pydicom_dir() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def nibabel_dir() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data"


def real_images(paths: list[str]) -> list[tuple[str, np.ndarray]]:
    """(id, uint8 image) of everything under paths, as the reference reader renders them."""
    from synthdata.screening.reference import iter_reference

    return [(im.id, im.pixels) for im in iter_reference(paths)]


def gray(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img).convert("L")


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("L")


def _noise(img: Image.Image, sigma: float, seed: int) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + np.random.default_rng(seed).normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def near_exact_copies(img: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Near-exact copies: what a model that memorised an image would emit."""
    g = gray(img)
    return {
        "exact": np.asarray(g),
        "resize64": np.asarray(g.resize((64, 64), Image.Resampling.BILINEAR)),
        "noise2": np.asarray(_noise(g, 2.0, seed)),
        "bright": np.asarray(ImageEnhance.Brightness(g).enhance(1.1)),
        "jpeg90": np.asarray(_jpeg(g, 90)),
    }


def augmented_copies(img: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Stronger augmentations: crop, small rotation, brightness, noise, JPEG, resize."""
    g = gray(img)
    w, h = g.size
    dx, dy = max(1, w // 12), max(1, h // 12)
    return {
        "crop": np.asarray(g.crop((dx, dy, w - dx, h - dy)).resize((w, h))),
        "rotate5": np.asarray(g.rotate(5, resample=Image.Resampling.BILINEAR)),
        "contrast": np.asarray(ImageEnhance.Contrast(
            ImageEnhance.Brightness(g).enhance(1.25)).enhance(0.8)),
        "noise8": np.asarray(_noise(g, 8.0, seed)),
        "jpeg50": np.asarray(_jpeg(g, 50)),
        "resize50": np.asarray(g.resize((max(8, w // 2), max(8, h // 2)))),
    }


def phantom(seed: int, size: int = 64) -> np.ndarray:
    """A distinct synthetic image: random ellipses over a smooth background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 60 + 40 * np.sin(rng.uniform(1, 6) * xx + rng.uniform(0, 6)) * np.cos(
        rng.uniform(1, 6) * yy)
    for _ in range(rng.integers(3, 8)):
        cx, cy, rx, ry = rng.uniform(0.2, 0.8, 2).tolist() + rng.uniform(0.05, 0.3, 2).tolist()
        img = img + rng.uniform(-80, 120) * (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_raw_dataset(out_dir: Path, images: list[tuple[str, np.ndarray]], shard_size: int,
                      name: str = "screen") -> dict[str, str]:
    """Raw shards as the worker writes them (tar, rows parquet, marker); returns key -> tag.

    `images` are (tag, uint8 image); keys follow the plan's `<name>-<index:09d>`.
    """
    folder = DatasetFolder(out_dir)
    tags: dict[str, str] = {}
    for shard, start in enumerate(range(0, len(images), shard_size)):
        samples, rows = [], []
        for index in range(start, min(start + shard_size, len(images))):
            tag, image = images[index]
            key = f"{name}-{index:09d}"
            tags[key] = tag
            label_index = index % len(LABELS)
            png = encode_png(image)
            meta = {"key": key, "index": index, "label": LABELS[label_index],
                    "label_index": label_index, "prompt": "a chest x-ray", "seed": index,
                    "shard": shard, "batch": 0}
            samples.append(Sample(key, png, meta, label_index, "a chest x-ray"))
            rows.append({"index": index, "key": key, "label": LABELS[label_index],
                         "label_index": label_index, "shard": shard, "batch": 0,
                         "png_sha256": hashlib.sha256(png).hexdigest()})
        write_tar(folder.raw_tar(shard), samples)
        with atomic_path(folder.raw_rows(shard)) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        write_marker(folder, shard, {"count": len(samples)})
    return tags


def held_out_images() -> list[tuple[str, np.ndarray]]:
    """Real medical images that are not in the reference (distinct: must be accepted)."""
    return real_images([str(pydicom_dir() / f) for f in HELD_OUT_PYDICOM]
                       + [str(nibabel_dir() / f) for f in HELD_OUT_NIBABEL])


def planted_images(reference: list[tuple[str, np.ndarray]], sources: list[int],
                   n_phantoms: int, held_every: int = 1) -> list[tuple[str, np.ndarray]]:
    """(tag, image) of copies of reference[sources] and distinct images, interleaved.

    Tags: "copy:<aug>:<real id>", "aug:<aug>:<real id>", "distinct:<kind>:<id>".
    """
    out: list[tuple[str, np.ndarray]] = []
    for i in sources:
        rid, img = reference[i]
        out += [(f"copy:{name}:{rid}", c) for name, c in near_exact_copies(img, i).items()]
        out += [(f"aug:{name}:{rid}", c) for name, c in augmented_copies(img, i).items()]
    out += [(f"distinct:held:{rid}", img) for rid, img in held_out_images()[::held_every]]
    out += [(f"distinct:phantom:{s}", phantom(s)) for s in range(n_phantoms)]
    order = np.random.default_rng(7).permutation(len(out))
    return [out[i] for i in order]


def figures(out_dir: Path, tags: dict[str, str]) -> dict:
    """Per kind and augmentation: samples, share rejected, share whose top-1 is the source."""
    table = pq.read_table(out_dir / "screening.parquet").to_pylist()
    stats: dict[str, dict] = {}
    for row in table:
        kind, aug, src = tags[row["key"]].split(":", 2)
        s = stats.setdefault(f"{kind}:{aug}", {"n": 0, "rejected": 0, "flagged": 0,
                                                "top1_source": 0, "min_sim": 1.0})
        s["n"] += 1
        s["rejected"] += row["decision"] == "reject"
        s["flagged"] += row["decision"] != "accept"
        s["top1_source"] += row["nearest_real_id"] == pseudonymize(src, REAL_KIND)
        s["min_sim"] = min(s["min_sim"], row["similarity"] if row["similarity"] is not None
                           else -1.0)
    return stats
