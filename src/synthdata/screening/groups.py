"""Patient groups from what the reference already says, so calibration compares patients.

Calibration must never count two images of one patient as "other patients" (adjacent slices,
follow-up studies, a study exported twice look alike and would raise the threshold). The
group of a real image is, in order:

1. the DICOM PatientID (`patient:`), where the image is a DICOM with one;
2. a patient column (`column:` for a Parquet column or a WebDataset sample's .json field,
   `metadata:` for a table beside the images): the column named by `group_column`, else the
   first column called like a patient id (`PATIENT_COLUMNS`: patient_id, PatientID,
   subject_id, participant_id, Patient ID, MRN, ...);
3. the DICOM StudyInstanceUID (`study:`), where no PatientID was given;
4. `group_pattern` (`pattern:`), a regular expression on the image id;
5. a known dataset layout in the image id (`path:`): CheXpert's `patientNNNNN`, MIMIC-CXR's
   `pNN/pNNNNNNNN`, BIDS `sub-<label>` (`PATH_PATTERNS`);
6. the image's own file (`file:`; a tar member or Parquet row counts as a file).

Tables beside the images (*metadata tables*): CSV/TSV files (also gzipped) and Parquet files
without an image column found under the reference folders, and `metadata.csv` /
`metadata.parquet` in the folder (or the folder above) of a reference given as single files
(what `synthdata phantoms` writes). A table applies to the images one of its columns names:
a path relative to the table's folder (or ending like one, as CheXpert's `Path`), or a file
name (as NIH's `Image Index`). `MetadataGroups.tables` says which table and columns gave
how many images their group (`MetadataGroups.tables`); the report shows it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from synthdata.errors import ReferenceSetError

PATIENT_COLUMNS = ("patientid", "patient", "subjectid", "subject", "participantid",
                   "participant", "mrn", "patientnumber")
PATH_PATTERNS = (r"(?:^|/)(patient\d{4,})(?:/|$)",          # CheXpert
                 r"(?:^|/)p\d{2}/(p\d{6,})(?:/|$)",            # MIMIC-CXR
                 r"(?:^|/)(sub-[A-Za-z0-9]+)(?:/|_|$)")        # BIDS
TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
SIDECAR_NAMES = ("metadata.csv", "metadata.parquet", "metadata.tsv", "metadata.csv.gz")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def is_table(path: Path) -> bool:
    """A CSV/TSV file (possibly gzipped): a candidate metadata table."""
    return path.name.lower().endswith(TABLE_SUFFIXES)


def _read_table(path: Path):
    """The table as a pandas DataFrame of strings (None when it cannot be read)."""
    import pandas as pd

    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path).astype(str)
        sep = "\t" if ".tsv" in name else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # not a table after all
        del exc
        return None


def _patient_column(columns: list[str], wanted: str | None) -> str | None:
    if wanted is not None:
        return wanted if wanted in columns else None
    by_norm = {_norm(c): c for c in columns}
    return next((by_norm[n] for n in PATIENT_COLUMNS if n in by_norm), None)


@dataclass
class MetadataGroups:
    """Groups that metadata tables give to reference files (by file path)."""

    by_path: dict[str, str] = field(default_factory=dict)     # resolved file path -> group
    tables: list[dict] = field(default_factory=list)          # what each table contributed

    def group(self, path: Path | str) -> str | None:
        """The `metadata:` group of a file, if a table names it."""
        return self.by_path.get(str(path))

    @property
    def fingerprint(self) -> str:
        """Hash of every (file, group): part of the reference cache keys."""
        blob = json.dumps(sorted(self.by_path.items()))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]



def _match_paths(values: list[str], files: dict[str, list[tuple[str, str]]]
                 ) -> dict[int, str]:
    """Row index -> resolved file path for the values that name a reference file.

    `files`: file name -> [(path relative to the table's folder, resolved path)].
    """
    out: dict[int, str] = {}
    for i, raw in enumerate(values):
        v = str(raw).replace("\\", "/").strip().lstrip("./")
        if not v:
            continue
        for rel, resolved in files.get(v.rsplit("/", 1)[-1], ()):
            if v == rel or v.endswith("/" + rel) or rel.endswith("/" + v) or "/" not in v:
                out[i] = resolved
                break
    return out


def _apply(table_path: Path, images: list[Path], wanted: str | None,
           groups: MetadataGroups) -> None:
    """Give the images a table names the table's patient column as their group."""
    df = _read_table(table_path)
    if df is None or df.empty:
        return
    column = _patient_column(list(df.columns), wanted)
    if column is None:
        return
    folder = table_path.parent
    files: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in images:
        try:
            rel = p.relative_to(folder).as_posix()
        except ValueError:
            rel = p.name
        files[p.name].append((rel, str(p)))
    best: tuple[int, str | None, dict] = (0, None, {})
    for col in df.columns:
        if col == column:
            continue
        found = _match_paths(df[col].tolist(), files)
        if len(found) > best[0]:
            best = (len(found), col, found)
    count, path_column, found = best
    if not count:
        return
    patients = df[column].tolist()
    given = 0
    for row, resolved in found.items():
        value = str(patients[row]).strip()
        if value and resolved not in groups.by_path:
            groups.by_path[resolved] = f"metadata:{value}"
            given += 1
    groups.tables.append({"table": str(table_path), "path_column": path_column,
                          "patient_column": column, "images": given})


def metadata_groups(tables: list[Path], images: list[Path], roots: list[Path],
                    group_column: str | None) -> MetadataGroups:
    """Groups from metadata tables found in the reference (`tables`) and the `metadata.*`
    files beside single-file roots (see the module doc)."""
    found = list(tables)
    for root in roots:
        if root.is_file():
            for folder in (root.parent, root.parent.parent):
                found += [folder / n for n in SIDECAR_NAMES if (folder / n).is_file()]
    groups = MetadataGroups()
    seen: set[Path] = set()
    for table in found:
        table = table.resolve()
        if table in seen:
            continue
        seen.add(table)
        _apply(table, [p for p in images if table.parent in p.parents], group_column, groups)
    return groups


def check_group_column(groups: list[str], column: str | None) -> None:
    """A configured group column that names no image's patient is a configuration error."""

    if column is not None and not any(g.startswith(("column:", "metadata:")) for g in groups):
        raise ReferenceSetError(
            f"memorization.group_column: no reference image got a patient from a column "
            f"{column!r} (looked in Parquet tables of images, WebDataset samples' .json and "
            "metadata tables beside the images); name an existing column")


def path_group(image_id: str) -> str | None:
    """`path:<patient>` from a known dataset layout in the image id, else None."""
    for pattern in PATH_PATTERNS:
        m = re.search(pattern, image_id)
        if m:
            return f"path:{m.group(1)}"
    return None


def group_of(image_id: str, file_id: str, found: str | None, pattern: str | None,
             table: str | None = None) -> str:
    """The patient group of an image (see the module doc for the order).

    `found`: what the file said (DICOM `patient:`/`study:`, a container `column:`);
    `table`: the `metadata:` group a table gave the file; `file_id`: the image's own file
    (for a tar member or a Parquet row, the member or row).
    """
    if found and not found.startswith("study:"):
        return found
    if table:
        return table
    if found:
        return found
    if pattern:
        m = re.search(pattern, image_id)
        if m:
            value = m.groupdict().get("group") or (m.group(1) if m.groups() else m.group(0))
            if value:
                return f"pattern:{value}"
    return path_group(image_id) or f"file:{file_id}"
