"""Finding and requiring real peers (database servers, Postfix, Dovecot, Exim, fail2ban).

Locally a missing peer skips the test with a loud reason; in CI (CI=true)
a missing peer is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

PG_ADMIN_URL = os.environ.get(
    "SASLNETAUTH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MY_ADMIN_URL = os.environ.get("SASLNETAUTH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
EXIM_DIR = Path(os.environ.get("SASLNETAUTH_EXIM_DIR", "/opt/saslnetauth-ci/exim"))


def missing(what: str) -> None:
    """Skip (locally) or fail (CI) because peer ``what`` is missing."""
    msg = f"PEER MISSING: {what} (run .ci/install as root to install the peers)"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def require_binary(name: str, *extra_dirs: str) -> str:
    path = shutil.which(
        name, path=os.pathsep.join([*extra_dirs, os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )
    if not path:
        missing(f"program {name}")
    assert path is not None
    return path


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A new, empty database on the real server of ``kind``; dropped afterwards."""
    import sqlalchemy as sa

    if kind == "sqlite":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/saslnetauth.db"
        return
    admin_url = PG_ADMIN_URL if kind == "postgresql" else MY_ADMIN_URL
    url = sa.engine.make_url(admin_url)
    if not port_open(url.host or "127.0.0.1", url.port or 0):
        missing(f"{kind} server at {url.host}:{url.port}")
    name = f"sna_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


class Daemon:
    """A peer the harness starts and stops, usable with ``with``: stopped again
    when starting it fails half way."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
