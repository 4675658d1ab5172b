"""Rich progress for a run's shard phases (generation, screening): shards and images done,
rate and time left; and the per-phase timing record that run.json keeps."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def phase_timing(seconds: float, items: int) -> dict:
    """One phase's timing as run.json records it: {seconds, items, items_per_s}."""
    return {"seconds": round(float(seconds), 3), "items": int(items),
            "items_per_s": round(items / seconds, 2) if seconds > 0 else None}


def artifact_key(name: str) -> str:
    """A Prefect artifact key made from a dataset name (lowercase letters, digits, dashes)."""
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def screened_line(result: dict) -> str:
    """The log line of one screened shard (`screening.screen_shard`'s result): counts per
    decision, samples published, seconds."""
    counts = ", ".join(f"{n} {d}" for d, n in sorted(result["decisions"].items()))
    return (f"shard {result['shard']}: screened {result['samples']} samples ({counts or 'none'}), "
            f"{result['accepted']} published, in {result['seconds']:.2f} s"
            f"{' (staged result reused)' if result['reused'] else ''}")


class ShardProgress:
    """Progress bars over images, advanced one finished shard at a time; `what` prefixes the
    bars' names (e.g. "screen" -> "screen shards", "screen images")."""

    def __init__(self, shards: int, images: int, what: str = ""):
        console = Console(stderr=True)
        # live bars on a terminal only: elsewhere (logs, CI) the run's own lines say it all
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False, disable=not console.is_terminal)
        prefix = f"{what} " if what else ""
        self._shards = self._progress.add_task(f"{prefix}shards", total=shards, rate="")
        self._images = self._progress.add_task(f"{prefix}images", total=images, rate="")

    def __enter__(self) -> "ShardProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if not self._progress.tasks[self._shards].finished:
            # shards failed: the bars go, and the run's error lines say what happened
            self._progress.live.transient = True
        self._progress.__exit__(*exc)

    def shard_done(self, images: int) -> None:
        """Count one finished shard of `images` samples."""
        self._progress.advance(self._shards)
        self._progress.advance(self._images, images)
        task = self._progress.tasks[self._images]
        if task.elapsed:
            self._progress.update(self._images, rate=f"{task.completed / task.elapsed:.2f} img/s")


class TrainProgress:
    """Progress bars of a training run: one per stage, with the moving loss and steps/s."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False)
        self._tasks: dict[str, int] = {}
        self._loss: dict[str, float] = {}

    def __enter__(self) -> "TrainProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def step(self, stage: str, done: int, total: int, loss: float) -> None:
        """Record that `stage` has finished `done` of `total` steps, the last with `loss`."""
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total, completed=done - 1, info="")
            self._loss[stage] = loss
        self._loss[stage] = 0.95 * self._loss[stage] + 0.05 * loss
        self._progress.update(self._tasks[stage], completed=done, info=f"loss {self._loss[stage]:.4f}")
