"""`synthdata report`: refresh the records (manifest, stats, card) and draw a contact sheet per label.

Contact sheets show synthetic samples only, and once screening ran only accepted ones (the
accepted shards, what consumers read): a rejected or reviewed sample may be a near-copy of a
real image, so it is never drawn. A label with no accepted sample gets a sheet saying so
(never an older sheet's samples). Before screening ran, the sheets draw the raw shards (the
card then says that nothing was screened). Real reference pixels never reach the folder.

The records are one change of the folder (`synthdata.folder.journal`): manifest.parquet, stats.json,
cohort_report.json and report/ are staged, committed by one record and moved into place; the
dataset card, derived from them, is rewritten as the change's finishing step. They describe
one pinned screening generation (`synthdata.folder.snapshot`), whose id the manifest's metadata
records (`generation`). Call it with the folder's run lock held, as the flow and `synthdata
report` do.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from synthdata.dataset import card, records

from synthdata.dataset.manifest import manifest_table

from synthdata.dataset.stats import dataset_stats

from synthdata.folder import journal
from synthdata.folder.shards import split_member
from synthdata.faults import fault
from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.folder.snapshot import open_snapshot
from synthdata.dataset.cohort_summary import write_cohort_report

# What a report writes besides the card, in the order the commit moves them into place.
ENTRIES = (DatasetFolder.MANIFEST, DatasetFolder.STATS, DatasetFolder.COHORT_REPORT,
           DatasetFolder.REPORT)

SHEET_COLUMNS = 8
SHEET_PER_LABEL = 16
THUMB = 96


def sheet_source(folder: DatasetFolder) -> tuple[list[Path], str]:
    """The tars contact sheets may draw from and what their samples are: once screening ran
    (screening.parquet or shards/ exists), the accepted tars only; before, the raw ones.
    `folder` may be a pinned snapshot (its generation's tars)."""
    if folder.screening_file.is_file() or folder.shards_dir.is_dir():
        return folder.accepted_tars(), "accepted"
    return [folder.raw_tar(s) for s in folder.complete_shards()], "generated"


def _sample_pngs(tars: list[Path], per_label: int) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for tar_path in tars:
        with tarfile.open(tar_path) as tar:
            pngs, labels = {}, {}
            for member in tar:
                key, ext = split_member(member.name)
                if ext == "png":
                    pngs[key] = tar.extractfile(member).read()
                elif ext == "cls":
                    labels[key] = int(tar.extractfile(member).read())
        for key in sorted(pngs):
            bucket = found.setdefault(labels.get(key, -1), [])
            if len(bucket) < per_label:
                bucket.append(pngs[key])
        if found and all(len(v) >= per_label for v in found.values()) and len(found) >= 2:
            break
    return found


def empty_sheet(text: str, columns: int = SHEET_COLUMNS, thumb: int = THUMB) -> Image.Image:
    """A sheet that says why it shows no sample."""
    sheet = Image.new("RGB", (columns * thumb, thumb), "black")
    ImageDraw.Draw(sheet).text((8, thumb // 2 - 6), text, fill="white", font=ImageFont.load_default())
    return sheet


def contact_sheet(pngs: list[bytes], columns: int = SHEET_COLUMNS, thumb: int = THUMB) -> Image.Image:
    """A grid of thumbnails."""
    rows = max(1, -(-len(pngs) // columns))
    sheet = Image.new("RGB", (columns * thumb, rows * thumb), "black")
    for i, data in enumerate(pngs):
        with Image.open(io.BytesIO(data)) as img:
            tile = img.convert("RGB").resize((thumb, thumb))
        sheet.paste(tile, ((i % columns) * thumb, (i // columns) * thumb))
    return sheet


def write_contact_sheets(out_dir: str | Path | DatasetFolder, per_label: int = SHEET_PER_LABEL,
                         dest: DatasetFolder | None = None) -> list[Path]:
    """DIR/report/contact-<label>.png for every label of the spec (see the module docstring),
    drawn from `out_dir` (a folder or a pinned snapshot) and written into `dest`'s report
    folder (default: the same folder)."""
    source = out_dir if isinstance(out_dir, DatasetFolder) else DatasetFolder(out_dir)
    names = list(records.spec_data(source.root).get("labels", {}))
    tars, what = sheet_source(source)
    found = _sample_pngs(tars, per_label)
    labels = {i: name for i, name in enumerate(names)}
    labels.update({i: f"label{i}" for i in found if i not in labels})
    written = []
    for index, label in sorted(labels.items()):
        path = (dest or source).contact_sheet(label)
        sheet = contact_sheet(found[index]) if found.get(index) else \
            empty_sheet(f"{label}: no {what} samples")
        with atomic_path(path) as tmp:
            sheet.save(tmp, format="PNG")
        written.append(path)
    return written


def write_report(out_dir: str | Path) -> dict:
    """Manifest, stats, cohort report and contact sheets committed as one change, then the
    dataset card (see the module docstring); returns the stats."""
    folder = DatasetFolder(Path(os.fspath(out_dir)))
    with open_snapshot(folder) as snap:
        staged = journal.StagedFolder(folder.root, journal.stage(folder, "report"), ENTRIES)
        table = manifest_table(folder.root).replace_schema_metadata(
            {"generation": snap.generation or "none"})
        with atomic_path(staged.manifest_file) as tmp:
            pq.write_table(table, tmp)
        stats = dataset_stats(folder.root, table)
        write_json_atomic(staged.stats_file, stats)
        if folder.cohort_file.is_file():
            write_cohort_report(staged)
        staged.report_dir.mkdir()  # report/ is replaced as a whole, even by an empty one
        write_contact_sheets(snap, dest=staged)
        journal.commit(folder, "report", moves=staged.moves())
    return stats


def finish_report(folder: DatasetFolder, record: dict) -> None:
    """The report commit's finishing step: the dataset card, from the records now in place."""
    fault("report.after_moves")
    card.write_card(folder.root)
