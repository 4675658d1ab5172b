"""What state a dataset folder is in (`status`) and whether its bytes are what was recorded (`verify`).

Both read the folder alone: an auditor needs neither the model nor the real data.

- `status`: planned samples and shards; complete and incomplete raw shards (with the reason);
  whether screening ran, whether it compared the samples with real images (`state`:
  screened / not-screened / not-run) and covers the current raw shards; whether the records
  exist; and what a rerun of `synthdata run` would do.
- `verify`: re-hashes every raw tar against its completion marker, every PNG against the
  recorded rows, every accepted tar against the screening generation record, and checks that the
  manifest, screening.parquet and the accepted shards tell the same story; then that the
  published view (DIR/shards, DIR/screening.parquet) is the generation's bytes and that no
  change is left half-done. Any mismatch is a problem; `synthdata verify` exits 1 when there is one.

Both read one pinned screening generation (`synthdata.folder.snapshot`) and never write.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from synthdata.folder import journal

from synthdata.dataset import records
from synthdata.folder import DatasetFolder
from synthdata.fsutil import sha256_file
from synthdata.folder.snapshot import Snapshot, open_snapshot
from synthdata.folder.generations import retained


def _screening_meta(folder: DatasetFolder) -> dict:
    if not folder.screening_file.is_file():
        return {}
    meta = pq.read_schema(folder.screening_file).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def _manifest_generation(folder: DatasetFolder) -> str | None:
    """The screening generation manifest.parquet describes (its metadata), or None."""
    if not folder.manifest_file.is_file():
        return None
    return ((pq.read_schema(folder.manifest_file).metadata or {}).get(b"generation") or b"").decode() or None


def status(out_dir: str | Path) -> dict:
    """The folder's state and what a rerun would do, as JSON-able data."""
    with open_snapshot(out_dir) as snap:
        return _status(snap)


def _status(folder: Snapshot) -> dict:

    info = folder.plan_info()
    shards = int(info["shards"])
    states = [folder.shard_state(s, info["plan_hash"]) for s in range(shards)]
    complete = [st.shard for st in states if st.complete]
    incomplete = {st.shard: st.reason for st in states if not st.complete}
    meta = _screening_meta(folder)
    state = records.screening_state(folder.root)
    screened_tars = json.loads(meta.get("raw_tars", "{}"))
    current = {str(s): (folder.marker(s) or {}).get("tar_sha256") for s in complete}
    generation = folder.screening_generation()
    screening_current = bool(meta) and screened_tars == current
    pending = journal.pending(folder)
    described = _manifest_generation(folder)
    records_current = folder.manifest_file.is_file() and (
        described is None or described == (folder.generation or "none"))
    rerun = []
    if pending is not None:
        rerun.append(f"finish the interrupted {pending['op']} (committed, not yet in place)")
    if incomplete:
        rerun.append(f"generate {len(incomplete)} shard(s): {sorted(incomplete)}")
    if not screening_current or incomplete:
        rerun.append("screen" + ("" if meta else " (never screened)"))
    if rerun or not records_current:
        rerun.append("record (manifest, stats, card, contact sheets)")
    return {
        "dataset": info.get("name"), "dir": str(folder.root.resolve()),
        "format_version": folder.format_version(),
        "planned": {"samples": info["count"], "shards": shards, "label_counts": info["label_counts"]},
        "generated": {"complete_shards": len(complete),
                      "samples": sum(int((folder.marker(s) or {}).get("count", 0)) for s in complete),
                      "incomplete": {str(s): r for s, r in sorted(incomplete.items())}},
        "screening": {"ran": bool(meta), "state": state,
                      "against_real_images": state == records.SCREENED,
                      "says": records.SCREENING_STATES[state],
                      "covers_current_shards": screening_current,
                      "token": meta.get("token"), "generation": folder.generation,
                      "accepted_shards": len(folder.accepted_tars()),
                      "consistent": generation is not None and generation.get("token") == meta.get("token")
                      if meta else None,
                      "retained_generations": retained(folder)},
        "commit_pending": None if pending is None else pending["op"],
        "records": {**{name: path.is_file() for name, path in (
            ("manifest", folder.manifest_file), ("stats", folder.stats_file),
            ("run", folder.run_file), ("card", folder.card_file))},
            "current": records_current},
        "rerun_would": rerun or ["nothing: the dataset is complete"],
    }


@dataclass
class Verification:
    """The outcome of `verify`: what was checked and every problem found."""

    dir: str
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing differs from the records."""
        return not self.problems

    def as_dict(self) -> dict:
        """Plain data (JSON-able)."""
        return {**asdict(self), "ok": self.ok}


def _tar_pngs(path: Path) -> dict[str, str]:
    """key -> sha256 of KEY.png for every sample in a tar."""
    out = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.name.endswith(".png"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                out[member.name.removesuffix(".png")] = hashlib.sha256(data).hexdigest()
    return out


def _verify_raw(folder: DatasetFolder, result: Verification) -> dict[str, str]:
    """Re-hash raw tars and PNGs; return key -> png sha256 of every readable raw sample."""
    pngs: dict[str, str] = {}
    for shard in folder.marked_shards():
        marker = folder.marker(shard) or {}
        tar = folder.raw_tar(shard)
        if not tar.is_file():
            result.problems.append(f"{folder.relative(tar)}: missing (its marker says it is complete)")
            continue
        result.checked["raw_tars"] = result.checked.get("raw_tars", 0) + 1
        if sha256_file(tar) != marker.get("tar_sha256") or tar.stat().st_size != marker.get("tar_bytes"):
            result.problems.append(f"{folder.relative(tar)}: sha256 or size differs from its marker")
        try:
            found = _tar_pngs(tar)
        except tarfile.TarError as exc:
            result.problems.append(f"{folder.relative(tar)}: unreadable tar ({exc})")
            continue
        rows = pq.read_table(folder.raw_rows(shard), columns=["key", "png_sha256"]).to_pydict()
        recorded = dict(zip(rows["key"], rows["png_sha256"]))
        for key in sorted(set(recorded) | set(found)):
            if recorded.get(key) != found.get(key):
                result.problems.append(f"{folder.relative(tar)}: {key}.png differs from its recorded "
                                       "sha256" if key in found and key in recorded else
                                       f"{folder.relative(tar)}: {key} is in only one of tar and rows")
        result.checked["samples"] = result.checked.get("samples", 0) + len(found)
        pngs.update(found)
    return pngs


def _verify_accepted(folder: DatasetFolder, result: Verification, raw_pngs: dict[str, str]) -> set[str]:
    """Accepted tars against the generation record and the raw samples; return accepted keys."""
    generation = folder.screening_generation()
    tars = folder.accepted_tars()
    if not tars and generation is None:
        return set()
    recorded = (generation or {}).get("accepted_tars", {})
    if set(recorded) != {t.name for t in tars}:
        result.problems.append(f"{folder.SHARDS}/: tars {sorted(t.name for t in tars)} differ from "
                               f"those recorded in {folder.GENERATION} {sorted(recorded)}")
    keys: set[str] = set()
    for tar in tars:
        result.checked["accepted_tars"] = result.checked.get("accepted_tars", 0) + 1
        if tar.name in recorded and sha256_file(tar) != recorded[tar.name]:
            result.problems.append(f"{folder.relative(tar)}: sha256 differs from {folder.GENERATION}")
        for key, sha in _tar_pngs(tar).items():
            keys.add(key)
            if raw_pngs.get(key) != sha:
                result.problems.append(f"{folder.relative(tar)}: {key}.png is not the raw sample's image")
    return keys


def _verify_tables(folder: DatasetFolder, result: Verification, raw_pngs: dict[str, str],
                   accepted: set[str]) -> None:
    """manifest.parquet and screening.parquet against the shards."""
    meta = _screening_meta(folder)
    generation = folder.screening_generation()
    if meta and generation is not None and meta.get("token") != generation.get("token"):
        result.problems.append(f"{folder.SCREENING} and {folder.SHARDS}/ come from different screenings")
    if folder.screening_file.is_file():
        table = pq.read_table(folder.screening_file, columns=["key", "decision"]).to_pydict()
        from synthdata.screening.pipeline import PUBLISHED  # deferred: loads faiss (accept, not-screened)

        says = {k for k, d in zip(table["key"], table["decision"]) if d in PUBLISHED}
        if folder.shards_dir.is_dir() and says != accepted:
            result.problems.append(f"{folder.SCREENING} accepts {len(says)} samples, {folder.SHARDS}/ "
                                   f"holds {len(accepted)} (differing: {sorted(says ^ accepted)[:5]})")
    if not folder.manifest_file.is_file():
        return
    manifest = pq.read_table(folder.manifest_file, columns=["key", "png_sha256", "accepted"]).to_pylist()
    result.checked["manifest_rows"] = len(manifest)
    if {r["key"] for r in manifest} != set(raw_pngs):
        result.problems.append(f"{folder.MANIFEST}: its keys differ from the raw shards' samples")
    for row in manifest:
        if row["key"] in raw_pngs and row["png_sha256"] != raw_pngs[row["key"]]:
            result.problems.append(f"{folder.MANIFEST}: {row['key']} png_sha256 differs from its tar")
        if folder.shards_dir.is_dir() and bool(row["accepted"]) != (row["key"] in accepted):
            result.problems.append(f"{folder.MANIFEST}: {row['key']} accepted={row['accepted']} but "
                                   f"{'not ' if row['key'] not in accepted else ''}in {folder.SHARDS}/")


def _verify_view(snap: Snapshot, result: Verification) -> None:
    """The published view and the journal: what plain readers of DIR see is the generation."""
    plain = DatasetFolder(snap.root)
    pending = journal.pending(plain)
    if pending is not None:
        result.problems.append(f"{plain.COMMIT}: an interrupted {pending['op']} is committed but not "
                               "yet in place; any synthdata command that writes (run, screen, "
                               "report) finishes it")
    if snap.generation is None:
        return
    view = plain.screening_generation()
    if view != snap.screening_generation():
        result.problems.append(f"{plain.SHARDS}/{plain.GENERATION} does not name generation "
                               f"{snap.generation}, the committed one")
        return
    for name, sha in (view or {}).get("accepted_tars", {}).items():
        if not (plain.shards_dir / name).is_file() or sha256_file(plain.shards_dir / name) != sha:
            result.problems.append(f"{plain.SHARDS}/{name}: not generation {snap.generation}'s bytes")
    for name, sha in (view or {}).get("files", {}).items():
        if not (plain.root / name).is_file() or sha256_file(plain.root / name) != sha:
            result.problems.append(f"{name}: not generation {snap.generation}'s bytes")


def verify(out_dir: str | Path) -> Verification:
    """Re-hash the folder's tars and check its tables against them (see module docstring)."""
    DatasetFolder(out_dir).require()
    with open_snapshot(out_dir) as snap:
        result = Verification(str(snap.root.resolve()))
        raw_pngs = _verify_raw(snap, result)
        accepted = _verify_accepted(snap, result, raw_pngs)
        _verify_tables(snap, result, raw_pngs, accepted)
        _verify_view(snap, result)
    return result
