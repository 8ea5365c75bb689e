"""A private PostgreSQL cluster that a test may stop and start at will.

Fault tests must not stop the machine's shared PostgreSQL, so they get their
own: ``initdb`` into a temporary directory (as the ``postgres`` user), trust
authentication, listening on 127.0.0.1 at a free port.
"""

from __future__ import annotations

import glob
import pwd
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port, wait_for
from tests.support.peers import missing


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        missing(f"PostgreSQL server binary {name} (Debian package postgresql)")
    return found[-1]


class PrivatePostgres:
    def __init__(self, tmpdir: Path) -> None:
        try:
            self.user = pwd.getpwnam("postgres")
        except KeyError:
            missing("system user postgres (Debian package postgresql)")
        self.initdb = _pg_bin("initdb")
        self.pg_ctl = _pg_bin("pg_ctl")
        self.root = tmpdir / "pg"
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        res = self._as_postgres(
            self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed: {res.stdout}{res.stderr}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        res = self._as_postgres(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            opts,
            "-w",
            "start",
        )
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {res.stdout}{res.stderr}")
        wait_for(self.ready, timeout=30, what="private PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def ready(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def __enter__(self) -> PrivatePostgres:
        self.init()
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop("immediate")
