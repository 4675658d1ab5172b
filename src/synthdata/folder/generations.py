"""Screening generations: every committed screening is an immutable folder; DIR/shards is its view.

    DIR/generations/<id>/shards/shard-NNNNNN.tar    accepted samples
    DIR/generations/<id>/shards/.screening.json     the generation record, written last
    DIR/generations/<id>/screening.parquet, screening_report.json, screening_report.png

`build` turns a screening's staged files into DIR/generations/<id>: staged under DIR/.staging,
then renamed in whole, so a generation on disk is complete. The id is 16 hex digits of the
sha256 of the record's content (token, accepted tar and table sha256), so the same screening of
the same raw shards is the same generation, found rather than built twice. The commit record
(`journal.commit(folder, "screening", generation=id)`) makes it current; `finish_screening`
then publishes it: a new DIR/shards/ of hard links to its files is exchanged atomically with
the old one (`fsutil.exchange_paths`) and the tables are linked into DIR, all under the
exclusive screening lock; the old view and the per-shard staging DIR/.screening go to the
trash, and generations that are neither current nor pinned by a reader are removed (`collect`).
On object storage the same shape holds: a generation under its own prefix, the commit record
(the pointer) written last, the old generation deleted after its pins expire.

Plain readers of DIR/shards (WebDataset, Hugging Face datasets) see the current generation as
of when they open each tar: a re-screening between two tars of one epoch changes what the next
tar holds, while a tar already open stays readable to its end. `synthdata.load` pins one
generation for the life of its pipeline (`synthdata.folder.snapshot`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from synthdata.folder import journal
from synthdata.faults import fault
from synthdata.folder import DatasetFolder
from synthdata.fsutil import exchange_paths, link_or_copy, replace_with_link, sha256_file, write_json_atomic
from synthdata.folder.snapshot import current_generation, generation_complete, live_pins, view_generation

TABLES = (DatasetFolder.SCREENING, DatasetFolder.SCREENING_REPORT, DatasetFolder.SCREENING_PLOT)


def record_of(folder: DatasetFolder, generation: str) -> dict:
    """DIR/generations/<id>/shards/.screening.json."""
    return json.loads((folder.generation_dir(generation) / folder.SHARDS / folder.GENERATION).read_text())


def build(folder: DatasetFolder, token: str, tars: list[Path], tables: dict[str, Path]) -> str:
    """Make DIR/generations/<id> from a screening's accepted tars and tables; return its id.

    The staged files are linked, not moved: the screening's own staging stays valid until the
    commit is finished.
    """
    area = journal.stage(folder, "generation")
    shards = area / folder.SHARDS
    shards.mkdir()
    for tar in sorted(tars):
        link_or_copy(tar, shards / tar.name)
    for name, path in tables.items():
        link_or_copy(path, area / name)
    content = {"token": token,
               "accepted_tars": {t.name: sha256_file(t) for t in sorted(tars)},
               "files": {name: sha256_file(path) for name, path in sorted(tables.items())}}
    generation = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    write_json_atomic(shards / folder.GENERATION, {"generation": generation, **content})
    target = folder.generation_dir(generation)
    if generation_complete(folder, generation):
        journal.trash(folder, area)  # the same content is already there
    else:
        if target.exists():
            journal.trash(folder, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(area, target)
    fault("screening.after_generation")
    return generation


def _staged_view(folder: DatasetFolder, generation: str) -> Path:
    """DIR/.staging/view: hard links to the generation's shards, its record linked last."""
    source = folder.generation_dir(generation) / folder.SHARDS
    view = journal.stage(folder, "view")
    for path in sorted(source.iterdir()):
        if path.name != folder.GENERATION:
            link_or_copy(path, view / path.name)
    link_or_copy(source / folder.GENERATION, view / folder.GENERATION)
    return view


def publish(folder: DatasetFolder, generation: str) -> None:
    """Make DIR/shards and the screening tables the view of `generation` (idempotent)."""
    view = None if view_generation(folder) == generation else _staged_view(folder, generation)
    source = folder.generation_dir(generation)
    with folder.screening_lock(exclusive=True):
        if view is not None:
            if folder.shards_dir.is_dir():
                exchange_paths(view, folder.shards_dir)  # `view` now holds the old one (trashed)
            else:
                os.replace(view, folder.shards_dir)
        fault("screening.after_exchange")
        for name in TABLES:
            src, dst = source / name, folder.root / name
            if not src.is_file():
                dst.unlink(missing_ok=True)
            elif not (dst.is_file() and os.path.samefile(src, dst)):
                replace_with_link(src, dst)
        fault("screening.after_tables")


def finish_screening(folder: DatasetFolder, record: dict) -> None:
    """The screening commit's finishing step: publish, drop the per-shard staging, collect."""
    publish(folder, record["generation"])
    if folder.staging_dir.exists():
        journal.trash(folder, folder.staging_dir)
    collect(folder, keep=(record["generation"],))


def collect(folder: DatasetFolder, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove generations that are neither current nor pinned by a live reader; return them.

    Writers only, under the run lock. Stale pins (their reader died) are removed too.
    """
    if not folder.generations_dir.is_dir():
        return []
    record = journal.pending(folder)
    keeping = {*keep, view_generation(folder),
               record.get("generation") if record and record["op"] == "screening" else None}
    removed = []
    with folder.screening_lock(exclusive=True):
        for path in sorted(folder.generations_dir.iterdir()):
            if path.name not in keeping and not live_pins(folder, path.name, clean=True):
                journal.trash(folder, path)
                removed.append(path.name)
        for pins in sorted(folder.pins_dir.glob("*")):
            live_pins(folder, pins.name, clean=True)
            _remove_if_empty(pins)
        _remove_if_empty(folder.pins_dir)
    for stray in folder.root.glob(f".{folder.SHARDS}.swap-*"):  # a non-atomic exchange cut short
        journal.trash(folder, stray)
    journal.empty_trash(folder)
    return removed


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (a reader pins it), or already gone


def retained(folder: DatasetFolder) -> dict[str, int]:
    """Generations on disk other than the current one, with their live pin counts (status)."""
    current = current_generation(folder)
    if not folder.generations_dir.is_dir():
        return {}
    return {p.name: len(live_pins(folder, p.name)) for p in sorted(folder.generations_dir.iterdir())
            if p.name != current}
