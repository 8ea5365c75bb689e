"""Dovecot authentication protocol, server side, as a codec without I/O.

Bytes go in (:meth:`ServerCodec.receive_data`), events come out; replies
are formatted to bytes by the ``format_*`` functions. The network loop
around it lives in :mod:`saslnetauth.serve.authsocket.server`. Like h11, nothing here
touches a socket, so it can be tested and fuzzed directly.

Wire facts (Dovecot 2.3 ``src/auth/auth-client-connection.c`` and
``auth-request-handler.c``; Postfix ``src/xsasl/xsasl_dovecot_server.c``;
Exim ``src/auths/dovecot.c``):

* lines end with LF; fields are separated by TAB; values use Dovecot's
  tab-escaping with ``\\x01`` as escape byte (``\\x01`` + ``0`` NUL, ``1``
  ``\\x01``, ``t`` TAB, ``r`` CR, ``n``/``l`` LF, any other byte itself);
* the server speaks first (VERSION, MECH..., SPID, CUID, COOKIE, DONE);
  MECH lines come before SPID, or Exim believes it reached auth-master;
* the client answers ``VERSION 1 <minor>`` (only major 1 is compatible)
  and ``CPID <pid>``, then sends ``AUTH`` and ``CONT`` requests;
* ``AUTH <id> <mech> [key=value | flag]... [resp=<base64>]``: unknown
  parameters are ignored, ``resp=`` is the last one; an empty ``resp=``
  means "no initial response" (Exim), ``resp==`` an empty one (Postfix);
* replies are ``OK <id> user=..``, ``FAIL <id> user=.. [code=temp_fail
  temp] [reason=..]`` and ``CONT <id> <base64>``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from saslnetauth.dovecot.escaping import escape, unescape
from saslnetauth.errors import ProtocolError

__all__ = [
    "MAX_LINE",
    "AuthRequest",
    "ClientCpid",
    "ClientVersion",
    "ContRequest",
    "Event",
    "ServerCodec",
    "UnknownCommand",
    "escape",
    "format_cont",
    "format_fail",
    "format_handshake",
    "format_ok",
    "unescape",
]

#: Longest line accepted from a client, LF included (Dovecot's own limit).
MAX_LINE = 16 * 1024
#: Request ids are unsigned 32-bit numbers.
MAX_ID = 2**32 - 1
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 2

# --- events (client -> server) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientVersion:
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class ClientCpid:
    pid: str


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """``AUTH``: a new authentication request.

    ``resp`` is the base64 text of the initial response, ``None`` when the
    client gave none (no ``resp=`` or an empty one). ``params`` holds the
    ``key=value`` parameters (unescaped), ``flags`` the bare words.
    """

    id: int
    mech: str
    params: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    resp: str | None = None

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def rip(self) -> str | None:
        value = self.params.get("rip")
        return value if value and value != "NULL" else None

    @property
    def real_rip(self) -> str | None:
        """The connecting address when Dovecot forwarded another as ``rip`` (its
        ``login_trusted_networks``; docs/webmail.md), else None."""
        value = self.params.get("real_rip")
        return value if value and value != "NULL" else None

    @property
    def secured(self) -> bool:
        return "secured" in self.flags or "secured" in self.params

    def __repr__(self) -> str:  # never show credentials
        return f"AuthRequest(id={self.id}, mech={self.mech!r}, service={self.service!r})"


@dataclass(frozen=True, slots=True)
class ContRequest:
    """``CONT``: the client's answer to a challenge (base64 text)."""

    id: int
    data: str

    def __repr__(self) -> str:  # never show credentials
        return f"ContRequest(id={self.id})"


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A command this server does not know; clients and servers ignore these."""

    name: str


Event = ClientVersion | ClientCpid | AuthRequest | ContRequest | UnknownCommand


# --- the codec ----------------------------------------------------------------


class ServerCodec:
    """Turns the client's byte stream into events.

    Raises :class:`ProtocolError` for anything after which the connection
    must be closed: an over-long line, a first line that is not a
    compatible ``VERSION``, a malformed ``AUTH``/``CONT``.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self.version: ClientVersion | None = None

    def receive_data(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start + 1 > self.max_line:
                raise ProtocolError(f"line longer than {self.max_line} bytes")
            line = bytes(self._buf[start:nl])
            start = nl + 1
            event = self._parse(line)
            if event is not None:
                events.append(event)
        del self._buf[:start]
        if len(self._buf) > self.max_line:
            raise ProtocolError(f"line longer than {self.max_line} bytes")
        return events

    def _parse(self, raw: bytes) -> Event | None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            return None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "surrogateescape")
        fields = line.split("\t")
        cmd = fields[0]
        if self.version is None:
            if cmd != "VERSION":
                raise ProtocolError("client did not start with VERSION")
            self.version = parse_version(fields)
            return self.version
        if cmd == "AUTH":
            return parse_auth(fields)
        if cmd == "CONT":
            return parse_cont(fields)
        if cmd == "CPID":
            if len(fields) < 2 or not _digits(fields[1]):
                raise ProtocolError("malformed CPID")
            return ClientCpid(fields[1])
        if cmd == "VERSION":
            raise ProtocolError("VERSION sent twice")
        return UnknownCommand(cmd[:32])


def parse_version(fields: Sequence[str]) -> ClientVersion:
    if len(fields) < 3 or not _digits(fields[1]) or not _digits(fields[2]):
        raise ProtocolError("malformed VERSION")
    version = ClientVersion(int(fields[1][:9]), int(fields[2][:9]))
    if version.major != PROTOCOL_MAJOR:
        raise ProtocolError(
            f"client protocol version {version.major} is not compatible with {PROTOCOL_MAJOR}"
        )
    return version


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() alone admits "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def _parse_id(text: str) -> int:
    if not _digits(text) or len(text) > 10:
        raise ProtocolError("malformed request id")
    value = int(text)
    if value > MAX_ID:
        raise ProtocolError("request id out of range")
    return value


def parse_auth(fields: Sequence[str]) -> AuthRequest:
    if len(fields) < 3 or not fields[2]:
        raise ProtocolError("malformed AUTH")
    req_id = _parse_id(fields[1])
    mech = fields[2].upper()
    params: dict[str, str] = {}
    flags: set[str] = set()
    resp: str | None = None
    for arg in fields[3:]:
        key, eq, value = arg.partition("=")
        if key == "resp" and eq:
            resp = value or None  # empty: no initial response; "=": an empty one
            break  # resp= is always the last parameter
        if eq:
            params[key] = unescape(value)
        elif arg:
            flags.add(arg)
    return AuthRequest(req_id, mech, params, frozenset(flags), resp)


def parse_cont(fields: Sequence[str]) -> ContRequest:
    if len(fields) < 2:
        raise ProtocolError("malformed CONT")
    return ContRequest(_parse_id(fields[1]), fields[2] if len(fields) > 2 else "")


# --- replies (server -> client) -------------------------------------------------


def format_handshake(
    mechs: Iterable[tuple[str, Sequence[str]]],
    *,
    spid: int | None = None,
    cuid: int,
    cookie: str | None = None,
) -> bytes:
    """The greeting sent as soon as a client connects (MECH before SPID)."""
    lines = [f"VERSION\t{PROTOCOL_MAJOR}\t{PROTOCOL_MINOR}"]
    lines += ["\t".join(["MECH", name, *flags]) for name, flags in mechs]
    lines += [
        f"SPID\t{os.getpid() if spid is None else spid}",
        f"CUID\t{cuid}",
        f"COOKIE\t{cookie or secrets.token_hex(16)}",
        "DONE",
    ]
    return ("\n".join(lines) + "\n").encode()


def _line(*fields: str) -> bytes:
    return ("\t".join(fields) + "\n").encode("utf-8", "surrogateescape")


def format_ok(req_id: int, user: str) -> bytes:
    return _line("OK", str(req_id), f"user={escape(user)}")


def format_fail(req_id: int, user: str | None, *, temp: bool = False, reason: str = "") -> bytes:
    """A failure; temporary ones carry ``code=temp_fail`` and the old ``temp`` flag."""
    fields = ["FAIL", str(req_id)]
    if user:
        fields.append(f"user={escape(user)}")
    if temp:
        fields += ["code=temp_fail", "temp"]
    if reason:
        fields.append(f"reason={escape(reason)}")
    return _line(*fields)


def format_cont(req_id: int, challenge_b64: str) -> bytes:
    return _line("CONT", str(req_id), challenge_b64)
