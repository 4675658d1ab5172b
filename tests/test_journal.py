"""The one commit protocol (`synthdata.folder.journal`): stage, one record written last, apply, trash.

Faults are real: `SYNTHDATA_FAULT=<point>:enospc` makes the named step raise the OSError a full
disk would (the crash-point suite, tests/crash, kills processes instead).
"""

from __future__ import annotations

import json

import pytest

from synthdata.folder import journal
from synthdata.errors import OutputError
from synthdata.folder import DatasetFolder
from synthdata.dataset.prepare import acquire_lock


def _staged_change(root, op: str = "plan") -> tuple[DatasetFolder, journal.StagedFolder]:
    folder = DatasetFolder(root)
    staged = journal.StagedFolder(root, journal.stage(folder, op),
                                  (folder.PLAN, folder.REPORT, folder.PLAN_INFO))
    staged.plan_file.write_text("new plan")
    staged.report_dir.mkdir()
    (staged.report_dir / "contact-a.png").write_text("new sheet")
    staged.plan_info_file.write_text("{}")
    return folder, staged


def test_staged_entries_go_to_the_staging_area_and_nowhere_else(tmp_path):
    folder, staged = _staged_change(tmp_path)
    assert staged.plan_file == tmp_path / ".staging" / "plan" / "plan.parquet"
    assert staged.spec_file == folder.spec_file, "an entry not staged is the folder's own"
    assert [b.name for _, b in staged.moves()] == ["plan.parquet", "report", "plan.json"]
    assert not folder.plan_file.exists()


def test_a_change_killed_after_its_record_is_finished_by_the_next_writer(tmp_path, monkeypatch):
    folder, staged = _staged_change(tmp_path)
    folder.report_dir.mkdir()
    (folder.report_dir / "contact-old.png").write_text("old sheet")
    monkeypatch.setenv("SYNTHDATA_FAULT", "plan.after_record:enospc")
    with pytest.raises(OSError, match="No space left"):
        journal.commit(folder, "plan", moves=staged.moves())
    record = journal.pending(folder)
    assert record["op"] == "plan" and record["moves"][0] == [".staging/plan/plan.parquet", "plan.parquet"]
    assert not folder.plan_file.exists(), "nothing applied yet"
    monkeypatch.delenv("SYNTHDATA_FAULT")
    acquire_lock(tmp_path).release()  # any writer recovers first
    assert folder.plan_file.read_text() == "new plan"
    assert [p.name for p in folder.report_dir.iterdir()] == ["contact-a.png"], \
        "a folder replaces a folder whole"
    assert journal.pending(folder) is None
    assert {p.name for p in tmp_path.iterdir()} == {"plan.parquet", "report", "plan.json",
                                                    ".synthdata.lock"}, "staging and trash gone"


def test_a_change_killed_halfway_through_applying_is_finished_once(tmp_path, monkeypatch):
    folder, staged = _staged_change(tmp_path)
    moves = staged.moves()
    monkeypatch.setenv("SYNTHDATA_FAULT", "plan.after_record:enospc")
    with pytest.raises(OSError):
        journal.commit(folder, "plan", moves=moves)
    moves[0][0].replace(moves[0][1])  # the first move happened before the crash
    monkeypatch.delenv("SYNTHDATA_FAULT")
    assert journal.recover(folder) == "plan"
    assert folder.plan_file.read_text() == "new plan" and folder.plan_info_file.is_file()


def test_a_change_killed_before_its_record_is_rolled_back(tmp_path, monkeypatch):
    folder, staged = _staged_change(tmp_path)
    monkeypatch.setenv("SYNTHDATA_FAULT", "plan.staged:enospc")
    with pytest.raises(OSError):
        journal.commit(folder, "plan", moves=staged.moves())
    assert journal.pending(folder) is None and folder.staging_area.is_dir()
    monkeypatch.delenv("SYNTHDATA_FAULT")
    assert journal.recover(folder) is None
    assert list(tmp_path.iterdir()) == [], "the staged change is gone, nothing applied"


def test_a_record_synthdata_cannot_read_is_refused_not_guessed(tmp_path):
    folder = DatasetFolder(tmp_path)
    folder.commit_file.write_text(json.dumps({"op": "migrate", "moves": []}))
    with pytest.raises(OutputError, match="unknown kind 'migrate'.*upgrade synthdata"):
        acquire_lock(tmp_path)
    folder.commit_file.write_text("{half a rec")
    with pytest.raises(OutputError, match="unreadable commit record"):
        journal.recover(folder)
    assert folder.commit_file.is_file(), "left for a person to look at"
    folder.commit_file.unlink()
    acquire_lock(tmp_path).release()  # the refusal released the run lock


def test_records_stay_inside_the_folder(tmp_path):
    folder = DatasetFolder(tmp_path / "ds")
    folder.root.mkdir()
    (tmp_path / "precious").write_text("keep")
    folder.commit_file.write_text(json.dumps({"op": "reset", "remove": ["../precious"], "moves": []}))
    with pytest.raises(OutputError, match="outside the output folder"):
        journal.recover(folder)
    assert (tmp_path / "precious").read_text() == "keep"


def test_what_a_killed_writer_left_under_a_temporary_name_is_swept(tmp_path):
    folder = DatasetFolder(tmp_path)
    folder.raw_dir.mkdir()
    folder.embeddings_dir.mkdir()
    left = [tmp_path / ".spec.yaml.tmp-4242", folder.raw_dir / ".shard-000001.tar.tmp-4242",
            folder.embeddings_dir / ".shard-000000.emb-ab.npz.tmp-77", tmp_path / ".screening.parquet.link-9"]
    for path in left:
        path.write_bytes(b"half")
    (tmp_path / "spec.yaml").write_text("kept")
    acquire_lock(tmp_path).release()
    assert not any(p.exists() for p in left) and (tmp_path / "spec.yaml").read_text() == "kept"
