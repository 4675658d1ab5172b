"""Safe file writing: temporary name then rename, paths confined to an output folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from synthdata.errors import OutputError, SynthdataError


def cache_root() -> Path:
    """Where synthdata caches built models and screening indexes: $SYNTHDATA_CACHE, or
    ~/.cache/synthdata."""
    return Path(os.environ.get("SYNTHDATA_CACHE", Path.home() / ".cache" / "synthdata"))


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        if exc.filename is None:  # a failed write() names no file (disk full): say which one
            exc.filename = str(tmp)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to path atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text (UTF-8) to path atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write JSON (sorted keys, indented) to path atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make `dst` the same file as `src`: a hard link (no bytes copied), or a copy where the file
    system has none. `dst` must not exist."""
    import errno
    import shutil

    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        shutil.copyfile(src, dst)


def replace_with_link(src: str | Path, dst: str | Path) -> None:
    """Atomically make `dst` (a file, existing or not) the same file as `src`."""
    final = Path(dst)
    tmp = final.with_name(f".{final.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    link_or_copy(src, tmp)
    os.replace(tmp, final)


def confined(root: str | Path, relative: str | Path) -> Path:
    """root/relative, refusing anything that would land outside root."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise OutputError(f"refusing to write {relative!s}: it is outside the output folder {base}")
    return target


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: str | Path, b: str | Path) -> bool:
    """Atomically swap two paths (files or folders) on one file system; True when atomic.

    Linux's renameat2(RENAME_EXCHANGE): at every instant each name points at one of the two
    entries, so a reader never finds `b` missing. Where the call is unavailable (other systems,
    file systems without it) it falls back to three renames, with a short window in which `b`
    is absent, and returns False.
    """
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
            return True
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    side = Path(b).with_name(f".{Path(b).name}.swap-{os.getpid()}")
    os.replace(b, side)
    os.replace(a, b)
    os.replace(side, a)
    return False


def find_dvc_root(path: str | Path) -> Path | None:
    """The DVC repository enclosing `path` (a file or folder, existing or not), or None."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    try:
        return Path(Repo.find_root(str(p if p.is_dir() else p.parent)))
    except NotDvcRepoError:
        return None


def folder_sha256(folder: Path) -> str:
    """Hash of every file's name and bytes in the folder, in sorted order (the fingerprint of a
    local model or classifier folder)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def is_url(value: object) -> bool:
    """True for a `scheme://...` string (two or more scheme letters: `C://` stays a path)."""
    return isinstance(value, str) and _URL.match(value.strip()) is not None


def url_message(value: str) -> str:
    """What to say about a URL given where a local path is expected."""
    scheme = _URL.match(value.strip()).group(1)
    return (f"{value!r} is a URL ({scheme}://); expected a local path (object storage and other "
            "URLs are not supported yet: copy or mount the data locally and give its path)")


def refuse_url(value: str | Path | None, where: str) -> None:
    """Raise a SynthdataError (exit 2) naming `where` (an option or field) when `value` is a URL."""
    if is_url(value):
        raise SynthdataError(f"{where}: {url_message(str(value))}")


def private_dirs(path: Path, root: Path) -> Path:
    """Create `path` and its parents below `root` (not `root` itself) as owner-only (0700)
    folders: where real-image data and the pseudonym key are kept."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    p = path
    while p != root and root in p.parents:
        os.chmod(p, 0o700)
        p = p.parent
    return path


def private_file(path: str | Path) -> Path:
    """Create `path` empty if absent, readable and writable by its owner only (0600)."""
    p = Path(path)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(p, 0o600)
    return p


def write_private(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename it to `path`: the file is owner-only (0600) from its creation, so
    real-image data is never readable by others, even half-written. The caller makes the
    folder (`private_dirs`)."""
    with atomic_path(path) as tmp:
        private_file(tmp)
        write(tmp)
        os.chmod(tmp, 0o600)
