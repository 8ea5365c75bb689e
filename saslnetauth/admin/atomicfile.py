"""Replace a file atomically, so that a reader (Dovecot) never sees half of it.

The new content goes to a temporary file in the same directory, is
flushed and fsync()ed, gets the old file's mode, owner and group (or mode
0640 for a new file: the file holds password hashes), and is then renamed
over the target, and the directory is fsync()ed. A reader sees the old
file or the new one, never a mix; on any error the temporary file is
removed and the target is untouched. A symbolic link as target is followed,
so the file it points to is replaced and the link kept.

Dovecot's passwd-file re-reads a file only when its modification time (in
whole seconds) or its size changed (``passwd_file_sync()`` in Dovecot's
``src/auth/db-passwd-file.c``). So a file whose content is unchanged is
not rewritten at all, and a changed file always gets a modification time
later than the old one's, even when both are written within one second
with the same size.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NEW_FILE_MODE", "WriteResult", "write_atomic"]

#: Mode of a newly created file (owner read/write, group read: e.g. group dovecot).
NEW_FILE_MODE = 0o640


@dataclass
class WriteResult:
    path: Path  # the file written (symbolic links resolved)
    changed: bool  # False: the content was already the same, nothing written
    warnings: list[str] = field(default_factory=list)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> WriteResult:
    """Replace ``path`` with ``data`` (see the module docstring)."""
    target = Path(os.path.realpath(path))
    result = WriteResult(target, changed=True)
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    if old is not None:
        if not stat.S_ISREG(old.st_mode):
            raise IsADirectoryError(f"{target} exists and is not a regular file")
        if old.st_size == len(data) and target.read_bytes() == data:
            result.changed = False
            return result
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return result
