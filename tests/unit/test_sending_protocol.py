"""The Postfix policy delegation codec (saslnetauth.sending.protocol), fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saslnetauth.errors import ProtocolError
from saslnetauth.sending.protocol import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    PolicyParser,
    format_reply,
)

RCPT = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=127.0.0.1\nsasl_method=PLAIN\nsasl_username=alice\n"
    b"recipient=a@example.org\nrecipient_count=0\nsize=0\ninstance=1a2b.3c\n\n"
)


def test_one_request_and_its_attributes() -> None:
    (req,) = PolicyParser().feed(RCPT)
    assert req.state == "RCPT"
    assert req.get("sasl_username") == "alice"
    assert req.get("ccert_subject") == ""
    assert req.count("recipient_count") == 0


def test_requests_split_anywhere_and_several_per_chunk() -> None:
    data = RCPT + RCPT.replace(b"RCPT", b"END-OF-MESSAGE").replace(b"count=0", b"count=2")
    for cut in range(len(data)):
        p = PolicyParser()
        got = p.feed(data[:cut]) + p.feed(data[cut:])
        assert [r.state for r in got] == ["RCPT", "END-OF-MESSAGE"]
        assert got[1].count("recipient_count") == 2
        assert not p.pending


def test_crlf_accepted_and_value_keeps_equals() -> None:
    (req,) = PolicyParser().feed(b"sender=a=b@example.org\r\n\r\n")
    assert req.get("sender") == "a=b@example.org"


@pytest.mark.parametrize(
    "data",
    [
        b"no equals sign\n\n",
        b"Bad=name\n\n",
        b"=value\n\n",
        b"a=1\na=2\n\n",
        b"\n",
        b"x=" + b"y" * MAX_LINE + b"\n\n",
        b"x=" + b"y" * MAX_LINE,  # no LF at all: refused before it grows
        b"".join(b"a%d=1\n" % i for i in range(MAX_ATTRIBUTES + 1)) + b"\n",
    ],
)
def test_bad_input_is_an_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        PolicyParser().feed(data)


def test_counts_are_bounded() -> None:
    (req,) = PolicyParser().feed(b"size=-5\nrecipient_count=" + b"9" * 40 + b"\n\n")
    assert req.count("size") == 0
    assert req.count("recipient_count") == 0


def test_reply() -> None:
    assert format_reply("DUNNO") == b"action=DUNNO\n\n"
    for bad in ("", "450 4.7.1 a\nb", "x" * 600):
        with pytest.raises(ValueError):
            format_reply(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3 * MAX_LINE), st.integers(min_value=1, max_value=64))
def test_fuzz_never_crashes_and_stays_bounded(data: bytes, chunk: int) -> None:
    p = PolicyParser()
    try:
        for i in range(0, len(data), chunk):
            for req in p.feed(data[i : i + chunk]):
                assert 0 < len(req.attrs) <= MAX_ATTRIBUTES
                assert all(len(v) < MAX_LINE for v in req.attrs.values())
            assert len(p._buf) < MAX_LINE
    except ProtocolError:
        pass


_names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
_values = st.text(st.characters(blacklist_characters="\n\r", codec="utf-8"), max_size=50)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _values, min_size=1, max_size=20))
def test_fuzz_round_trip(attrs: dict[str, str]) -> None:
    data = b"".join(f"{k}={v}\n".encode() for k, v in attrs.items()) + b"\n"
    (req,) = PolicyParser().feed(data)
    assert dict(req.attrs) == attrs
