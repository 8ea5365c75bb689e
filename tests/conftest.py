from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.store import SqlStore, migrate
from tests.support import debpkg, tiers
from tests.support.peers import fresh_database

DB_KINDS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_kind: str) -> Iterator[str]:
    """An empty database on each of SQLite, PostgreSQL and MariaDB."""
    with fresh_database(db_kind) as url:
        yield url


@pytest.fixture
def sqlite_url() -> Iterator[str]:
    with fresh_database("sqlite") as url:
        yield url


def _migrated_store(url: str) -> SqlStore:
    store = SqlStore(url, cache_seconds=0)
    migrate.upgrade(store)
    return store


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    s = _migrated_store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SqlStore]:
    s = _migrated_store(sqlite_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def fast_hasher() -> PasswordHasher:
    """Cheap argon2 parameters so that unit tests stay fast."""
    return PasswordHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)


@pytest.fixture(autouse=True)
def _saslnetauth_logs_propagate() -> Iterator[None]:
    """Let caplog see saslnetauth's records even after setup_logging ran."""
    logger = logging.getLogger("saslnetauth")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old


_CLOCK = tiers.TierClock()
_STARTED = time.monotonic()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order the tests are dealt out in (tests/support/tiers.py): on xdist's
    workers the Debian 13 tier's file first (a worker runs its inner run while the
    others take the rest), then the tiers longest first; in one process its test
    last, waiting for the inner run started at collection."""
    if tiers.on_worker(config):
        items.sort(key=lambda item: tiers.dealing_rank(item.nodeid))
    else:
        items.sort(key=lambda item: item.nodeid.startswith(tiers.EARLY_TEST))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the Debian 13 tier and the package builds now when they are selected and
    the suite runs in one process (tests/support/tiers.py, tests/support/debpkg.py)."""
    if not session.config.option.collectonly and not tiers.on_worker(session.config):
        selected = [item.nodeid for item in session.items]
        tiers.start_debian13_tier(selected, Path(tempfile.mkdtemp(prefix="sna-debian13-")))
        debpkg.start_builds(selected)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _CLOCK.add(report.nodeid, report.when, report.duration)


def pytest_sessionfinish(session: pytest.Session) -> None:
    tiers.stop(tiers.early_run())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("time per tier")
    for line in _CLOCK.lines(time.monotonic() - _STARTED):
        terminalreporter.write_line(line)
    terminalreporter.section("slowest files")
    for line in _CLOCK.slowest_files():
        terminalreporter.write_line(line)
