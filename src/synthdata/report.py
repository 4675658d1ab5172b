"""`synthdata report`: refresh the records (manifest, stats, card) and draw a contact sheet per label.

Contact sheets show synthetic samples only (accepted shards, else raw): real reference pixels
never reach the output folder.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from synthdata import card, records
from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path

SHEET_COLUMNS = 8
SHEET_PER_LABEL = 16
THUMB = 96


def _sample_pngs(root: Path, per_label: int) -> dict[int, list[bytes]]:
    folder = DatasetFolder(root)
    tars = folder.accepted_tars() or [folder.raw_tar(s) for s in folder.complete_shards()]
    found: dict[int, list[bytes]] = {}
    for tar_path in tars:
        with tarfile.open(tar_path) as tar:
            pngs, labels = {}, {}
            for member in tar:
                key, _, ext = member.name.partition(".")
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


def contact_sheet(pngs: list[bytes], columns: int = SHEET_COLUMNS, thumb: int = THUMB) -> Image.Image:
    """A grid of thumbnails."""
    rows = max(1, -(-len(pngs) // columns))
    sheet = Image.new("RGB", (columns * thumb, rows * thumb), "black")
    for i, data in enumerate(pngs):
        with Image.open(io.BytesIO(data)) as img:
            tile = img.convert("RGB").resize((thumb, thumb))
        sheet.paste(tile, ((i % columns) * thumb, (i // columns) * thumb))
    return sheet


def write_contact_sheets(out_dir: str | Path, per_label: int = SHEET_PER_LABEL) -> list[Path]:
    """DIR/report/contact-<label>.png for every label that has samples."""
    root = Path(out_dir)
    names = list(records.spec_data(root).get("labels", {}))
    written = []
    for index, pngs in sorted(_sample_pngs(root, per_label).items()):
        label = names[index] if 0 <= index < len(names) else f"label{index}"
        path = DatasetFolder(root).contact_sheet(label)
        with atomic_path(path) as tmp:
            contact_sheet(pngs).save(tmp, format="PNG")
        written.append(path)
    return written


def write_report(out_dir: str | Path) -> dict:
    """Manifest, stats, dataset card and contact sheets; returns the stats."""
    root = Path(out_dir)
    records.write_manifest(root)
    records.write_stats(root)
    card.write_card(root)
    write_contact_sheets(root)
    return records.dataset_stats(root)
