"""App passwords in the store on every database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import AlreadyExistsError, NotFoundError
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.store import SqlStore
from tests.support.apppasswords import PW
from tests.support.apppasswords import add_app_password as _add
from tests.support.apppasswords import user_net as _net

#: An ``expires_at`` as a script writes it, (in 8 hours, a minute ago), in each form
#: the dialect's column takes: the same forms as a network row's (tests/db/test_grants.py).
SCRIPT_EXPIRIES = {
    "sqlite": [
        # a UNIX number: made the row unusable (TEMPFAIL), while network rows took it
        ("CAST(strftime('%s', 'now') AS INTEGER) + 28800", "strftime('%s', 'now') - 60.5"),
        ("datetime('now', '+8 hours')", "datetime('now', '-1 minutes')"),  # no zone: UTC
        ("strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+8 hours')", "'2020-01-01T00:00:00+01:00'"),
    ],
    "postgresql": [
        ("now() + interval '8 hours'", "now() - interval '1 minute'"),
        ("to_timestamp(extract(epoch from now()) + 28800)", "'2020-01-01 00:00:00'"),
    ],
    "mysql": [("UTC_TIMESTAMP() + INTERVAL 8 HOUR", "UTC_TIMESTAMP() - INTERVAL 1 MINUTE")],
}


def test_store_round_trip(store: SqlStore, fast_hasher: PasswordHasher) -> None:
    store.add_user("carol", fast_hasher.hash(PW), networks=[_net("192.0.2.0/24")])
    store.add_user("dan", fast_hasher.hash(PW))
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = _add(
        store, "carol", "phone", "any", "2001:db8::/32", services="imap,pop3", expires=expires
    )
    _add(store, "carol", "laptop")
    with pytest.raises(AlreadyExistsError, match="already has an app password phone"):
        _add(store, "carol", "phone")
    with pytest.raises(NotFoundError, match="no such user"):
        _add(store, "nobody", "phone")
    # the per-login read (the driver's own connection)
    carol = store.get_user("carol")
    assert carol is not None and store.get_user("dan").app_passwords == ()  # type: ignore[union-attr]
    phone, laptop = carol.app_passwords
    assert (phone.label, phone.services, phone.expires) == (
        "phone",
        frozenset({"imap", "pop3"}),
        expires.timestamp(),
    )
    assert [n.network for n in phone.networks] == ["any", "2001:db8::/32"]
    assert phone.token_id == token.replace("-", "")[:7] and phone.error is None
    assert (laptop.label, laptop.services, laptop.expires, len(laptop.rules)) == (
        "laptop",
        None,
        None,
        0,
    )
    eng = DecisionEngine(store, fast_hasher)
    assert eng.decide(Login.of("carol", token, "2001:db8::1", "pop3")).ok
    # the admin's listing, with timestamps
    name, listed = store.list_app_passwords("CAROL")
    assert name == "carol" and [r.label for r in listed] == ["phone", "laptop"]
    assert listed[0].created_at is not None and listed[0].last_used_at is None
    assert store.count_app_passwords() == (2, 1)
    # last use: written, never moved back
    later = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC).timestamp()
    store.touch_app_passwords({phone.id: later})
    store.touch_app_passwords({phone.id: later - 3600})
    assert store.list_app_passwords("carol")[1][0].last_used_at == datetime.fromtimestamp(
        later, UTC
    )
    store.delete_app_password("carol", "phone")
    assert [a.label for a in store.get_user("carol").app_passwords] == ["laptop"]  # type: ignore[union-attr]
    store.delete_user("carol")
    assert store.count_app_passwords() == (0, 0)


def test_an_expiry_a_script_wrote_is_read_like_a_network_rows(
    store: SqlStore, fast_hasher: PasswordHasher
) -> None:
    """issue 21, item 5: one reader for both tables, so an app password and a grant
    with the same stored expires_at expire alike, on every database."""
    store.add_user("carol", fast_hasher.hash(PW), networks=[_net("192.0.2.0/24")])
    token = _add(store, "carol", "phone", "any")
    engine = DecisionEngine(store, fast_hasher)
    for future, past in SCRIPT_EXPIRIES[store.dialect]:
        for value, alive in ((future, True), (past, False)):
            with store.engine.begin() as conn:
                for table in ("app_passwords", "user_networks"):
                    conn.execute(sa.text(f"UPDATE {table} SET expires_at = {value}"))  # noqa: S608
            d = engine.decide(Login.of("carol", token, "203.0.113.5", "imap"))
            want = (Verdict.OK, Reason.OK) if alive else (Verdict.FAIL, Reason.EXPIRED)
            assert (d.verdict, d.reason) == want, (value, d)
            grant = engine.decide(Login.of("carol", PW, "192.0.2.9", "imap"))
            assert grant.ok is alive, (value, grant)
    if store.dialect == "postgresql":  # a timestamptz column takes no bare number
        with pytest.raises(sa.exc.DBAPIError), store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE app_passwords SET expires_at = 1893456000"))
