"""The one login value (saslnetauth/policy/login.py): built once, parsed once,
its password never shown, and whole across the worker link."""

from __future__ import annotations

import dataclasses

from saslnetauth.credentials.apptokens import new_token, parse_token
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.addresses import parse_address
from saslnetauth.serve.decide.frames import cut_frames, frame, login_from, login_message

SECRET = "s3cret-Pa55word"


def test_the_password_never_shows_in_repr_or_str() -> None:
    login = Login.of("alice", SECRET, "192.0.2.9", "imap")
    for text in (repr(login), str(login), f"{login}", f"{login!r}", repr([login])):
        assert SECRET not in text and SECRET.encode().hex() not in text
        assert "password" not in text and "alice" in text
    assert login.password == SECRET.encode()


def test_the_address_is_parsed_once_when_the_login_is_built() -> None:
    login = Login.of("alice", SECRET, "::ffff:192.0.2.9", " IMAP ")
    assert login.address == parse_address("192.0.2.9")
    assert login.rip == "::ffff:192.0.2.9"  # the text as it came
    assert login.shown_rip == "192.0.2.9"  # the log line's canonical form
    assert login.service == "imap"
    assert login.real_rip is None
    junk = Login.of("alice", SECRET, "not-an-address", "smtp", real_rip="127.0.0.1")
    assert junk.address is None and junk.shown_rip == "not-an-address"
    assert junk.real_rip == "127.0.0.1"  # read by the proxies' route
    assert Login.of("alice", SECRET, None, "smtp").shown_rip == "-"


def test_the_login_names_its_credential_by_the_tokens_public_identifier() -> None:
    token = new_token()[0]
    parsed = parse_token(token.encode())
    assert parsed is not None
    assert Login.of("alice", token, None, "imap").credential == parsed[0]
    assert Login.of("alice", SECRET, None, "imap").credential is None  # the main password
    assert Login.of("alice", "", None, "imap").credential is None


def test_a_login_crosses_the_worker_link_whole() -> None:
    """Every field reaches the worker in its place, whatever fields are added later."""
    login = Login.of(
        "alice",
        new_token()[0],
        "2001:db8::7",
        "imap",
        real_rip="192.0.2.1",
        arrival=12.5,
        deadline=17.5,
        repeat=True,
        retired_by=16.0,
    )
    defaults = Login("x", b"", None, None, "")
    same = [
        f.name
        for f in dataclasses.fields(Login)
        if getattr(login, f.name) == getattr(defaults, f.name)
    ]
    assert same == [], "a new Login field: give it a value here"
    buf = bytearray(frame(login_message(9, login)))
    (msg,) = cut_frames(buf)
    assert msg[0] == 9 and buf == bytearray()
    assert login_from(msg) == login
