"""The pseudonym key: made once under a cross-process lock, never overwritten, checked on read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from synthdata import privacy


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    return tmp_path / "cache"


RACER = """
import os, sys, time
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.001)
from synthdata import privacy
print(privacy.pseudonymize("MRN12345678", "real-image"))
"""


def test_processes_racing_to_make_the_key_all_get_one_key(fresh_cache, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "SYNTHDATA_CACHE": str(fresh_cache)}
    env.pop(privacy.KEY_ENV, None)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(1.0)  # every racer imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    names = {out.strip() for out, _ in outs}
    key = fresh_cache / "private" / privacy.KEY_NAME
    assert len(names) == 1 and names == {privacy.pseudonymize("MRN12345678", "real-image")}
    assert len(key.read_bytes()) == privacy.KEY_BYTES
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not [p.name for p in key.parent.iterdir() if ".tmp-" in p.name]


def test_the_key_is_never_replaced(fresh_cache):
    first = privacy.pseudonymize("a")
    key = fresh_cache / "private" / privacy.KEY_NAME
    before = key.read_bytes()
    assert privacy.pseudonymize("a") == first and key.read_bytes() == before


@pytest.mark.parametrize("damage", [b"", b"x" * 31, b"x" * 33])
def test_a_damaged_key_is_an_error_naming_the_file_and_is_kept(fresh_cache, damage):
    privacy.pseudonymize("a")
    key = fresh_cache / "private" / privacy.KEY_NAME
    key.write_bytes(damage)
    with pytest.raises(privacy.PseudonymKeyError) as info:
        privacy.pseudonymize("a")
    message = str(info.value)
    assert str(key) in message and f"{len(damage)} bytes, expected 32" in message
    assert "Restore it from a backup" in message
    assert key.read_bytes() == damage, "never silently replaced"


def test_an_explicit_key_must_be_32_bytes(fresh_cache, monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, "ab" * 16)
    with pytest.raises(privacy.PseudonymKeyError, match="64 hexadecimal"):
        privacy.pseudonymize("a")
    monkeypatch.setenv(privacy.KEY_ENV, "ab" * 32)
    assert privacy.pseudonymize("a").startswith(privacy.PREFIX)
    assert not (fresh_cache / "private" / privacy.KEY_NAME).exists()
