"""Versioning with DVC: the DVC API with synthdata's lock (`dvc`), the guarded reset and
folder preparation (`reset`), the per-stage views of a spec for the root dvc.yaml (`stages`)
and the `python -m synthdata.versioning` verbs (`__main__`)."""

from synthdata.versioning.dvc import (
    DATASET_ENTRIES,
    LOCAL_ONLY,
    TRACKED_FILES,
    TRACKED_FOLDERS,
    TrackResult,
    VersioningError,
    dataset_targets,
    dvc_repo,
    find_dvc_root,
    pull_outputs,
    track_outputs,
)
from synthdata.versioning.reset import prepare_folder, reset_dataset, resolve_spec

__all__ = ["DATASET_ENTRIES", "LOCAL_ONLY", "TRACKED_FILES", "TRACKED_FOLDERS", "TrackResult",
           "VersioningError", "dataset_targets", "dvc_repo", "find_dvc_root", "prepare_folder",
           "pull_outputs", "reset_dataset", "resolve_spec", "track_outputs"]
