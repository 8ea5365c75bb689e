"""The Dovecot auth protocol codec (no sockets) and the SASL state machines."""

from __future__ import annotations

import pytest

from saslnetauth.dovecot.protocol import (
    MAX_LINE,
    AuthRequest,
    ClientCpid,
    ClientVersion,
    ContRequest,
    ServerCodec,
    UnknownCommand,
    escape,
    format_cont,
    format_fail,
    format_handshake,
    format_ok,
    unescape,
)
from saslnetauth.dovecot.sasl import (
    Challenge,
    Credentials,
    LoginMechanism,
    PlainMechanism,
    SaslFailure,
    decode_base64,
    new_mechanism,
)
from saslnetauth.errors import ProtocolError


def started() -> ServerCodec:
    codec = ServerCodec()
    assert codec.receive_data(b"VERSION\t1\t2\nCPID\t123\n") == [
        ClientVersion(1, 2),
        ClientCpid("123"),
    ]
    return codec


def test_escape_roundtrip() -> None:
    raw = "a\tb\nc\rd\x01e\x00f"
    assert escape(raw) == "a\x01tb\x01nc\x01rd\x011e\x010f"
    assert unescape(escape(raw)) == raw
    assert unescape("x\x01ly") == "x\ny"  # old LF escape
    assert unescape("x\x01zy") == "xzy"  # any other byte means itself
    assert unescape("end\x01") == "end"


def test_handshake_mech_before_spid() -> None:
    data = format_handshake(
        [("PLAIN", ("plaintext",)), ("LOGIN", ("plaintext",))], spid=7, cuid=3, cookie="ab" * 16
    )
    assert data == (
        b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t7\n"
        b"CUID\t3\nCOOKIE\t" + b"ab" * 16 + b"\nDONE\n"
    )


def test_postfix_auth_line() -> None:
    codec = started()
    (ev,) = codec.receive_data(
        b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.1\tsecured\tresp=AGEAYg==\n"
    )
    assert isinstance(ev, AuthRequest)
    assert (ev.id, ev.mech, ev.service, ev.rip, ev.secured, ev.resp) == (
        1,
        "PLAIN",
        "smtp",
        "192.0.2.1",
        True,
        "AGEAYg==",
    )
    assert ev.flags == frozenset({"nologin", "secured"})


@pytest.mark.parametrize(
    ("tail", "rip", "resp"),
    [
        (b"\tlip=\trip=\tresp==", None, "="),  # Postfix: unknown client, AUTH PLAIN =
        (b"\tlip=NULL\trip=192.0.2.1\tresp=", "192.0.2.1", None),  # Exim: empty resp = none
        (b"\trip=NULL", None, None),
        (b"\tresp=abc\trip=192.0.2.1", None, "abc"),  # resp= is the last parameter
        (b"\tunknown=1\tflagx\trip=2001:db8::1", "2001:db8::1", None),
    ],
)
def test_auth_parameter_forms(tail: bytes, rip: str | None, resp: str | None) -> None:
    (ev,) = started().receive_data(b"AUTH\t9\tLOGIN\tservice=smtp" + tail + b"\n")
    assert isinstance(ev, AuthRequest)
    assert (ev.rip, ev.resp) == (rip, resp)


def test_escaped_parameter_values() -> None:
    (ev,) = started().receive_data(b"AUTH\t1\tPLAIN\tservice=smtp\tsession=a\x01tb\n")
    assert isinstance(ev, AuthRequest) and ev.params["session"] == "a\tb"


def test_cont_unknown_and_split_reads() -> None:
    codec = started()
    assert codec.receive_data(b"CONT\t4\tYWxp") == []
    assert codec.receive_data(b"Y2U=\nFOO\tbar\r\n") == [
        ContRequest(4, "YWxpY2U="),
        UnknownCommand("FOO"),
    ]
    assert codec.receive_data(b"\n\n") == []


@pytest.mark.parametrize(
    "data",
    [
        b"AUTH\t1\tPLAIN\n",  # before VERSION
        b"VERSION\t2\t0\n",
        b"VERSION\tx\n",
        b"VERSION\t1\t2\nVERSION\t1\t2\n",
        b"VERSION\t1\t2\nAUTH\t-1\tPLAIN\n",
        b"VERSION\t1\t2\nAUTH\t99999999999\tPLAIN\n",
        b"VERSION\t1\t2\nAUTH\t1\n",
        b"VERSION\t1\t2\nCONT\n",
        b"VERSION\t1\t2\nCPID\tabc\n",
        "VERSION\t\u00b2\t2\n".encode(),  # isdigit() but not int(): ProtocolError, not ValueError
        "VERSION\t1\t2\nCPID\t\u00b2\n".encode(),
        "VERSION\t\u0661\t2\n".encode(),  # Arabic-Indic one is not the version 1
        b"VERSION\t1\t2\n" + b"A" * MAX_LINE + b"\n",
        b"VERSION\t1\t2\n" + b"A" * (MAX_LINE + 1),
    ],
)
def test_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ServerCodec().receive_data(data)


def test_reply_formats() -> None:
    assert format_ok(3, "alice") == b"OK\t3\tuser=alice\n"
    assert format_fail(3, "al\tice", reason="Authentication failed") == (
        b"FAIL\t3\tuser=al\x01tice\treason=Authentication failed\n"
    )
    assert format_fail(4, "bob", temp=True) == b"FAIL\t4\tuser=bob\tcode=temp_fail\ttemp\n"
    assert format_fail(5, None) == b"FAIL\t5\n"
    assert format_cont(6, "") == b"CONT\t6\t\n"


def test_reprs_hide_credentials() -> None:
    ev = AuthRequest(1, "PLAIN", {"service": "smtp"}, frozenset(), "AHUAc2VjcmV0")
    assert "AHUAc2VjcmV0" not in repr(ev)
    assert "c2VjcmV0" not in repr(ContRequest(1, "c2VjcmV0"))
    assert "secret" not in repr(Credentials("u", b"secret"))


# --- SASL -------------------------------------------------------------------------


def test_plain() -> None:
    assert PlainMechanism().start(b"\0alice\0pw") == Credentials("alice", b"pw")
    assert PlainMechanism().start(b"alice\0alice\0pw") == Credentials("alice", b"pw")
    assert PlainMechanism().start(None) == Challenge(b"")
    m = PlainMechanism()
    m.start(None)
    assert m.step(b"\0bob\0x\xffy") == Credentials("bob", b"x\xffy")


@pytest.mark.parametrize(
    "msg", [b"", b"\0\0pw", b"alice\0pw", b"\0a\0b\0c", b"bob\0alice\0pw", b"\0\xff\0pw"]
)
def test_plain_failures(msg: bytes) -> None:
    assert isinstance(PlainMechanism().start(msg), SaslFailure)


def test_plain_authzid_failure_names_user() -> None:
    step = PlainMechanism().start(b"bob\0alice\0pw")
    assert isinstance(step, SaslFailure) and step.username == "alice"


def test_login() -> None:
    m = LoginMechanism()
    assert m.start(None) == Challenge(b"Username:")
    assert m.step(b"alice") == Challenge(b"Password:")
    assert m.step(b"pw") == Credentials("alice", b"pw")
    assert isinstance(m.step(b"more"), SaslFailure)
    m = LoginMechanism()
    assert m.start(b"alice") == Challenge(b"Password:")
    assert m.step(b"") == Credentials("alice", b"")
    assert isinstance(LoginMechanism().step(b"\xff"), SaslFailure)


def test_base64_and_factory() -> None:
    assert decode_base64("") == b""
    assert decode_base64("YQ==") == b"a"
    assert decode_base64("YQ") is None
    assert decode_base64("Y Q==") is None
    assert decode_base64("é") is None
    assert new_mechanism("PLAIN") is not None and new_mechanism("CRAM-MD5") is None
