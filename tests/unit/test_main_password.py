"""Where the main password may log in (docs/app-passwords.md, "Requiring app passwords"):
the rule in the decision engine (SQLite), its parsing, and the column on every database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import InvalidServiceError
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.mainpassword import (
    format_main_services,
    main_password_allows,
    parse_main_services,
)
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.store import SqlStore

PW = "main pass word"
HOME = "192.0.2.9"


@dataclass
class World:
    engine: DecisionEngine
    store: SqlStore
    token: str


@pytest.fixture
def world(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> Iterator[World]:
    s = sqlite_store
    s.add_user("alice", fast_hasher.hash(PW), networks=[NetworkRule.parse("192.0.2.0/24")])
    s.add_user("carol", fast_hasher.hash(PW), networks=[NetworkRule.parse("192.0.2.0/24")])
    s.set_main_password_services("alice", "smtp")
    phone = [NetworkRule.parse("any", scope="app password phone")]
    token = s.add_app_password("alice", "phone", new_token, services=None, networks=phone)
    yield World(DecisionEngine(s, fast_hasher), s, token)


def test_main_password_refused_elsewhere_like_a_wrong_one(world: World) -> None:
    refused = world.engine.decide(Login.of("alice", PW, HOME, "imap"))
    assert (refused.verdict, refused.reason) == (Verdict.FAIL, Reason.APP_PASSWORD_REQUIRED)
    assert refused.credentials_valid and refused.network_ok
    assert refused.verify_seconds > 0  # the hash was spent, as for a wrong password
    assert refused.credential is None
    wrong = world.engine.decide(Login.of("alice", "not it", HOME, "imap"))
    assert (wrong.verdict, wrong.reason) == (Verdict.FAIL, Reason.BAD_PASSWORD)


def test_main_password_accepted_on_its_services_and_app_passwords_everywhere(
    world: World,
) -> None:
    assert world.engine.decide(Login.of("alice", PW, HOME, "smtp")).ok
    for service in ("imap", "pop3", "smtp"):
        d = world.engine.decide(Login.of("alice", world.token, "203.0.113.5", service))
        assert d.ok and d.credential == "phone", service
    # another user keeps the default: everywhere
    assert world.engine.decide(Login.of("carol", PW, HOME, "imap")).ok


def test_a_forbidden_network_stays_the_stolen_credential_event(world: World) -> None:
    d = world.engine.decide(Login.of("alice", PW, "203.0.113.5", "imap"))
    assert (d.reason, d.credentials_valid) == (Reason.NETWORK, True)


def test_the_configured_default_and_a_users_own_setting(
    world: World, fast_hasher: PasswordHasher
) -> None:
    engine = DecisionEngine(
        world.store, fast_hasher, main_password_services=parse_main_services("smtp,submission")
    )
    assert engine.decide(Login.of("carol", PW, HOME, "submission")).ok
    assert engine.decide(Login.of("carol", PW, HOME, "imap")).reason is Reason.APP_PASSWORD_REQUIRED
    world.store.set_main_password_services("carol", "all")  # her own beats the default
    assert engine.decide(Login.of("carol", PW, HOME, "imap")).ok
    world.store.set_main_password_services("carol", "none")
    assert engine.decide(Login.of("carol", PW, HOME, "smtp")).reason is Reason.APP_PASSWORD_REQUIRED
    world.store.set_main_password_services("carol", None)  # back to the default
    assert engine.decide(Login.of("carol", PW, HOME, "submission")).ok


def test_a_stored_value_that_does_not_parse_fails_closed(world: World) -> None:
    world.store.set_main_password_services("carol", "smtp;imap")  # a script's typo
    d = world.engine.decide(Login.of("carol", PW, HOME, "smtp"))
    assert d.reason is Reason.APP_PASSWORD_REQUIRED


def test_disabled_comes_first(world: World) -> None:
    world.store.set_enabled("alice", False)
    assert world.engine.decide(Login.of("alice", PW, HOME, "imap")).reason is Reason.DISABLED


@pytest.mark.parametrize(
    ("text", "parsed", "stored"),
    [
        ("all", None, "all"),
        (" NONE ", frozenset(), "none"),
        ("smtp, Submission", frozenset({"smtp", "submission"}), "smtp,submission"),
    ],
)
def test_parse_and_format(text: str, parsed: frozenset[str] | None, stored: str) -> None:
    assert parse_main_services(text) == parsed
    assert format_main_services(parsed) == stored


@pytest.mark.parametrize("text", ["", "smtp,all", "none,imap", "sm tp!"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidServiceError):
        parse_main_services(text)


def test_allows() -> None:
    assert main_password_allows(None, None, "imap")
    assert not main_password_allows(None, frozenset({"smtp"}), "imap")
    assert main_password_allows("imap", frozenset({"smtp"}), "imap")
    assert not main_password_allows("bogus value!", None, "imap")
