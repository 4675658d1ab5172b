"""Rich progress for a generation run: shards and images done, rate and time left."""

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


class ShardProgress:
    """Progress bars over images, advanced one finished shard at a time."""

    def __init__(self, shards: int, images: int):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False)
        self._shards = self._progress.add_task("shards", total=shards, rate="")
        self._images = self._progress.add_task("images", total=images, rate="")

    def __enter__(self) -> "ShardProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def shard_done(self, images: int) -> None:
        """Count one finished shard of `images` samples."""
        self._progress.advance(self._shards)
        self._progress.advance(self._images, images)
        task = self._progress.tasks[self._images]
        if task.elapsed:
            self._progress.update(self._images, rate=f"{task.completed / task.elapsed:.2f} img/s")
