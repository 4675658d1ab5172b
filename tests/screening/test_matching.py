"""Matching and calibration on real DICOM: invariances, patient groups, failing closed, and the
privacy of the reference cache.

Real images: pydicom's test files (CT_small, MR_small, examples_overlay, image_dfl, JPEG2000,
emri_small's 10 frames written as a one-patient DICOM series).
"""

from __future__ import annotations

import copy
import io
import json
import os
import stat
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from screening_helpers import phantom, pydicom_dir

from synthdata.fsutil import cache_root
from synthdata.screening import edits
from synthdata.screening.cache import prepare_reference, screening_cache
from synthdata.screening.calibrate import CalibrationError
from synthdata.screening.decide import decide_all
from synthdata.screening.embedder_factory import get_embedder
from synthdata.screening.matchers import prepare_matchers
from synthdata.screening.reference import ReaderOptions, iter_reference
from synthdata.folder.shards import encode_png
from synthdata.spec.models import Memorization

OTHERS = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "image_dfl.dcm", "JPEG2000.dcm"]
# Calibration sizes where a hand-set threshold is only measured (the figures are not checked).
MEASURE = {"calibration_images": 10, "calibration_copies": 20, "calibration_negatives": 20}


def _series(folder, patient_id: str | None) -> None:
    """emri_small's frames (pydicom-data) as single-frame files of one patient, or of none."""
    from pydicom.data import get_testdata_file

    source = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    for i, frame in enumerate(source.pixel_array):
        one = copy.deepcopy(source)
        one.NumberOfFrames = 1
        one.PixelData = frame.tobytes()
        one.PatientID = patient_id or ""
        if patient_id is None:
            del one.StudyInstanceUID
        one.save_as(folder / f"slice{i:02d}.dcm")


@pytest.fixture(scope="module")
def series_reference(tmp_path_factory):
    """A one-patient 10-slice MR series beside five other patients; and the same files with
    the series' patient unstated (grouped by file)."""
    out = {}
    for name, pid in (("by-patient", "SERIES-0001"), ("by-file", None)):
        root = tmp_path_factory.mktemp(name) / "cohort"
        (root / "series").mkdir(parents=True)
        _series(root / "series", pid)
        for other in OTHERS:
            (root / other).write_bytes((pydicom_dir() / other).read_bytes())
        out[name] = root
    return out


def _options() -> dict:
    return {"options": ReaderOptions(), "exact_limit": 100_000, "memory_gb": 1.0}


def test_a_series_of_one_patient_does_not_set_the_threshold(series_reference):
    pixel = get_embedder("pixel")
    by_patient = prepare_reference([str(series_reference["by-patient"])], pixel, **_options())
    by_file = prepare_reference([str(series_reference["by-file"])], pixel, **_options())
    groups = np.load(f"{by_patient.handle.path}/groups.npy")
    ids = np.load(f"{by_patient.handle.path}/ids.npy")
    series = [g for i, g in zip(ids, groups) if "/series/" in i]
    assert len(series) == 10 and set(series) == {"patient:SERIES-0001"}
    assert by_patient.meta["groups"] == 6 and by_patient.meta["group_sources"]["patient"] == 5
    assert by_file.meta["group_sources"]["file"] == 10  # no patient stated: each file alone
    # Adjacent slices are near-identical; grouped by patient they never count as "other".
    assert by_file.nn_sims.max() > 0.9
    assert by_patient.nn_sims.max() < 0.9
    assert sorted(by_patient.nn_sims)[-1] < sorted(by_file.nn_sims)[-1]


def test_calibration_reports_recall_and_false_positives_by_patient(series_reference):
    cfg = Memorization(reference=[str(series_reference["by-patient"])], matchers=["aligned"],
                       retrievers=["pixel"], calibration_copies=120, calibration_negatives=150)
    setup, context = prepare_matchers(cfg)
    info = context["threshold_info"]["aligned"]
    assert info["sample_groups"] == 6 and info["copies"] == 120 and info["status"] == "ok"
    assert info["recall"] >= 0.97 and info["false_positive_estimate"] <= 0.01
    # Trials: the 15 sampled real images and 150 hard negatives, each against other patients.
    assert info["trials"] == info["trials_real"] + info["trials_hard_negatives"] == 165
    lo, hi = info["false_positive_interval"]
    assert lo <= info["false_positive_estimate"] <= hi and info["coarse"] == (hi - lo > 0.01)
    assert context["reference"]["groups"] == 6
    again, _ = prepare_matchers(cfg)  # cached: same thresholds, no recomputation
    assert again.thresholds == setup.thresholds


def test_copies_under_every_convention_match_their_source(series_reference):
    cfg = Memorization(reference=[str(series_reference["by-patient"])],
                       matchers=["aligned", "pixel"], retrievers=["pixel"], threshold=0.5,
                       **MEASURE)
    setup, _ = prepare_matchers(cfg)
    screener = setup.screener()
    real = {im.id: im for im in iter_reference([str(series_reference["by-patient"])])}
    ct = real["cohort/CT_small.dcm"]
    minmax = ct.alternates[0]  # exported without the VOI window... then flipped etc.
    copies = [edits.dihedral(ct.pixels, g) for g in edits.DIHEDRAL] + [
        edits.invert(ct.pixels), minmax, edits.dihedral(minmax, "transpose"),
        edits.crop(edits.export(ct.pixels), 0.85, 0.0, 1.0), edits.jpeg(ct.pixels, 50),
        edits.blur(edits.export(ct.pixels), 1.5), edits.gamma(ct.pixels, 1.4)]
    result = screener.match(screener.query_data(copies))
    aligned, pixel = result.results["aligned"], result.results["pixel"]
    assert all(ids[0] == "cohort/CT_small.dcm" for ids in aligned.ids)
    assert aligned.score.min() > 0.9
    assert all(g[0] == "patient:1CT1" for g in aligned.groups)
    assert pixel.score[:9].min() > 0.99  # symmetries and inversion: exact for pixel views


def test_blank_images_and_missing_neighbours_go_to_review(series_reference):
    cfg = Memorization(reference=[str(series_reference["by-patient"])], matchers=["aligned"],
                       retrievers=["pixel"], threshold=0.9, **MEASURE)
    setup, _ = prepare_matchers(cfg)
    screener = setup.screener()
    images = [np.full((64, 64), 0, np.uint8), np.full((80, 60, 3), 200, np.uint8), phantom(1)]
    result = screener.match(screener.query_data(images))
    decided = decide_all(result, dict(setup.thresholds), 0.0, list(setup.deciding))
    assert [d.decision for d in decided] == ["review", "review", "accept"]
    assert decided[0].note == decided[1].note == "blank or constant image"
    # A sample whose every candidate is excluded has no score: review, never accept.
    everyone = [str(g) for g in screener.refs["pixel"].groups]
    lonely = screener.match(screener.query_data([phantom(2)]), exclude_groups=[None])
    assert np.isfinite(lonely.results["aligned"].score[0])
    for group in set(everyone):
        screener.refs["pixel"].groups[screener.refs["pixel"].groups == group] = "one"
    none = screener.match(screener.query_data([phantom(2)]), exclude_groups=["one"])
    out = decide_all(none, dict(setup.thresholds), 0.0, list(setup.deciding))
    assert out[0].decision == "review" and out[0].note == "no finite score"


def test_too_small_a_reference_is_an_error_unless_a_number_is_configured(tmp_path):
    for i in range(3):
        (tmp_path / f"r{i}.png").write_bytes(encode_png(phantom(i)))
    with pytest.raises(CalibrationError, match="3 image"):
        prepare_matchers(Memorization(reference=[str(tmp_path)], matchers="pixel"))
    setup, context = prepare_matchers(Memorization(reference=[str(tmp_path)], matchers="pixel",
                                                   threshold=0.9))
    assert setup.threshold("pixel") == 0.9
    assert context["threshold_info"]["pixel"]["method"] == "configured"


def test_one_tar_or_one_parquet_calibrates_by_patient_column(tmp_path):
    tar_path = tmp_path / "real.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i in range(12):
            for name, data in ((f"s{i:03d}.png", encode_png(phantom(100 + i))),
                               (f"s{i:03d}.json", json.dumps({"patient": f"P{i % 4}"}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"image": [encode_png(phantom(200 + i)) for i in range(12)],
                             "subject": [f"S{i % 3}" for i in range(12)]}),
                   tmp_path / "real.parquet")
    for path, column, groups in ((tar_path, "patient", 4), (tmp_path / "real.parquet",
                                                              "subject", 3)):
        # No patient named: each member (row) counts as its own file, and the report says so.
        _, context = prepare_matchers(Memorization(reference=[str(path)], matchers="pixel",
                                                   calibration_copies=60))
        assert context["reference"]["group_sources"] == {"file": 12}
        setup, context = prepare_matchers(Memorization(
            reference=[str(path)], matchers="pixel", group_column=column,
            calibration_copies=60))
        assert context["reference"]["groups"] == groups
        assert context["reference"]["group_sources"] == {"column": groups}
        assert context["threshold_info"]["pixel"]["sample_groups"] == groups


def test_group_pattern_names_patients_from_paths(tmp_path):
    for p in range(3):
        (tmp_path / f"mrn{p:04d}").mkdir()
        for s in range(4):
            (tmp_path / f"mrn{p:04d}" / f"slice{s}.png").write_bytes(encode_png(phantom(p * 10 + s)))
    pixel = get_embedder("pixel")
    prepared = prepare_reference([str(tmp_path)], pixel, options=ReaderOptions(
        group_pattern=r"/mrn(?P<group>\d+)/"), exact_limit=1000, memory_gb=1.0)
    groups = set(np.load(f"{prepared.handle.path}/groups.npy"))
    assert groups == {"pattern:0000", "pattern:0001", "pattern:0002"}


def test_cache_files_are_private(series_reference):
    prepare_matchers(Memorization(reference=[str(series_reference["by-patient"])],
                                  matchers=["aligned"], retrievers=["pixel"], **MEASURE))
    checked = 0
    for root in (screening_cache(), cache_root() / "private"):
        for dirpath, dirnames, filenames in os.walk(root):
            assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
            for name in filenames:
                mode = stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode)
                assert mode == 0o600, (dirpath, name, oct(mode))
                checked += 1
    assert checked > 10


def test_screening_section_cross_checks():
    from synthdata.spec.checks import memorization_problems

    assert memorization_problems(Memorization()) == []
    bad = Memorization(matchers=["aligned", "aligned"], retrievers=[],
                       threshold={"pixel": 0.9}, group_pattern="(")
    fields = {path[:2] for path, _ in memorization_problems(bad)}
    assert fields == {("memorization", "matchers"), ("memorization", "retrievers"),
                      ("memorization", "threshold"), ("memorization", "group_pattern")}
    with pytest.raises(Exception, match="'aligned' verifies the candidates"):
        prepare_matchers(Memorization(matchers="aligned", retrievers=[]))


def test_embedder_is_the_deprecated_old_name_of_matchers(tmp_path):
    """`memorization.embedder` still reads as `matchers`, with a FutureWarning, and `synthdata
    validate` names its line; giving both is an error."""
    import warnings

    from synthdata.errors import SpecError
    from synthdata.plan.load import load_spec
    from synthdata.spec import spec_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = Memorization(embedder=["pixel"], threshold=0.9)
    assert old.matchers == ["pixel"] and "embedder" not in old.model_dump()
    assert any(issubclass(w.category, FutureWarning) and "memorization.matchers" in str(w.message)
               for w in caught)
    with pytest.raises(ValueError, match="deprecated old name"):
        Memorization(embedder=["pixel"], matchers=["aligned"])
    spec = tmp_path / "old.yaml"
    spec.write_text("name: old\ncount: 2\nlabels: {a: {prompts: [a]}}\n"
                    "generator: {model: 'builtin:tiny'}\nmemorization:\n  embedder: pixel\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = load_spec(spec)
        found = spec_warnings(spec, loaded)
    assert loaded.memorization.matchers == ["pixel"]
    assert any(p.field == "memorization.embedder" and p.line == 6 for p in found), found
    spec.write_text(spec.read_text().replace("  embedder: pixel\n",
                                             "  embedder: pixel\n  matchers: [aligned]\n"))
    with pytest.raises(SpecError, match="deprecated old name"):
        load_spec(spec)
