"""Storage on real SQLite, PostgreSQL and MariaDB: CRUD, validation of script-written rows."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from saslnetauth.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from saslnetauth.policy.rules.netrules import NetworkRule, parse_address
from saslnetauth.store import SqlStore
from saslnetauth.store.schema import global_networks, user_networks, users

HASH = "{PLAIN}pw"


def test_user_crud(store: SqlStore) -> None:
    store.add_user("Alice", HASH, networks=[NetworkRule.parse("192.0.2.0/24", scope="user")])
    u = store.get_user("ALICE")
    assert u is not None and u.name == "alice" and u.enabled and u.password_hash == HASH
    assert [r.spec for r in u.rules.rules] == ["192.0.2.0/24"]
    assert u.rules.match(parse_address("192.0.2.5"), "smtp") is not None
    with pytest.raises(AlreadyExistsError, match="user alice already exists"):
        store.add_user("alice", HASH)
    store.set_enabled("alice", False)
    assert store.get_user("alice").enabled is False  # type: ignore[union-attr]
    store.set_password("alice", "{PLAIN}new")
    assert store.get_user("alice").password_hash == "{PLAIN}new"  # type: ignore[union-attr]
    store.add_user_network("alice", NetworkRule.parse("2001:db8::/32", "imap", scope="user"))
    with pytest.raises(AlreadyExistsError):
        store.add_user_network("alice", NetworkRule.parse("2001:db8::/32", scope="user"))
    u = store.get_user("alice")
    assert u is not None and {n.network for n in u.networks} == {"192.0.2.0/24", "2001:db8::/32"}
    store.delete_user_network("alice", "2001:DB8::/32")  # any spelling of the same network
    with pytest.raises(NotFoundError):
        store.delete_user_network("alice", "2001:db8::/32")
    store.delete_user("alice")
    assert store.get_user("alice") is None
    with pytest.raises(NotFoundError):
        store.delete_user("alice")
    with pytest.raises(NotFoundError):
        store.set_enabled("nobody", True)


def test_delete_user_removes_networks(store: SqlStore) -> None:
    store.add_user("bob", HASH, networks=[NetworkRule.parse("10.0.0.0/8", scope="user")])
    store.delete_user("bob")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(user_networks)).scalar() == 0
    store.add_user("bob", HASH)
    assert store.get_user("bob").networks == ()  # type: ignore[union-attr]


def test_duplicate_network_in_one_add_is_refused(store: SqlStore) -> None:
    nets = [NetworkRule.parse("10.0.0.0/8"), NetworkRule.parse("10.0.0.0/8")]
    with pytest.raises(InvalidInputError):
        store.add_user("carol", HASH, networks=nets)
    assert store.get_user("carol") is None  # all or nothing


def test_global_networks_and_cache_invalidation(store: SqlStore) -> None:
    assert len(store.global_rules()) == 0
    store.add_global_network(NetworkRule.parse("198.51.100.0/24", "smtp", comment="office"))
    with pytest.raises(AlreadyExistsError):
        store.add_global_network(NetworkRule.parse("198.51.100.0/24"))
    rules = store.global_rules()
    assert rules.match(parse_address("198.51.100.7"), "smtp") is not None
    assert rules.match(parse_address("198.51.100.7"), "imap") is None
    # a row written directly by an admin script is seen (cache_seconds=0 here)
    with store.engine.begin() as conn:
        conn.execute(global_networks.insert().values(network="203.0.113.0/24"))
    assert store.global_rules().match(parse_address("203.0.113.1"), "imap") is not None
    recs = store.list_global_networks()
    assert [(r.network, r.comment) for r in recs] == [
        ("198.51.100.0/24", "office"),
        ("203.0.113.0/24", None),
    ]
    store.delete_global_network("198.51.100.0/24")
    assert store.global_rules().match(parse_address("198.51.100.7"), "smtp") is None
    with pytest.raises(NotFoundError):
        store.delete_global_network("198.51.100.0/24")


def test_rows_from_admin_scripts_are_validated(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad row is skipped with an error log; it never widens access."""
    with store.engine.begin() as conn:
        uid = conn.execute(
            users.insert().values(name="dave", password_hash=HASH)
        ).inserted_primary_key[0]
        conn.execute(
            user_networks.insert(),
            [
                {"user_id": uid, "network": "10.1.2.3/8", "services": None},  # host bits set
                {"user_id": uid, "network": "garbage", "services": None},
                {"user_id": uid, "network": "192.0.2.0/24", "services": "smtp;imap"},  # bad service
                {"user_id": uid, "network": "198.51.100.0/24", "services": "smtp, IMAP"},  # fine
            ],
        )
        conn.execute(global_networks.insert().values(network="0.0.0.0/-1"))
    with caplog.at_level(logging.ERROR, logger="saslnetauth"):
        u = store.get_user("dave")
        g = store.global_rules()
    assert u is not None
    assert [r.spec for r in u.rules.rules] == ["198.51.100.0/24"]
    assert u.rules.match(parse_address("198.51.100.1"), "imap") is not None
    assert u.rules.match(parse_address("10.1.2.3"), "smtp") is None
    assert u.rules.match(parse_address("192.0.2.1"), "smtp") is None
    assert len(g) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("invalid network row skipped" in m for m in errors) == 4, errors
    assert any("did you mean 10.0.0.0/8" in m for m in errors)
    shown = {n.network: n.error for n in u.networks}
    assert shown["garbage"] is not None and shown["198.51.100.0/24"] is None


def test_invalid_user_row_is_backend_error(store: SqlStore) -> None:
    from saslnetauth.errors import BackendError

    with store.engine.begin() as conn:
        conn.execute(users.insert().values(name="eve", password_hash=HASH, backend="ldap"))
    with pytest.raises(BackendError):
        store.get_user("eve")


def test_case_sensitive_mode(db_url: str) -> None:
    from saslnetauth.store import migrate

    s = SqlStore(db_url, lowercase_usernames=False)
    migrate.upgrade(s)
    s.add_user("Frank", HASH)
    s.add_user("frank", "{PLAIN}other")
    assert s.get_user("Frank").password_hash == HASH  # type: ignore[union-attr]
    assert s.get_user("frank").password_hash == "{PLAIN}other"  # type: ignore[union-attr]
    assert s.get_user("FRANK") is None
    s.close()


def test_schema_check(db_url: str) -> None:
    from saslnetauth.errors import SchemaOutdatedError
    from saslnetauth.store import migrate

    s = SqlStore(db_url)
    with pytest.raises(SchemaOutdatedError, match="saslnetauth init"):
        s.check_schema()
    migrate.upgrade(s)
    s.check_schema()
    with s.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaOutdatedError, match="saslnetauth db upgrade"):
        s.check_schema()
    s.close()


def test_the_lean_lookup_indexes_each_distinct_network_list_once(store: SqlStore) -> None:
    """The RuleSet of a user's networks is built once and reused while the rows stay
    the same; a changed row gives a new one, read from the database at that login."""
    store.add_user("alice", HASH, networks=[NetworkRule.parse("192.0.2.0/24", scope="user")])
    first, again = store.get_user("alice"), store.get_user("alice")
    assert first is not None and again is not None and first.rules is again.rules
    store.add_user_network("alice", NetworkRule.parse("198.51.100.0/24", "imap", scope="user"))
    changed = store.get_user("alice")
    assert changed is not None and changed.rules is not first.rules
    assert changed.rules.match(parse_address("198.51.100.7"), "imap") is not None
    assert changed.rules.match(parse_address("198.51.100.7"), "smtp") is None
    assert first.rules.match(parse_address("198.51.100.7"), "imap") is None
