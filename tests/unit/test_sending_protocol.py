"""The Postfix policy delegation codec (saslnetauth.sending.protocol), fuzzed."""

from __future__ import annotations

import re

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


def _one_line_at_a_time(data: bytes) -> list[dict[str, str]] | str:
    """The protocol read the plain way, a line at a time: the requests, or "error"."""
    out: list[dict[str, str]] = []
    attrs: dict[str, str] = {}
    *lines, rest = data.split(b"\n")
    if len(rest) >= MAX_LINE or any(len(line) >= MAX_LINE for line in lines):
        return "error"
    for raw in lines:
        line = raw.removesuffix(b"\r")
        if not line:
            if not attrs:
                return "error"
            out.append(attrs)
            attrs = {}
            continue
        name_b, eq, value = line.partition(b"=")
        name = name_b.decode("ascii", "replace")
        bad_name = not eq or not re.fullmatch(r"[a-z0-9_]{1,64}", name)
        if bad_name or name in attrs or len(attrs) >= MAX_ATTRIBUTES:
            return "error"
        attrs[name] = value.decode("utf-8", "replace")
    return out


_piece = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"=", b"sasl_username", b"size=1", b"\xe2\x82", b"\xff"]),
    st.binary(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_piece, max_size=60), st.integers(min_value=1, max_value=700))
def test_fuzz_same_as_one_line_at_a_time(pieces: list[bytes], chunk: int) -> None:
    """Lines read together (decoded at once) give what a line at a time gives,
    invalid UTF-8 included; so does any cut into chunks."""
    data = b"".join(pieces)
    p = PolicyParser()
    got: list[dict[str, str]] = []
    try:
        for i in range(0, len(data), chunk):
            got += [dict(r.attrs) for r in p.feed(data[i : i + chunk])]
    except ProtocolError:
        assert _one_line_at_a_time(data) == "error"
        return
    assert got == _one_line_at_a_time(data)


def test_the_longest_line_in_a_chunk_of_several_requests() -> None:
    longest = b"x=" + b"y" * (MAX_LINE - 3) + b"\n"  # MAX_LINE bytes with its LF
    (first, second) = PolicyParser().feed(RCPT + longest + b"\n")
    assert len(second.get("x")) == MAX_LINE - 3 and first.state == "RCPT"
    with pytest.raises(ProtocolError):
        PolicyParser().feed(RCPT + b"x" + longest + b"\n")
