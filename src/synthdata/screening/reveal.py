"""Map a sample's pseudonymous nearest real ids back, on the machine that holds the cache.

`screening.parquet` and `audit.parquet` name real images and patient groups by pseudonym
only (`synthdata.privacy`). The map back lives in the private cache of the machine (or team,
with a shared `SYNTHDATA_PSEUDONYM_KEY` and map) that ran the screening; a copy of the
dataset folder alone reveals nothing.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from synthdata import privacy
from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder

PSEUDONYM_COLUMNS = ("nearest_real_id", "nearest_group", "nearest_real_ids")


class RevealError(SynthdataError):
    """Nothing to reveal: no such sample, or pseudonyms unknown on this machine."""


def _table(folder: Path) -> tuple[Path, str]:
    from synthdata.screening.audit import AUDIT  # deferred: loads faiss, prefect, scipy

    screening = DatasetFolder(folder).screening_file
    if screening.is_file():
        return screening, "key"
    if (folder / AUDIT).is_file():
        return folder / AUDIT, "source"
    raise RevealError(f"{folder}: no screening.parquet or {AUDIT} (screen or audit it first)")


def _reveal(pseudonym: str | None) -> dict | None:
    if pseudonym is None:
        return None
    found = privacy.reveal(pseudonym)
    if found is None:
        return {"pseudonym": pseudonym, "value": None,
                "note": "unknown on this machine (screened elsewhere, or another key)"}
    return {"pseudonym": pseudonym, "kind": found[0], "value": found[1]}


def reveal_sample(folder: str | Path, key: str) -> dict:
    """A sample's (or audited image's) nearest real ids and group, revealed where known.

    `key` is a sample key (screening.parquet), a source (audit.parquet) or a pseudonym.
    """
    if key.startswith(privacy.PREFIX):
        found = _reveal(key)
        if found is None or found["value"] is None:
            raise RevealError(f"pseudonym {key} is unknown on this machine")
        return {"pseudonym": found}
    path, column = _table(Path(folder))
    rows = pq.read_table(path, filters=[(column, "=", key)]).to_pylist()
    if not rows:
        raise RevealError(f"{path.name} has no row with {column} {key!r}")
    row = rows[0]
    return {column: key, "decision": row["decision"], "similarity": row["similarity"],
            "decided_by": row.get("decided_by"),
            "nearest_real_id": _reveal(row["nearest_real_id"]),
            "nearest_group": _reveal(row["nearest_group"]),
            "nearest_real_ids": [_reveal(p) for p in row["nearest_real_ids"] or []]}
