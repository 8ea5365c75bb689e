"""Where a peer's programs live: this machine (Debian 12) or the Debian 13 chroot.

``.ci/debian13`` builds a Debian 13 ("trixie") tree at
``/opt/saslnetauth-ci/trixie`` (``SASLNETAUTH_TRIXIE_DIR``) with its Postfix,
Exim (unpacked at ``/opt/exim``), Dovecot 2.4, systemd and Python 3.13. A peer
in it runs through ``chroot``; it shares this machine's network (loopback TCP
works both ways) and sees a file of ours only when that file lies inside the
tree. So a test makes its peer directory under the root's ``/tmp``
(:meth:`Root.tmpdir`), reads and writes files at their host path, and hands
the peer the path as seen inside (:meth:`Root.inside`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import PeerError, check_searchable
from tests.support.peers import EXIM_DIR, missing

REPO = Path(__file__).resolve().parents[2]
TRIXIE_DIR = Path(os.environ.get("SASLNETAUTH_TRIXIE_DIR", "/opt/saslnetauth-ci/trixie"))
MOUNTS = REPO / ".ci" / "chroot-mounts"


@dataclass(frozen=True)
class Root:
    """A root directory holding peer programs: ``/`` or a chroot."""

    release: str
    path: Path = Path("/")
    exim_dir: Path = EXIM_DIR
    """Where Exim's package is unpacked (a path inside the root)."""

    @property
    def is_host(self) -> bool:
        return self.path == Path("/")

    def inside(self, host_path: str | Path) -> str:
        """``host_path`` as a program in the root sees it."""
        p = Path(host_path)
        if self.is_host:
            return str(p)
        try:
            return "/" + str(p.relative_to(self.path))
        except ValueError:
            raise PeerError(f"{p} is outside the chroot {self.path}") from None

    def outside(self, inner_path: str | Path) -> Path:
        """A path a program in the root names, as this machine reaches it."""
        return self.path / str(inner_path).lstrip("/")

    def cmd(self, *argv: str) -> list[str]:
        """``argv`` (a program path inside the root first) run in the root."""
        return list(argv) if self.is_host else ["chroot", str(self.path), *argv]

    def require_binary(self, name: str, *extra_dirs: str | Path) -> str:
        """The path (inside the root) of program ``name``, or missing()."""
        dirs = [str(d) for d in extra_dirs] + ["/usr/local/sbin", "/usr/local/bin"]
        dirs += ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        if self.is_host:
            found = shutil.which(name, path=os.pathsep.join([*dirs, os.environ.get("PATH", "")]))
            if found:
                return found
        else:
            for d in dirs:
                if os.access(self.outside(Path(d) / name), os.X_OK):
                    return str(Path(d) / name)
        missing(f"program {name} ({self.release})")
        raise AssertionError("unreachable")

    def user_ids(self, user: str) -> tuple[int, int]:
        """uid and gid of ``user`` in the root's /etc/passwd, or missing()."""
        if self.is_host:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                missing(f"system user {user} ({self.release})")
            return entry.pw_uid, entry.pw_gid
        for line in self.outside("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[0] == user:
                return int(fields[2]), int(fields[3])
        missing(f"system user {user} ({self.release})")
        raise AssertionError("unreachable")

    @contextmanager
    def tmpdir(self, prefix: str = "sna-peer-") -> Iterator[Path]:
        """A fresh world-searchable directory under the root's /tmp (host path), removed
        afterwards. Short on purpose: UNIX socket paths are limited to 107 bytes."""
        base = self.outside("/tmp")
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        try:
            path.chmod(0o755)
            check_searchable(path)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


HOST = Root("Debian 12")
"""This machine: Postfix 3.7, Exim 4.96 unpacked in SASLNETAUTH_EXIM_DIR, Python 3.11."""


def trixie() -> Root:
    """The Debian 13 chroot (its /proc, /dev and /sys mounted), or missing()."""
    if not (TRIXIE_DIR / ".saslnetauth-ready").exists():
        missing(f"Debian 13 chroot at {TRIXIE_DIR} (bash .ci/debian13)")
    if os.geteuid() != 0:
        missing("root privileges (the Debian 13 chroot runs through chroot)")
    if not os.path.ismount(TRIXIE_DIR / "proc"):
        subprocess.run(["bash", str(MOUNTS), str(TRIXIE_DIR), "up"], check=True, timeout=60)
    return Root("Debian 13", TRIXIE_DIR, Path("/opt/exim"))
