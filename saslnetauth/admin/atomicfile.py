"""Replace a file atomically, so that a reader (Dovecot) never sees half of it.

The new content goes to a temporary file in the same directory, is
flushed and fsync()ed, gets the old file's mode, owner and group (or mode
0640 for a new file: the file holds password hashes), and is then renamed
over the target, and the directory is fsync()ed. A reader sees the old
file or the new one, never a mix; on any error the temporary file is
removed and the target is untouched.

Nothing here follows a symbolic link at the target (export runs as root,
often in a directory other users can write to, so a link planted there
must not redirect the write to, say, ``/etc/shadow``): the directory is
opened once and every call is relative to it (``dir_fd``), the old file is
opened with ``O_NOFOLLOW``, owner and mode are set on the new file's
descriptor, and a target that is a symbolic link is refused (name the file
it points to instead).

Dovecot's passwd-file re-reads a file only when its modification time (in
whole seconds) or its size changed (``passwd_file_sync()`` in Dovecot's
``src/auth/db-passwd-file.c``). So a file whose content is unchanged is
not rewritten at all, and a changed file always gets a modification time
later than the old one's, even when both are written within one second
with the same size.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NEW_FILE_MODE", "WriteResult", "write_atomic"]

#: Mode of a newly created file (owner read/write, group read: e.g. group dovecot).
NEW_FILE_MODE = 0o640


@dataclass
class WriteResult:
    path: Path  # the file written
    changed: bool  # False: the content was already the same, nothing written
    warnings: list[str] = field(default_factory=list)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> WriteResult:
    """Replace ``path`` with ``data`` (see the module docstring)."""
    target = Path(os.path.abspath(path))
    result = WriteResult(target, changed=True)
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = _read_old(dir_fd, target, len(data))
        if old is not None and old[0].st_size == len(data) and old[1] == data:
            result.changed = False
            return result
        _write_new(dir_fd, target, data, None if old is None else old[0], result)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return result


def _read_old(dir_fd: int, target: Path, size: int) -> tuple[os.stat_result, bytes] | None:
    """The existing file's status, and its content if it has ``size`` bytes (None: no
    file); never through a link."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(target.name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, f"{target} is a symbolic link; refusing to follow it (give its target)"
            ) from None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"{target} exists and is not a regular file")
        return st, fh.read() if st.st_size == size else b""


def _write_new(
    dir_fd: int, target: Path, data: bytes, old: os.stat_result | None, result: WriteResult
) -> None:
    tmp = f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
                except PermissionError:
                    result.warnings.append(
                        f"could not keep the owner/group {old.st_uid}:{old.st_gid} of {target}"
                    )
            os.fchmod(fh.fileno(), NEW_FILE_MODE if old is None else stat.S_IMODE(old.st_mode))
            if old is not None and int(old.st_mtime) >= int(time.time()):
                later = int(old.st_mtime) + 1
                os.utime(fh.fileno(), (later, later))
            os.fsync(fh.fileno())
        os.replace(tmp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
