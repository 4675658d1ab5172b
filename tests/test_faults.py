"""The named fault hook (`synthdata.faults`): off unless armed, real OSErrors, a real kill."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from synthdata import faults
from synthdata.faults import fault


def test_unarmed_points_do_nothing(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    fault("shards.write_tar", "/x")
    monkeypatch.setenv(faults.ENV, "other.point:enospc")
    fault("shards.write_tar", "/x")


@pytest.mark.parametrize(("kind", "code"), [("enospc", errno.ENOSPC), ("eacces", errno.EACCES),
                                            ("erofs", errno.EROFS), ("enoent", errno.ENOENT)])
def test_armed_points_raise_the_system_calls_error_with_the_path(monkeypatch, kind, code):
    monkeypatch.setenv(faults.ENV, f"a:kill, shards.write_tar:{kind}")
    with pytest.raises(OSError) as info:
        fault("shards.write_tar", "/data/raw/.shard-000000.tar.tmp-1")
    assert info.value.errno == code and info.value.filename == "/data/raw/.shard-000000.tar.tmp-1"
    assert os.strerror(code) in str(info.value)


def test_a_star_arms_every_point_it_prefixes(monkeypatch):
    monkeypatch.setenv(faults.ENV, "screening.*:erofs")
    with pytest.raises(OSError, match="Read-only"):
        fault("screening.after_exchange")
    fault("shards.write_tar")


def test_a_malformed_setting_is_an_error_not_silence(monkeypatch):
    monkeypatch.setenv(faults.ENV, "shards.write_tar:full")
    with pytest.raises(ValueError, match="POINT:KIND"):
        fault("shards.write_tar")


def test_kill_ends_the_process_without_cleanup(tmp_path):
    code = ("import atexit, pathlib; from synthdata.faults import fault\n"
            f"atexit.register(lambda: pathlib.Path({str(tmp_path / 'cleanup')!r}).touch())\n"
            "fault('p.before'); fault('p.here'); print('survived')")
    env = {**os.environ, faults.ENV: "p.here:kill"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == faults.KILL_STATUS and "survived" not in done.stdout
    assert not (tmp_path / "cleanup").exists()
