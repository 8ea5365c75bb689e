"""Grants in the store on every database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import AlreadyExistsError
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Verdict
from saslnetauth.store import SqlStore

PW = "c0rrect horse"


#: (SQL value of expires_at, expired?) per dialect, as a script would write them.
FUTURE_PAST = {
    "sqlite": ("datetime('now', '+8 hours')", "datetime('now', '-1 minutes')"),
    "postgresql": ("now() + interval '8 hours'", "now() - interval '1 minute'"),
    "mysql": ("UTC_TIMESTAMP() + INTERVAL 8 HOUR", "UTC_TIMESTAMP() - INTERVAL 1 MINUTE"),
}


#: An expiry that is not a time, per dialect.
NOT_A_TIME = {
    "sqlite": "'next friday'",
    "postgresql": "'infinity'",
    "mysql": "'0000-00-00 00:00:00'",
}


def _insert(into: str, *values: str) -> str:
    """An INSERT of SQL expressions (the constants above, as a script would write)."""
    return f"INSERT INTO {into} VALUES ({', '.join(values)})"  # noqa: S608 - constants


def _script(store: SqlStore, *statements: str) -> None:
    with store.engine.begin() as conn:
        if store.dialect == "mysql":  # a zero date needs a lenient mode, as old setups have
            conn.execute(sa.text("SET SESSION sql_mode = ''"))
        for sql in statements:
            conn.execute(sa.text(sql))


def test_script_rows_expire_and_bad_expiry_is_an_invalid_row(
    store: SqlStore, fast_hasher: PasswordHasher, caplog: pytest.LogCaptureFixture
) -> None:
    dialect = "mysql" if store.dialect in ("mysql", "mariadb") else store.dialect
    future, past = FUTURE_PAST[dialect]
    bad = NOT_A_TIME[dialect]
    store.add_user("carol", fast_hasher.hash(PW))
    uid = "(SELECT id FROM users WHERE name = 'carol')"
    _script(
        store,
        _insert("user_networks (user_id, network, expires_at)", uid, "'192.0.2.0/24'", future),
        _insert("user_networks (user_id, network, expires_at)", uid, "'198.51.100.0/24'", past),
        _insert("user_networks (user_id, network, expires_at)", uid, "'203.0.113.0/24'", bad),
        _insert(
            "global_networks (network, services, expires_at)", "'10.1.0.0/16'", "'imap'", future
        ),
        _insert("global_networks (network, services, expires_at)", "'10.2.0.0/16'", "'imap'", past),
        _insert("global_networks (network, services, expires_at)", "'10.3.0.0/16'", "'imap'", bad),
    )
    caplog.set_level(logging.ERROR, logger="saslnetauth.store")
    eng = DecisionEngine(store, fast_hasher)
    verdicts = {
        rip: eng.decide(Login.of("carol", PW, rip, "imap"), quiet=True).verdict
        for rip in ("192.0.2.1", "198.51.100.1", "203.0.113.1", "10.1.0.1", "10.2.0.1", "10.3.0.1")
    }
    assert verdicts == {
        "192.0.2.1": Verdict.OK,
        "198.51.100.1": Verdict.FAIL,
        "203.0.113.1": Verdict.FAIL,  # invalid row: skipped, fails closed
        "10.1.0.1": Verdict.OK,
        "10.2.0.1": Verdict.FAIL,
        "10.3.0.1": Verdict.FAIL,
    }
    for _ in range(3):  # logged once per row, not per login
        eng.decide(Login.of("carol", PW, "203.0.113.1", "imap"), quiet=True)
    skipped = [m for m in caplog.messages if "invalid network row skipped" in m]
    assert len(skipped) == 2, skipped
    assert all("invalid expires_at" in m for m in skipped), skipped

    carol = store.get_user("carol", details=True)
    assert carol is not None
    shown = {n.network: n.to_json() for n in carol.networks}
    assert shown["192.0.2.0/24"]["expired"] is False and shown["192.0.2.0/24"]["valid"]
    assert shown["198.51.100.0/24"]["expired"] is True and shown["198.51.100.0/24"]["valid"]
    assert shown["203.0.113.0/24"]["valid"] is False
    assert "invalid expires_at" in str(shown["203.0.113.0/24"]["error"])
    listed = {r.network: r for r in store.list_global_networks()}
    assert listed["10.2.0.0/16"].expired(time.time())
    assert listed["10.3.0.0/16"].error is not None


def test_written_expiry_reads_back_exactly(store: SqlStore) -> None:
    """What saslnetauth writes is read back as the same instant on every database
    (naive UTC on SQLite and MariaDB, timestamptz on PostgreSQL)."""
    when = float(int(time.time()) + 3 * 86400 + 7)
    store.add_global_network(NetworkRule.parse("192.0.2.0/24", expires=when))
    store.add_user("dan", None, networks=[NetworkRule.parse("any", scope="user", expires=when)])
    assert [r.expires for r in store.list_global_networks()] == [when]
    assert [r.expires for r in store.global_rules().rules] == [when]
    dan = store.get_user("dan")
    assert dan is not None and [r.expires for r in dan.rules] == [when]


def test_renewing_a_grant(store: SqlStore) -> None:
    now = float(int(time.time()))
    store.add_user("erin", None)
    grant = NetworkRule.parse("198.51.100.0/24", ["imap"], scope="user", expires=now + 3600)
    assert store.add_user_network("erin", grant) is None
    longer = grant._replace(expires=now + 7200)
    assert store.add_user_network("erin", longer) is not None
    erin = store.get_user("erin")
    assert erin is not None and [r.expires for r in erin.rules] == [now + 7200]
    # other services: refused, never widened unnoticed
    with pytest.raises(AlreadyExistsError, match="same --service"):
        store.add_user_network("erin", NetworkRule.parse("198.51.100.0/24", scope="user"))
    # without expiry: permanent from now on
    assert store.add_user_network("erin", grant._replace(expires=None)) is not None
    erin = store.get_user("erin")
    assert erin is not None and [r.expires for r in erin.rules] == [None]
    # a permanent network is never made to expire by an add
    with pytest.raises(AlreadyExistsError, match="permanently; to make it expire, remove it"):
        store.add_user_network("erin", grant)
    with pytest.raises(AlreadyExistsError, match="already has network"):
        store.add_user_network("erin", grant._replace(expires=None))

    store.add_global_network(NetworkRule.parse("203.0.113.0/24", expires=now + 60))
    store.add_global_network(NetworkRule.parse("203.0.113.0/24", expires=now + 120))
    assert [r.expires for r in store.global_rules().rules] == [now + 120]
    store.add_global_network(NetworkRule.parse("203.0.113.0/24"))
    with pytest.raises(AlreadyExistsError, match="already exists, permanently"):
        store.add_global_network(NetworkRule.parse("203.0.113.0/24", expires=now + 60))
