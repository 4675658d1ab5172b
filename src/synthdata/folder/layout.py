"""The dataset folder: the one owner of its layout.

Every path of a synthdata dataset folder is named here, and nowhere else; so is the one
definition of a complete shard. Other modules ask a `DatasetFolder` for paths:

```
DIR/spec.yaml                the spec as run last (resolved, absolute input paths)
DIR/plan.json                format_version, dataset name, spec and plan hashes, label counts
DIR/plan.parquet             every planned sample
DIR/run.json                 run record (spec/plan hashes, model, libraries, engine, timings)
DIR/raw/shard-NNNNNN.tar     generated samples; beside each .parquet rows and .done.json marker
DIR/shards/shard-NNNNNN.tar  accepted samples only (what consumers read): the published view of
                             the current screening generation (hard links to its files)
DIR/shards/.screening.json   the generation record: id, token, accepted tar and table sha256
DIR/screening.parquet        per sample: nearest real ids, similarities, decision (view, as above)
DIR/screening_report.json    (+ .png) decisions, threshold and how it was set (view, as above)
DIR/generations/<id>/        one committed screening, immutable: shards/ (+ .screening.json),
                             screening.parquet, screening_report.json/.png (`synthdata.folder.generations`)
DIR/embeddings/              screening embeddings of raw shards (re-screening costs a search)
DIR/manifest.parquet         one row per sample, accepted or not: the auditor's table
DIR/stats.json               deterministic counts (the DVC metric)
DIR/cohort.json              cohort specs: the table's summary and the requested joint distribution
DIR/cohort_report.json       cohort specs: requested vs planned vs realized (+ report/cohort.png)
DIR/README.md                dataset card
DIR/report/contact-LABEL.png contact sheet per label
DIR/workers/                 one record per worker process and slot
DIR/evaluation/              evaluation.json and plots (`synthdata evaluate`)
DIR/.synthdata.lock          one run at a time (never deleted)
DIR/.screening.lock          brief: resolving or publishing a screening generation (never deleted)
DIR/.screening/              screening's per-shard staging (decisions, accepted tars)
DIR/.staging/                staged files of the change being committed (`synthdata.folder.journal`)
DIR/.commit.json             the commit record of a change not yet finished
DIR/.trash/                  what a change removed, deleted last
DIR/.pins/<id>/              readers' pins on a generation (`synthdata.folder.snapshot`)
```

A `DatasetFolder` names where things are; a pinned `synthdata.folder.snapshot.Snapshot` (a subclass)
reads the screening outputs from its generation instead, and `DatasetFolder(x)` returns `x`
itself when `x` is already a folder, so a snapshot can be passed wherever a folder is read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from synthdata.errors import OutputError
from synthdata.fsutil import sha256_file

FORMAT_VERSION = 2
# Formats this synthdata can read (lineage, status, verify, report) and can add to (run, screen).
READABLE_FORMATS = (1, 2)
WRITABLE_FORMATS = (2,)

_SHARD_FILE = re.compile(r"^shard-(\d{6,})\.(tar|parquet|done\.json)$")


def shard_name(shard: int) -> str:
    """File stem of a shard: shard-000042."""
    return f"shard-{shard:06d}"


def shard_of(name: str) -> int | None:
    """The shard number in a shard file name (shard-000042.tar -> 42), else None."""
    m = _SHARD_FILE.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ShardState:
    """Whether a raw shard is complete, and if not, why."""

    shard: int
    complete: bool
    reason: str = ""
    marker: dict | None = None


class _FolderType(type):
    """`DatasetFolder(folder)` is `folder` itself: a folder, or a pinned snapshot of one, passes
    through code that wraps whatever it is given in a DatasetFolder."""

    def __call__(cls, root=None, *args, **kwargs):
        if cls is DatasetFolder and isinstance(root, DatasetFolder):
            return root
        return super().__call__(root, *args, **kwargs)


class DatasetFolder(metaclass=_FolderType):
    """Paths and state of one dataset folder (it need not exist yet)."""

    SPEC = "spec.yaml"
    PLAN_INFO = "plan.json"
    PLAN = "plan.parquet"
    RUN = "run.json"
    MANIFEST = "manifest.parquet"
    SCREENING = "screening.parquet"
    SCREENING_REPORT = "screening_report.json"
    SCREENING_PLOT = "screening_report.png"
    STATS = "stats.json"
    COHORT = "cohort.json"
    COHORT_REPORT = "cohort_report.json"
    CARD = "README.md"
    RAW = "raw"
    SHARDS = "shards"
    EMBEDDINGS = "embeddings"
    WORKERS = "workers"
    REPORT = "report"
    EVALUATION = "evaluation"
    LOCK = ".synthdata.lock"
    SCREENING_LOCK = ".screening.lock"
    STAGING = ".screening"
    GENERATION = ".screening.json"
    GENERATIONS = "generations"
    COMMIT = ".commit.json"
    STAGING_AREA = ".staging"
    TRASH = ".trash"
    PINS = ".pins"

    # Lock files: never removed (a process waiting on a deleted one would lock a ghost).
    LOCKS = (LOCK, SCREENING_LOCK)
    # Every top-level entry synthdata writes (the rest of a folder is foreign to it).
    ENTRIES = (SPEC, PLAN_INFO, PLAN, RUN, MANIFEST, SCREENING, SCREENING_REPORT, SCREENING_PLOT,
               STATS, CARD, RAW, SHARDS, EMBEDDINGS, WORKERS, REPORT, EVALUATION, COHORT,
               COHORT_REPORT, LOCK, SCREENING_LOCK, STAGING, GENERATIONS, COMMIT, STAGING_AREA,
               TRASH, PINS)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DatasetFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        """Where the top-level entry `name` is read and written: DIR/<name>. Subclasses redirect
        some entries (a snapshot's screening outputs, a change's staged files)."""
        return self.root / name

    # -- files of the whole dataset --------------------------------------------------------
    @property
    def spec_file(self) -> Path:
        """DIR/spec.yaml."""
        return self._path(self.SPEC)

    @property
    def plan_info_file(self) -> Path:
        """DIR/plan.json."""
        return self._path(self.PLAN_INFO)

    @property
    def plan_file(self) -> Path:
        """DIR/plan.parquet."""
        return self._path(self.PLAN)

    @property
    def run_file(self) -> Path:
        """DIR/run.json."""
        return self._path(self.RUN)

    @property
    def manifest_file(self) -> Path:
        """DIR/manifest.parquet."""
        return self._path(self.MANIFEST)

    @property
    def screening_file(self) -> Path:
        """DIR/screening.parquet."""
        return self._path(self.SCREENING)

    @property
    def screening_report_file(self) -> Path:
        """DIR/screening_report.json."""
        return self._path(self.SCREENING_REPORT)

    @property
    def screening_plot_file(self) -> Path:
        """DIR/screening_report.png."""
        return self._path(self.SCREENING_PLOT)

    @property
    def stats_file(self) -> Path:
        """DIR/stats.json."""
        return self._path(self.STATS)

    @property
    def cohort_file(self) -> Path:
        """DIR/cohort.json: the cohort table's summary and the requested distribution."""
        return self._path(self.COHORT)

    @property
    def cohort_report_file(self) -> Path:
        """DIR/cohort_report.json: requested vs planned vs realized joint distributions."""
        return self._path(self.COHORT_REPORT)

    @property
    def cohort_plot_file(self) -> Path:
        """DIR/report/cohort.png."""
        return self.report_dir / "cohort.png"

    @property
    def card_file(self) -> Path:
        """DIR/README.md (the dataset card)."""
        return self._path(self.CARD)

    @property
    def lock_file(self) -> Path:
        """DIR/.synthdata.lock."""
        return self.root / self.LOCK

    @property
    def screening_lock_file(self) -> Path:
        """DIR/.screening.lock: readers share it, a screening commit takes it alone."""
        return self.root / self.SCREENING_LOCK

    @property
    def generation_file(self) -> Path:
        """DIR/shards/.screening.json: which screening the accepted shards belong to."""
        return self.shards_dir / self.GENERATION

    # -- folders ---------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """DIR/raw: generated shards."""
        return self._path(self.RAW)

    @property
    def shards_dir(self) -> Path:
        """DIR/shards: accepted shards."""
        return self._path(self.SHARDS)

    @property
    def embeddings_dir(self) -> Path:
        """DIR/embeddings."""
        return self._path(self.EMBEDDINGS)

    @property
    def workers_dir(self) -> Path:
        """DIR/workers."""
        return self._path(self.WORKERS)

    @property
    def report_dir(self) -> Path:
        """DIR/report."""
        return self._path(self.REPORT)

    @property
    def evaluation_dir(self) -> Path:
        """DIR/evaluation."""
        return self._path(self.EVALUATION)

    @property
    def staging_dir(self) -> Path:
        """DIR/.screening: screening's per-shard staging area."""
        return self.root / self.STAGING

    @property
    def generations_dir(self) -> Path:
        """DIR/generations: committed screening generations."""
        return self.root / self.GENERATIONS

    def generation_dir(self, generation: str) -> Path:
        """DIR/generations/<id>."""
        return self.generations_dir / generation

    @property
    def commit_file(self) -> Path:
        """DIR/.commit.json: the record of a change not yet finished."""
        return self.root / self.COMMIT

    @property
    def staging_area(self) -> Path:
        """DIR/.staging: files of the change being committed."""
        return self.root / self.STAGING_AREA

    @property
    def trash_dir(self) -> Path:
        """DIR/.trash: what a change removed, deleted last."""
        return self.root / self.TRASH

    @property
    def pins_dir(self) -> Path:
        """DIR/.pins: readers' pins on generations."""
        return self.root / self.PINS

    # -- per shard -------------------------------------------------------------------------
    def raw_tar(self, shard: int) -> Path:
        """DIR/raw/shard-NNNNNN.tar."""
        return self.raw_dir / f"{shard_name(shard)}.tar"

    def raw_rows(self, shard: int) -> Path:
        """DIR/raw/shard-NNNNNN.parquet: the shard's generated rows."""
        return self.raw_dir / f"{shard_name(shard)}.parquet"

    def raw_marker(self, shard: int) -> Path:
        """DIR/raw/shard-NNNNNN.done.json: the completion marker, written last."""
        return self.raw_dir / f"{shard_name(shard)}.done.json"

    def accepted_tar(self, shard: int) -> Path:
        """DIR/shards/shard-NNNNNN.tar."""
        return self.shards_dir / f"{shard_name(shard)}.tar"

    def embeddings_file(self, shard: int, embedder_fingerprint: str) -> Path:
        """DIR/embeddings/shard-NNNNNN.emb-<16 hex of the embedder fingerprint>.npz."""
        return self.embeddings_dir / f"{shard_name(shard)}.emb-{embedder_fingerprint[:16]}.npz"

    def worker_file(self, worker_id: str) -> Path:
        """DIR/workers/<worker id>.json."""
        return self.workers_dir / f"{worker_id}.json"

    def contact_sheet(self, label: str) -> Path:
        """DIR/report/contact-<label>.png."""
        return self.report_dir / f"contact-{label}.png"

    def relative(self, path: str | Path) -> str:
        """A path inside the folder, relative to it, as POSIX text (for records)."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    # -- state -----------------------------------------------------------------------------
    def plan_info(self) -> dict:
        """DIR/plan.json; OutputError when the folder is not a synthdata dataset."""
        try:
            return json.loads(self.plan_info_file.read_text())
        except FileNotFoundError:
            if self.commit_file.is_file():
                raise OutputError(f"{self.root}: an interrupted change is committed but not yet "
                                  f"finished ({self.COMMIT}); any synthdata command that writes "
                                  "here (plan, run, screen, report) finishes it") from None
            raise OutputError(f"{self.root} is not a synthdata dataset folder (no {self.PLAN_INFO}); "
                              "expected the output folder of `synthdata run`") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise OutputError(f"{self.plan_info_file}: unreadable ({exc})") from None

    def is_dataset(self) -> bool:
        """True when the folder holds a synthdata dataset (a readable plan.json)."""
        try:
            self.plan_info()
        except OutputError:
            return False
        return True

    def format_version(self) -> int:
        """The folder's format (1: made before format versions were recorded)."""
        return int(self.plan_info().get("format_version", 1))

    def require(self, *, write: bool = False) -> DatasetFolder:
        """Check this is a dataset folder of a format we can read (or write); return self."""
        version = self.format_version()
        allowed = WRITABLE_FORMATS if write else READABLE_FORMATS
        if version not in allowed:
            newer = version > max(READABLE_FORMATS)
            raise OutputError(
                f"{self.root}: dataset folder format {version} "
                + ("is newer than this synthdata understands; upgrade synthdata" if newer else
                   f"is older than this synthdata can {'add to' if write else 'read'} (it writes "
                   f"format {FORMAT_VERSION}); regenerate the dataset into a new folder"))
        return self

    def marker(self, shard: int) -> dict | None:
        """A shard's completion marker, or None when absent or unreadable."""
        try:
            return json.loads(self.raw_marker(shard).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def shard_state(self, shard: int, plan_hash: str | None = None, *,
                    verify: bool = False) -> ShardState:
        """The one definition of a complete raw shard.

        Complete: its marker exists (for this plan, when `plan_hash` is given), its tar and rows
        exist, and the tar has the recorded size; with `verify`, also the recorded sha256.
        """

        marker = self.marker(shard)
        if marker is None:
            return ShardState(shard, False, "no completion marker")
        if plan_hash is not None and marker.get("plan_hash") != plan_hash:
            return ShardState(shard, False, "marker is from another plan", marker)
        tar = self.raw_tar(shard)
        if not tar.is_file() or not self.raw_rows(shard).is_file():
            return ShardState(shard, False, "tar or rows missing", marker)
        if tar.stat().st_size != marker.get("tar_bytes"):
            return ShardState(shard, False, "tar size differs from its marker", marker)
        if verify and sha256_file(tar) != marker.get("tar_sha256"):
            return ShardState(shard, False, "tar sha256 differs from its marker", marker)
        return ShardState(shard, True, "", marker)

    def is_complete(self, shard: int, plan_hash: str | None = None, *, verify: bool = False) -> bool:
        """shard_state(...).complete."""
        return self.shard_state(shard, plan_hash, verify=verify).complete

    def marked_shards(self) -> list[int]:
        """Shards that have a completion marker file, sorted (complete or not)."""
        if not self.raw_dir.is_dir():
            return []
        return sorted(s for p in self.raw_dir.iterdir()
                      if p.name.endswith(".done.json") and (s := shard_of(p.name)) is not None)

    def complete_shards(self, plan_hash: str | None = None, *, verify: bool = False) -> list[int]:
        """Raw shards that are complete (see shard_state), sorted."""
        return [s for s in self.marked_shards() if self.is_complete(s, plan_hash, verify=verify)]

    def accepted_tars(self) -> list[Path]:
        """The accepted shard tars, sorted; [] when screening has not run."""
        if not self.shards_dir.is_dir():
            return []
        return sorted(p for p in self.shards_dir.glob("shard-*.tar") if shard_of(p.name) is not None)

    @contextlib.contextmanager
    def screening_lock(self, exclusive: bool = False) -> Iterator[None]:
        """Hold the screening lock: shared while a reader resolves and pins a generation (or, in a
        folder without generations, reads DIR/shards and screening.parquet as one snapshot),
        exclusive while a writer publishes a generation or removes unpinned ones. Held briefly.
        A reader of a folder that has no lock file (a read-only copy) needs none."""
        if not exclusive and not self.screening_lock_file.is_file():
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.screening_lock_file, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def screening_generation(self) -> dict | None:
        """DIR/shards/.screening.json (token and accepted tar hashes), or None."""
        try:
            return json.loads(self.generation_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None
