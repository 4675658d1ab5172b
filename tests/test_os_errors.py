"""One clear line for OS errors: disk full during a real `synthdata run` (the real CLI in its own
process, a real Prefect flow on the session server) prints at most three lines naming the path,
exits 1, keeps the tracebacks in the run log, and the rerun after "freeing space" makes the
same bytes as an uninterrupted run.

The disk fills through the named fault hook (`SYNTHDATA_FAULT=shards.write_tar:enospc`, the
`OSError(ENOSPC)` a full disk raises at the shard's tar write), so the test needs no root and
no small file system. The same run on a real 160 KB tmpfs (as root) printed the same three lines
(naming `raw/.shard-000000.parquet.tmp-PID`), and the rerun after growing the tmpfs gave raw and
accepted tars, manifest and stats identical to an uninterrupted run.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthdata.cli import runlog
from synthdata.fsutil import sha256_file
from tests.conftest import DEMO_SPEC


@pytest.fixture
def small_spec(tmp_path) -> Path:
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data.update(count=16, shards={"size": 8})
    data["generator"].update(steps=2)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tars(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.glob("shard-*.tar"))}


def test_disk_full_during_a_run_is_three_lines_and_the_rerun_is_identical(prefect_server, small_spec,
                                                                        tmp_path):
    from synthdata.flow import synthdata_run
    from tests.lineage.conftest import build_dataset

    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "SYNTHDATA_FAULT": "shards.write_tar:enospc",
           "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-m", "synthdata.cli", "run", str(small_spec), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    console = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1, done.stdout + done.stderr
    assert 1 <= len(console) <= 3, "\n".join(console)
    assert console[0].startswith("error: no space left on device (ENOSPC): ")
    assert f"{out}/raw/.shard-00000" in console[0], "names the path that could not be written"
    assert "free space" in console[1] and "rerun the same command" in console[1]
    assert "Traceback" not in done.stderr
    log = Path(console[2].split("Details: ", 1)[1])
    text = log.read_text()
    assert log.parent == runlog.log_dir() and "Traceback" in text and "[Errno 28] No space left on device" in text
    assert "shards.write_tar" not in console[0]
    assert not [p for p in (out / "raw").iterdir() if ".tmp-" in p.name], "no half-written files"
    assert _tars(out / "raw") == {}

    synthdata_run(str(small_spec), out_dir=str(out))  # space freed: the same command again
    uninterrupted = build_dataset(tmp_path / "reference", small_spec, shards=(0, 1))
    assert _tars(out / "raw") == _tars(uninterrupted / "raw") and len(_tars(out / "raw")) == 2
    assert _tars(out / "shards") == _tars(out / "raw"), "nothing screened out: every sample accepted"


@pytest.mark.parametrize(("code", "what", "todo"), [
    (errno.ENOSPC, "no space left on device (ENOSPC)", "free space"),
    (errno.EACCES, "permission denied (EACCES)", "give this user access"),
    (errno.EROFS, "read-only file system (EROFS)", "writable location"),
    (errno.ENOENT, "file not found (ENOENT)", "vanished"),
    (errno.EIO, "Input/output error (EIO)", "check that path"),
])
def test_each_os_error_is_one_line_with_the_path_and_what_to_do(code, what, todo):
    lines = runlog.os_error_lines(OSError(code, os.strerror(code), "/data/out/raw/x.tar"), "/c/logs/run.log")
    assert lines[0] == f"{what}: /data/out/raw/x.tar" and todo in lines[1]
    assert lines[2] == "  Details: /c/logs/run.log" and len(lines) == 3


def test_the_os_error_is_found_behind_failed_shards_not_behind_synthdata_errors():
    from synthdata.errors import SynthdataError
    from synthdata.flow import ShardFailure

    full = OSError(errno.ENOSPC, "No space left on device", "/d/raw/.shard-000001.tar.tmp-9")
    failure = ShardFailure({0: "RuntimeError: x", 1: "OSError: full"}, 2,
                           {0: RuntimeError("x"), 1: full})
    assert runlog.os_error_of(failure) is full
    try:
        try:
            raise full
        except OSError as exc:
            raise SynthdataError("not a dataset folder") from exc
    except SynthdataError as exc:
        assert runlog.os_error_of(exc) is None, "a synthdata error explains itself"
    assert runlog.os_error_of(SynthdataError("plain")) is None
    assert runlog.os_error_of(OSError("no errno")) is None
    text_only = OSError("[Errno 28] Error writing bytes to file")  # pyarrow's style
    assert runlog.os_error_lines(text_only, "l")[0].startswith("no space left on device (ENOSPC)")


def test_a_run_log_that_cannot_be_written_stays_quiet_and_says_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("SYNTHDATA_CACHE", str(tmp_path / "cache"))
    log = runlog.start("run")
    try:
        import logging

        logging.getLogger("synthdata.test").error("an error record")
        where = log.traceback(OSError(errno.ENOSPC, "No space left on device", "/x"))
    finally:
        log.stop()
    assert where.startswith("(the run log ") and "could not be written" in where
    assert "Logging error" not in capsys.readouterr().err, "no report of logging's own failure"
