"""Planted sets for `bench_memorization.py`: real images from packages, their edited copies
and hard negatives (see that script's docstring for the splits and edits).

Real images only, from packages (test data, never outputs): pydicom's test files, the
`pydicom-data` wheel's clinical DICOMs and nibabel's test volumes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    ref_id: str = ""   # its id in the written reference (for recall@k of the retrievers)


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
    out += geometric_copies(d, rng, held_out)
    for _ in range(3):
        start = d if f.values is None else export(render(f, str(rng.choice(
            ["minmax", "percentile", "window"]))) if rng.random() < 0.3 else f.display)
        names = E.random_edit(rng, 3)
        out.append(("combo", E.apply(start, names, rng)))
    return out


def _sign(rng: np.random.Generator) -> float:
    return float(rng.choice([-1.0, 1.0]))


def geometric_copies(d: np.ndarray, rng: np.random.Generator, held_out: bool
                     ) -> list[tuple[str, np.ndarray]]:
    """The geometric edits of issue 17, each alone: shifts, rotations with and without zoom,
    crops to 60% of the area, aspect changes, slight perspective, the image inside a
    screenshot (border and burned-in text), and the issue's combinations (flip + 3 degrees;
    3 degrees + JPEG 60 + gamma 1.3). Held-out: parameters drawn anywhere in the ranges."""
    from synthdata.screening import edits as E

    u = rng.uniform
    if held_out:
        shifts = [(_sign(rng) * u(0.02, 0.1), _sign(rng) * u(0, 0.1)) for _ in range(2)]
        rots = [_sign(rng) * u(3, 6), _sign(rng) * u(6, 10)]
        zooms = [(_sign(rng) * u(3, 10), u(0.85, 0.97)), (_sign(rng) * u(3, 10), u(1.03, 1.15))]
        areas = [u(0.6, 0.7), u(0.6, 0.8)]
        aspects = [u(0.85, 0.93), u(1.07, 1.15)]
    else:
        shifts, rots = [(0.06, 0.0), (-0.1, 0.05)], [5.0, -10.0]
        zooms, areas, aspects = [(4.0, 0.92), (-8.0, 1.15)], [0.6, 0.6], [0.85, 1.15]
    out = [("shift", E.shift(d, fx, fy)) for fx, fy in shifts]
    out += [("rotate5-10", E.rotate(d, r)) for r in rots]
    out += [("rotate+zoom", E.rotate(d, r, z)) for r, z in zooms]
    out += [("crop60", E.crop(d, float(np.sqrt(a)), u(0, 1), u(0, 1))) for a in areas]
    out += [("aspect", E.aspect(d, a)) for a in aspects]
    out += [("crop60+aspect", E.aspect(E.crop(d, float(np.sqrt(areas[0])), u(0, 1), u(0, 1)),
                                       aspects[1]))]
    out += [("perspective", E.perspective(d, u(0.03, 0.05), rng))]
    out += [("screenshot", E.screenshot(d, rng)) for _ in range(2)]
    out += [("flip+rotate3", E.rotate(E.dihedral(d, "flip_lr"), 3.0)),
            ("rotate3+jpeg60+gamma1.3", E.gamma(E.jpeg(E.rotate(d, 3.0), 60), 1.3))]
    return out


def negatives_of(f: RealFrame, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(edit, image): a negative exported and edited as copies are (the same geometric edits
    too: other patients under the same edits)."""
    from synthdata.screening import edits as E

    d = export(f.display)
    u = rng.uniform
    return [("exact", d), ("dihedral", E.dihedral(d, str(rng.choice(E.DIHEDRAL[1:])))),
            ("invert", E.invert(d)), ("jpeg50", E.jpeg(d, 50)), ("blur1.5", E.blur(d, 1.5)),
            ("crop85", E.crop(d, 0.85, u(0, 1), u(0, 1))),
            ("shift", E.shift(d, _sign(rng) * u(0.02, 0.1), _sign(rng) * u(0, 0.1))),
            ("rotate+zoom", E.rotate(d, _sign(rng) * u(3, 10), u(0.85, 1.15))),
            ("crop60", E.crop(d, float(np.sqrt(u(0.6, 0.8))), u(0, 1), u(0, 1))),
            ("aspect", E.aspect(d, u(0.85, 1.15))),
            ("perspective", E.perspective(d, u(0.02, 0.05), rng)),
            ("screenshot", E.screenshot(d, rng)),
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
            for f in frames:
                f.ref_id = f"{folder.name}/{src.name}.dcm" + (
                    f"#frame={f.index}" if len(frames) > 1 else "")
        else:  # a NIfTI holding the reference slices of volume 0 only
            img = nib.as_closest_canonical(nib.load(str(src.path)))
            data = np.asarray(img.dataobj)
            vol = data[..., 0] if data.ndim == 4 else data
            keep_slices = sorted(set(src.frames or ()) | set(range(min(src.frames or (0,)),
                                                                   max(src.frames or (0,)) + 1)))
            nib.save(nib.Nifti1Image(vol[:, :, keep_slices], img.affine),
                     str(folder / f"{src.name}.nii.gz"))
            keep = src.frames or ()
            for f in frames:
                if f.index in keep_slices:
                    f.ref_id = (f"{folder.name}/{src.name}.nii.gz"
                                f"#slice={keep_slices.index(f.index)}")
        planted += [frames[i] for i in keep if i < len(frames)]
    # mlut_18 is vlut_04 under another LUT: a real duplicate, planted as a copy.
    if any(s.name == "vlut04" for s in refs):
        from synthdata.screening import decoders

        (_, frame), = [(0, f) for f in decoders.decode_dicom(_pydicom("mlut_18.dcm"))]
        planted.append(RealFrame("vlut04", -1, frame.image, None, [], False,
                                 f"{folder.name}/vlut04.dcm"))
    return planted


# The study duplicated under another PatientID in the duplicate-in-reference case (an MR in
# each split's reference, as in the issue).
DUPLICATED = {"tune": "MR2", "held-out": "MRsmall"}


def duplicate_reference(split: str, reference: Path, folder: Path) -> Path:
    """A copy of the split's reference holding one MR study twice: re-exported under another
    PatientID (a PACS merge or re-export), as the issue's auditor found."""
    import pydicom

    out = folder / "reference"
    shutil.copytree(reference, out)
    name = DUPLICATED[split]
    ds = pydicom.dcmread(out / f"{name}.dcm")
    ds.PatientID = "REEXPORT-0001"
    ds.PatientName = "REEXPORT^TEST"
    ds.save_as(out / f"{name}-reexport.dcm")
    return out


def build_queries(split: str, folder: Path, seed: int) -> tuple[list, Path]:
    """(queries [(kind, edit, source, image)], reference folder) of a split."""
    refs, negs = sources(split)
    rng = np.random.default_rng(seed)
    planted = write_reference(refs, folder / "reference")
    queries = []
    for f in planted:
        if f.index == -1:  # the real duplicate under another LUT
            queries.append(("copy", "real_duplicate_lut", f.ref_id, export(f.display)))
            continue
        queries += [("copy", e, f.ref_id, img) for e, img in copies_of(f, rng, split != "tune")]
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


