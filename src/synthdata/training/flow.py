"""The `synthdata-train` Prefect flow: one flow run per training, one task per checkpoint segment.

The flow run is named `train-<name>` after the training. Each checkpoint segment is a task
`train-<stage>-<start>-<stop>` (its steps, then a checkpoint); loading and saving run in the
flow. The models live in the flow's process between tasks; only stage names, step numbers and
losses reach Prefect, never image paths or captions.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from synthdata.dataset.prepare import acquire_lock
from synthdata.training import loop  # noqa: F401  (diffusers classes imported in the main thread)
from synthdata.training.run import run_segment, run_training
from synthdata.training.spec import TrainSpec, load_train_spec
from synthdata.progress import TrainProgress


@task(name="train-segment", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="train-{stage}-{start}-{stop}")
def train_segment_task(trainer, stage: str, start: int, stop: int) -> float:
    """Steps [start, stop) of a stage, then a checkpoint; returns the segment's mean loss."""
    losses = run_segment(trainer, stop)
    return sum(losses) / max(len(losses), 1)


def _segment(trainer, stop: int) -> list[float]:
    stage = trainer.stages[trainer.stage_index].name
    start = trainer.step
    train_segment_task(trainer, stage, start, stop)
    return trainer.losses[stage][start:stop]


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    try:
        name = load_train_spec(params["spec_path"]).name
    except Exception:  # noqa: BLE001 - the flow itself reports a bad spec
        name = "invalid-spec"
    return f"train-{name}"


@flow(name="synthdata-train", persist_result=False, validate_parameters=False, flow_run_name=_run_name)
def synthdata_train(spec_path: str, out_dir: str | None = None, stop_after: int | None = None) -> dict:
    """Train the model a train spec describes; resumes from the output folder's last checkpoint."""
    from prefect.logging import get_run_logger

    spec = load_train_spec(spec_path)
    return train_in_folder(spec, Path(out_dir or spec.output_dir()), stop_after=stop_after,
                           log=get_run_logger().info)


def train_in_folder(spec: TrainSpec, root: Path, stop_after: int | None = None, log=None) -> dict:
    """run_training under the folder's lock, with one Prefect task per checkpoint segment and a
    progress bar per stage on stderr."""

    lock = acquire_lock(root)
    try:
        with TrainProgress() as progress:
            return run_training(spec, root, stop_after=stop_after, segment=_segment, log=log,
                                on_step=progress.step)
    finally:
        lock.release()
