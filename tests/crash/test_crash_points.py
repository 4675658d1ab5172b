"""The crash-point suite: a process death at every commit point of every change of a dataset
folder, then the next command; the folder must end byte-identical to an uninterrupted run's.

Each test copies the state an uninterrupted run had before the change, runs the change in a
child process that dies at one named fault point (`os._exit(137)`, no cleanup: `kill -9`),
checks that nothing unaccepted is published, reruns the same command in this process, and
compares every file (tars, tables, manifest, screening table, records) with the uninterrupted
run's. Screening and report crashes run with a reader beside them (`crash_ops.Reader`), which
must only ever see a whole committed screening: the one before or the one after.
"""

from __future__ import annotations

import pytest
from crash_ops import Reader, contents, screened_generation, tar_keys, unaccepted_published

import crash_ops
from synthdata.folder import DatasetFolder

KILLED = 137
PLAN_POINTS = ["plan.staged", "plan.after_record", "plan.applied", "plan.finished"]
SHARD_POINTS = ["shards.after_tar", "shards.before_marker", "shards.after_marker"]
SCREEN_POINTS = ["screening.after_shard", "screening.after_generation", "screening.staged",
                 "screening.after_record", "screening.after_exchange", "screening.after_tables",
                 "screening.applied", "screening.finished"]
REPORT_POINTS = ["report.staged", "report.after_record", "report.after_moves", "report.applied",
                 "report.finished"]
RESET_POINTS = ["reset.staged", "reset.after_record", "reset.applied", "reset.finished"]
JOURNAL = {DatasetFolder.COMMIT, DatasetFolder.STAGING_AREA, DatasetFolder.TRASH,
           DatasetFolder.STAGING}


def _leftovers(root) -> set[str]:
    return {p.name for p in root.iterdir()} & JOURNAL


def _published(root) -> tuple[str, frozenset]:
    """(generation, accepted keys) a folder publishes, as the Reader records what it saw."""
    return screened_generation(root), frozenset(tar_keys(DatasetFolder(root).accepted_tars()))


@pytest.mark.parametrize("point", PLAN_POINTS)
def test_a_plan_killed_at_any_point_is_finished_or_rolled_back(point, world, crash, tmp_path):
    out = tmp_path / "ds"
    assert crash(point, "plan", out, world.spec) == KILLED
    names = {p.name for p in out.iterdir()}
    plan = {"plan.json", "plan.parquet", "spec.yaml"}
    assert names & plan in (set(), plan) or DatasetFolder.COMMIT in names, \
        "half a plan only ever lies beside its commit record"
    crash_ops.plan(str(out), str(world.spec))
    assert contents(out) == contents(world.planned)
    assert not _leftovers(out)


@pytest.mark.parametrize("point", SHARD_POINTS)
def test_a_shard_killed_at_any_point_is_redone_identically(point, world, crash, tmp_path):
    out = world.copy(world.planned, tmp_path)
    assert crash(point, "generate", out, world.spec) == KILLED
    complete = DatasetFolder(out).complete_shards()
    assert complete == ([0] if point == "shards.after_marker" else []), "the marker is the commit"
    crash_ops.generate(str(out), str(world.spec))
    assert contents(out) == contents(world.raw)


def _crash_with_reader(world, crash, out, point, op, *args) -> Reader:
    reader = Reader(out)
    reader.start()
    try:
        assert crash(point, op, out, *args) == KILLED
        assert not unaccepted_published(out), "only accepted samples are ever published"
        crash_ops.OPS[op](str(out), *args)  # the next command finishes or rolls back, then runs
    finally:
        reader.finish()
    assert not reader.problems, reader.problems[:3]
    from synthdata.dataset.prepare import acquire_lock

    acquire_lock(out).release()  # the next writer removes what the reader pinned meanwhile
    return reader


@pytest.mark.parametrize("point", SCREEN_POINTS)
def test_a_rescreening_killed_at_any_point_commits_the_new_screening_whole(point, world, crash, tmp_path):
    out = world.copy(world.reported_a, tmp_path)
    reader = _crash_with_reader(world, crash, out, point, "screen", world.threshold_b)
    old, new = _published(world.reported_a), _published(world.screened_b)
    assert old[1] != new[1] and new[1], "the two screenings accept different, non-empty sets"
    assert set(reader.seen) <= {old, new}, "a reader saw the old or the new screening, whole"
    assert reader.seen[-1] == new
    assert not unaccepted_published(out)
    assert contents(out) == contents(world.screened_b)
    assert not _leftovers(out)


@pytest.mark.parametrize("point", ["screening.after_generation", "screening.after_record",
                                   "screening.after_exchange"])
def test_a_first_screening_killed_never_publishes_an_empty_or_partial_shards(point, world, crash, tmp_path):
    out = world.copy(world.raw, tmp_path)
    reader = _crash_with_reader(world, crash, out, point, "screen")
    first = _published(world.screened_a)
    assert set(reader.seen) <= {(None, frozenset()), first} and first[1]
    assert contents(out) == contents(world.screened_a)


@pytest.mark.parametrize("point", REPORT_POINTS)
def test_a_report_killed_at_any_point_is_finished(point, world, crash, tmp_path):
    out = world.copy(world.screened_b, tmp_path)
    reader = _crash_with_reader(world, crash, out, point, "report")
    assert {g for g, _ in reader.seen} == {screened_generation(world.screened_b)}
    assert contents(out) == contents(world.reported_b)
    assert not _leftovers(out)


@pytest.mark.parametrize("point", RESET_POINTS)
def test_a_reset_killed_at_any_point_is_finished(point, world, crash, tmp_path):
    out = world.copy(world.reported_b, tmp_path)
    assert crash(point, "reset", out, "crashy") == KILLED
    assert (out / DatasetFolder.LOCK).is_file(), "the run lock is never deleted"
    crash_ops.reset(str(out), "crashy")
    assert {p.name for p in out.iterdir()} <= set(DatasetFolder.LOCKS)
