"""Memorization screening on planted copies of real medical images: recall per edit, false
positives on hard negatives, per matcher configuration, and cost against raw embed + FAISS.

Real images only, from packages (test data, never outputs): pydicom's test files, the
`pydicom-data` wheel's clinical DICOMs (CR radiographs MONOCHROME1 with a VOI window, MR, US,
head CT, multi-frame MR, VOI LUT, enhanced CT) and nibabel's test volumes. Two splits with
the roles of the files swapped, so one of them was never looked at while designing:

- `tune`: the reference holds 693 (head CT), RG1 (chest CR), MR2 (shoulder MR), US1 (US),
  emri (10-frame MR), vlut_04 (OT; mlut_18 is the same picture under another LUT: planted as
  a real duplicate), eCT (2-frame CT), CT_small, the Siemens abdominal MR, anatomical.nii and
  slices 0-11 of example4d.nii.gz (volume 0). Negatives: other patients of the same
  modalities (pancreas CT, leg CR, small MR, two US machines, NM, a test pattern, US cine
  frames, two small NIfTI volumes) and far slices 18-23 of example4d.
- `held-out`: the reference holds what `tune` used as negatives; the negatives are what
  `tune` copied; far slices: anatomical.nii slices 17-24 against 0-9 in the reference.
  Edit parameters are drawn at random within the same ranges (another seed).

Copies (of every reference image, frames and slices subsampled): exact; the 7 other
symmetries of the square (flip_lr is neurological vs radiological orientation); inversion;
gamma 0.7 and 1.4 (held-out: random in 0.7-1.4); renderings from the raw values (min-max with
no VOI window, a 1-99 percentile stretch, another window: the DICOM's second window or the
10-90 percentile range; MONOCHROME1 not inverted); crops to 85% centred and in a corner
(held-out: anywhere); 2x down-up; JPEG 50; Gaussian blur sigma 1.5; resizing to a square;
the mild edits of the issue's held-out set 1 (JPEG 70, noise sigma 3, brightness, rotation
by 2 degrees); and 3 random combinations of 1-3 edits each. Sources under 128 px are first upsampled to at
least 256 px (a generator's output size). Negatives get exact, a random symmetry, inversion,
JPEG 50, blur, a crop and a random combination: a negative stays a negative whatever its
export.

Per configuration, thresholds come from the product's own calibration (`threshold: auto` on
the reference: target recall 0.99 on copies it synthesizes, false-positive budget 1% on
other-patient pairs). Recall = share of copies rejected; false positives = share of
negatives not accepted (review counts). Cost per 1,000 query images: query data (embedding,
thumbnails) + search + verification + decision, side by side with the raw embedder + a raw
FAISS flat search (one row per real image) of the same embedders, alternated on a sample of
the queries, best of 3 rounds each (`--rounds`) (this machine is shared: the best round is the least
disturbed), one torch thread.

    python benchmarks/bench_memorization.py [--split tune|held-out|both] [--configs ...] [--record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import emit

CONFIGS = {
    "pixel": {"embedder": ["pixel"]},
    "efficientnet-lite0": {"embedder": ["efficientnet-lite0"]},
    "aligned<-efficientnet-lite0 (default)": {"embedder": ["aligned"],
                                              "retrievers": ["efficientnet-lite0"]},
    "aligned<-pixel": {"embedder": ["aligned"], "retrievers": ["pixel"]},
    "aligned<-pixel+efficientnet-lite0": {"embedder": ["aligned"],
                                          "retrievers": ["pixel", "efficientnet-lite0"]},
    "any(pixel, efficientnet-lite0)": {"embedder": ["pixel", "efficientnet-lite0"]},
    "any(aligned, efficientnet-lite0)": {"embedder": ["aligned", "efficientnet-lite0"]},
}
DEFAULT_CONFIG = "aligned<-efficientnet-lite0 (default)"


@dataclass
class Source:
    """A real file of the planted set: where it is, which images, which role per split."""

    name: str
    path: Path
    kind: str  # dicom | nifti
    frames: tuple[int, ...] | None = None   # DICOM frames / NIfTI slices of volume 0 to use
    far: tuple[int, ...] = ()               # slices held out as far-slice negatives


def _pydicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise SystemExit(f"{name} not found: pip install pydicom-data")
    return Path(path)


def _nibabel(name: str) -> Path:
    from nibabel.testing import data_path

    return Path(data_path) / name


def sources(split: str) -> tuple[list[Source], list[Source]]:
    """(reference sources, negative sources) of a split."""
    a = [Source("693", _pydicom("693_UNCR.dcm"), "dicom"),
         Source("RG1", _pydicom("RG1_UNCR.dcm"), "dicom"),
         Source("MR2", _pydicom("MR2_UNCR.dcm"), "dicom"),
         Source("US1", _pydicom("US1_UNCR.dcm"), "dicom"),
         Source("emri", _pydicom("emri_small.dcm"), "dicom", tuple(range(0, 10, 2))),
         Source("vlut04", _pydicom("vlut_04.dcm"), "dicom"),
         Source("eCT", _pydicom("eCT_Supplemental.dcm"), "dicom"),
         Source("CTsmall", _pydicom("CT_small.dcm"), "dicom"),
         Source("siemensMR", _pydicom("MR-SIEMENS-DICOM-WithOverlays.dcm"), "dicom"),
         Source("anat", _nibabel("anatomical.nii"), "nifti", tuple(range(0, 25, 3))),
         Source("e4", _nibabel("example4d.nii.gz"), "nifti", tuple(range(0, 12, 2)),
                far=tuple(range(18, 24)))]
    b = [Source("pancreasCT", _pydicom("explicit_VR-UN.dcm"), "dicom"),
         Source("RG3", _pydicom("RG3_UNCR.dcm"), "dicom"),
         Source("MRsmall", _pydicom("MR_small.dcm"), "dicom"),
         Source("OBXXXX1A", _pydicom("OBXXXX1A.dcm"), "dicom"),
         Source("aloka", _pydicom("gdcm-US-ALOKA-16.dcm"), "dicom"),
         Source("NM", _pydicom("JPEG2000_UNC.dcm"), "dicom"),
         Source("dfl", _pydicom("image_dfl.dcm"), "dicom"),
         Source("cine", _pydicom("color3d_jpeg_baseline.dcm"), "dicom", tuple(range(0, 120, 15))),
         Source("nifti2", _nibabel("example_nifti2.nii.gz"), "nifti", tuple(range(0, 12, 2))),
         Source("functional", _nibabel("functional.nii"), "nifti", (0, 1, 2))]
    if split == "tune":
        return a, b
    anat = Source("anat", _nibabel("anatomical.nii"), "nifti", tuple(range(0, 10)),
                  far=tuple(range(17, 25)))
    negatives = [s for s in a if s.name not in ("anat", "e4")] + [
        Source("e4", _nibabel("example4d.nii.gz"), "nifti", tuple(range(0, 24, 4)))]
    return b + [anat], negatives


@dataclass
class RealFrame:
    """One real image with its raw values and display conventions."""

    source: str
    index: int
    display: np.ndarray
    values: np.ndarray | None
    windows: list[tuple[float, float]]
    mono1: bool


def read_frames(src: Source) -> list[RealFrame]:
    """Every image of a source file, as the reference reader renders it, with raw values."""
    from synthdata.screening import decoders

    out = []
    if src.kind == "dicom":
        import pydicom
        from pydicom.pixels import iter_pixels

        ds = pydicom.dcmread(src.path)
        centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
        centers = list(centers) if hasattr(centers, "__len__") and not isinstance(
            centers, str) else ([centers] if centers is not None else [])
        widths = list(widths) if hasattr(widths, "__len__") and not isinstance(
            widths, str) else ([widths] if widths is not None else [])
        windows = [(float(c), float(w)) for c, w in zip(centers, widths)]
        mono1 = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
        for i, frame in enumerate(iter_pixels(ds)):
            out.append(RealFrame(src.name, i, decoders._render_dicom_frame(frame, ds),
                                 decoders.dicom_values(frame, ds), windows, mono1))
    else:
        import nibabel as nib

        img = nib.as_closest_canonical(nib.load(str(src.path)))
        data = np.asarray(img.dataobj, dtype=np.float64)
        vol = data[..., 0] if data.ndim == 4 else data
        for s in range(vol.shape[2]):
            plane = np.flipud(vol[:, :, s].T)
            out.append(RealFrame(src.name, s, decoders.to_uint8(plane), plane, [], False))
    return out


def render(f: RealFrame, how: str) -> np.ndarray | None:
    """The frame rendered from its raw values another way, as displayed (None: not possible)."""
    from synthdata.screening import decoders

    if f.values is None:
        return None
    v = f.values
    if how == "minmax":
        img = decoders.to_uint8(v)
    elif how == "percentile":
        img = decoders.percentile_uint8(v, 1.0, 99.0)
    elif how == "window":
        if len(f.windows) > 1:
            c, w = f.windows[1]
            img = decoders.to_uint8(v, c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2)
        else:
            img = decoders.percentile_uint8(v, 10.0, 90.0)
    elif how == "mono1_not_inverted":
        return (255 - f.display).astype(np.uint8) if f.mono1 else None
    else:
        raise ValueError(how)
    return (255 - img).astype(np.uint8) if f.mono1 else img


def export(img: np.ndarray) -> np.ndarray:
    """A generator's output size: sources under 128 px upsampled to at least 256 px."""
    from synthdata.screening import edits

    return edits.export(img)


def copies_of(f: RealFrame, rng: np.random.Generator, held_out: bool
              ) -> list[tuple[str, np.ndarray]]:
    """(edit, image) of every planted copy of one real frame."""
    from synthdata.screening import edits as E

    d = export(f.display)
    out = [("exact", d)] + [(g, E.dihedral(d, g)) for g in E.DIHEDRAL[1:]]
    out.append(("invert", E.invert(d)))
    gammas = (rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.4)) if held_out else (0.7, 1.4)
    out += [("gamma<1", E.gamma(d, gammas[0])), ("gamma>1", E.gamma(d, gammas[1]))]
    for how in ("minmax", "percentile", "window", "mono1_not_inverted"):
        img = render(f, how)
        if img is not None and not np.array_equal(img, f.display):
            out.append((f"render:{how}", export(img)))
    positions = [(rng.uniform(0, 1), rng.uniform(0, 1)) for _ in range(2)] if held_out \
        else [(0.5, 0.5), (0.0, 0.0)]
    out += [("crop85", E.crop(d, 0.85, *positions[0])), ("crop85", E.crop(d, 0.85, *positions[1]))]
    out += [("down_up2", E.down_up(d)), ("jpeg50", E.jpeg(d, 50)), ("blur1.5", E.blur(d, 1.5)),
            ("square", E.resize(d, 256, 256))]
    # The mild edits of the held-out set 1: JPEG 70, noise, brightness, 2 degrees.
    out += [("jpeg70", E.jpeg(d, 70)), ("noise3", E.noise(d, 3.0, rng)),
            ("brightness", E.linear(d, 1.1, 10)), ("rotate2", E.rotate(d, 2.0))]
    for _ in range(3):
        start = d if f.values is None else export(render(f, str(rng.choice(
            ["minmax", "percentile", "window"]))) if rng.random() < 0.3 else f.display)
        names = E.random_edit(rng, 3)
        out.append(("combo", E.apply(start, names, rng)))
    return out


def negatives_of(f: RealFrame, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(edit, image): a negative exported and edited as copies are."""
    from synthdata.screening import edits as E

    d = export(f.display)
    return [("exact", d), ("dihedral", E.dihedral(d, str(rng.choice(E.DIHEDRAL[1:])))),
            ("invert", E.invert(d)), ("jpeg50", E.jpeg(d, 50)), ("blur1.5", E.blur(d, 1.5)),
            ("crop85", E.crop(d, 0.85, rng.uniform(0, 1), rng.uniform(0, 1))),
            ("combo", E.apply(d, E.random_edit(rng, 3), rng))]


def write_reference(refs: list[Source], folder: Path) -> list[RealFrame]:
    """Copy or cut the reference files into `folder`; return the frames planted as copies."""
    import nibabel as nib

    folder.mkdir(parents=True)
    planted = []
    for src in refs:
        frames = read_frames(src)
        if src.kind == "dicom":
            shutil.copy(src.path, folder / f"{src.name}.dcm")
            keep = src.frames or tuple(range(len(frames)))
        else:  # a NIfTI holding the reference slices of volume 0 only
            img = nib.as_closest_canonical(nib.load(str(src.path)))
            data = np.asarray(img.dataobj)
            vol = data[..., 0] if data.ndim == 4 else data
            keep_slices = sorted(set(src.frames or ()) | set(range(min(src.frames or (0,)),
                                                                   max(src.frames or (0,)) + 1)))
            nib.save(nib.Nifti1Image(vol[:, :, keep_slices], img.affine),
                     str(folder / f"{src.name}.nii.gz"))
            keep = src.frames or ()
        planted += [frames[i] for i in keep if i < len(frames)]
    # mlut_18 is vlut_04 under another LUT: a real duplicate, planted as a copy.
    if any(s.name == "vlut04" for s in refs):
        from synthdata.screening import decoders

        (_, frame), = [(0, f) for f in decoders.decode_dicom(_pydicom("mlut_18.dcm"))]
        planted.append(RealFrame("vlut04", -1, frame.image, None, [], False))
    return planted


def build_queries(split: str, folder: Path, seed: int) -> tuple[list, Path]:
    """(queries [(kind, edit, source, image)], reference folder) of a split."""
    refs, negs = sources(split)
    rng = np.random.default_rng(seed)
    planted = write_reference(refs, folder / "reference")
    queries = []
    for f in planted:
        if f.index == -1:  # the real duplicate under another LUT
            queries.append(("copy", "real_duplicate_lut", f.source, export(f.display)))
            continue
        queries += [("copy", e, f.source, img) for e, img in copies_of(f, rng, split != "tune")]
    for src in negs:
        frames = read_frames(src)
        keep = src.frames or tuple(range(len(frames)))
        for i in keep:
            if i < len(frames):
                queries += [("negative", e, src.name, img) for e, img in
                            negatives_of(frames[i], rng)]
    for src in refs:
        if src.far:
            frames = read_frames(src)
            for i in src.far:
                queries += [("far_slice", e, src.name, img) for e, img in
                            negatives_of(frames[i], rng)]
    return queries, folder / "reference"


def raw_search(names: list[str], entries: dict[str, str], reference: Path) -> dict:
    """Per embedder, a raw FAISS flat index of the real images (one row each, display)."""
    import faiss

    from synthdata.screening.embedders import get_embedder
    from synthdata.screening.reference import iter_reference

    reals = [im.pixels for im in iter_reference([str(reference)])]
    out = {}
    for name in names:
        vectors = get_embedder(entries[name]).embed(reals)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        out[name] = index
    return out


def cost(setup, screener, images: list[np.ndarray], reference: Path, rounds: int = 3) -> dict:
    """Seconds per 1,000 images: ours (query data, views search, verification, decision) and
    raw (the same embedders + a raw FAISS flat search), alternated, best of `rounds`."""
    from synthdata.screening.decide import decide_all

    entries = dict(setup.embedders)
    raw_indexes = raw_search(list(entries), entries, reference)
    embedders = {e.name: e for e in setup.load_embedders()}  # the same objects, batch sizes
    ours, raw, parts = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for name, index in raw_indexes.items():
            index.search(embedders[name].embed(images), setup.k)
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        data = screener.query_data(images)
        t1 = time.perf_counter()
        decide_all(screener.match(data), dict(setup.thresholds), setup.review_band,
                   list(setup.deciding))
        ours.append(time.perf_counter() - t)
        parts.append((t1 - t, time.perf_counter() - t1))
    n = len(images) / 1000
    best = int(np.argmin(ours))
    return {"images": len(images), "ours_s": round(min(ours) / n, 2),
            "query_data_s": round(parts[best][0] / n, 2),
            "match_and_decide_s": round(parts[best][1] / n, 2),
            "raw_embed_plus_faiss_s": round(min(raw) / n, 2),
            "ratio": round(min(ours) / min(raw), 3)}


def evaluate(config: str, queries: list, reference: Path, data_cache: dict,
             cost_sample: int, rounds: int = 3) -> dict:
    """Run one configuration through the product's own prepare / match / decide."""
    from synthdata.screening.decide import decide_all
    from synthdata.screening.matchers import prepare_matchers
    from synthdata.spec.models import Memorization

    cfg = Memorization(reference=[str(reference)], **CONFIGS[config])
    t0 = time.perf_counter()
    setup, context = prepare_matchers(cfg)
    prepare_s = time.perf_counter() - t0
    screener = setup.screener()
    images = [q[3] for q in queries]
    data = {}
    for name in setup.names:  # query data per matcher, computed once per run and reused
        if name not in data_cache:
            data_cache[name] = screener.aligned.query_data(images) if name == "aligned" else \
                next(e for e in screener.embedders if e.name == name).embed(images)
        data[name] = data_cache[name]
    result = screener.match(data)
    decided = decide_all(result, dict(setup.thresholds), setup.review_band, list(setup.deciding))
    per_edit: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    neg: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for q, d in zip(queries, decided):
        kind, edit = q[0], q[1]
        if kind == "copy":
            per_edit[edit][0] += d.decision == "reject"
            per_edit[edit][1] += 1
        else:
            neg[kind][0] += d.decision != "accept"
            neg[kind][1] += 1
    caught = sum(v[0] for v in per_edit.values())
    copies = sum(v[1] for v in per_edit.values())
    flagged = sum(v[0] for v in neg.values())
    negatives = sum(v[1] for v in neg.values())
    sample = [images[i] for i in np.random.default_rng(0).permutation(len(images))[:cost_sample]]
    return {
        "thresholds": {k: round(float(v), 4) for k, v in setup.thresholds},
        "calibration": {k: {x: v.get(x) for x in ("recall", "false_positive_estimate", "copies",
                                                  "other_patient_pairs", "warning")}
                        for k, v in context["threshold_info"].items()},
        "recall": round(caught / copies, 4), "copies": copies,
        "false_positive_rate": round(flagged / negatives, 4), "negatives": negatives,
        "false_positives_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(neg.items())},
        "recall_by_edit": {k: round(v[0] / v[1], 3) for k, v in sorted(per_edit.items())},
        "missed_by_edit": {k: v[1] - v[0] for k, v in sorted(per_edit.items()) if v[0] < v[1]},
        "cost_per_1000": cost(setup, screener, sample, reference, rounds),
        "prepare_s": round(prepare_s, 1),
        "reference": {k: context["reference"][k] for k in ("images", "files", "groups",
                                                           "group_sources", "rows")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["tune", "held-out", "both"], default="both")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--cost-sample", type=int, default=200,
                        help="images timed (alternating rounds, best of each)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--record", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    payload: dict = {"torch_threads": 1, "splits": {}}
    splits = ["tune", "held-out"] if args.split == "both" else [args.split]
    with tempfile.TemporaryDirectory(prefix="bench-memorization-") as tmp:
        os.environ["SYNTHDATA_CACHE"] = str(Path(tmp) / "cache")
        for i, split in enumerate(splits):
            t = time.perf_counter()
            queries, reference = build_queries(split, Path(tmp) / split, seed=1000 + i)
            counts = defaultdict(int)
            for q in queries:
                counts[q[0]] += 1
            out = {"queries": dict(counts), "build_s": round(time.perf_counter() - t, 1),
                   "configs": {}}
            cache: dict = {}
            for config in args.configs:
                out["configs"][config] = evaluate(config, queries, reference, cache,
                                                  args.cost_sample, args.rounds)
                print(config, split, {k: out["configs"][config][k] for k in
                                      ("recall", "false_positive_rate", "cost_per_1000")},
                      flush=True)
            payload["splits"][split] = out
    emit("memorization", payload, args.record)


if __name__ == "__main__":
    main()
