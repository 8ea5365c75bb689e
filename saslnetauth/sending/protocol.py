"""Postfix SMTP access policy delegation, as a codec without I/O.

Postfix's ``SMTPD_POLICY_README`` ("Protocol description"): the client sends
``name=value`` lines ended by LF, an empty line ends one request; the server
answers ``action=...`` and an empty line. One connection carries many
requests, one after the other. Attribute names are lower-case letters,
digits and ``_``; a value is everything after the first ``=``.

Bounded input, like :mod:`saslnetauth.dovecot.protocol`: a line longer than
:data:`MAX_LINE`, more than :data:`MAX_ATTRIBUTES` attributes, a line without
``=``, a bad name or a name given twice is a :class:`ProtocolError`; the
server then closes the connection, and Postfix answers its client
``451 4.3.5`` (the mail stays with the client: fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from saslnetauth.errors import ProtocolError

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_LINE",
    "PolicyParser",
    "PolicyRequest",
    "format_reply",
]

#: Longest line accepted, LF included (Postfix's own attributes stay far below:
#: a certificate subject is the longest, cut by Postfix at 1 KiB or so).
MAX_LINE = 4096
#: Most attributes in one request (Postfix 3.7 sends about 35).
MAX_ATTRIBUTES = 128
#: Longest action text of a reply.
MAX_ACTION = 512

_NAME = re.compile(r"[a-z0-9_]{1,64}")
#: Valid attribute names seen (Postfix sends the same few dozen), at most MAX_NAMES.
_NAMES: set[str] = set()
MAX_NAMES = 1024


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request: its attributes by name (values as sent, decoded as UTF-8)."""

    attrs: Mapping[str, str]

    def get(self, name: str) -> str:
        """The value of ``name``, "" when absent."""
        return self.attrs.get(name, "")

    @property
    def state(self) -> str:
        """``protocol_state``: ``RCPT``, ``END-OF-MESSAGE``, ``DATA``, ..."""
        return self.get("protocol_state").upper()

    def count(self, name: str) -> int:
        """A numeric attribute (``recipient_count``, ``size``); 0 when absent or bad."""
        value = self.get(name)
        if not value.isascii() or not value.isdigit() or len(value) > 18:
            return 0
        return int(value)


class PolicyParser:
    """Bytes in, :class:`PolicyRequest` out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._attrs: dict[str, str] = {}

    def feed(self, data: bytes) -> list[PolicyRequest]:
        """The requests completed by ``data`` (raises :class:`ProtocolError`)."""
        buf = self._buf
        buf += data
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) >= MAX_LINE:
                raise ProtocolError(f"policy line longer than {MAX_LINE} bytes")
            return []
        complete = bytes(buf[: last + 1])
        del buf[: last + 1]
        if len(buf) >= MAX_LINE or (
            len(complete) > MAX_LINE and max(map(len, complete.split(b"\n"))) >= MAX_LINE
        ):
            raise ProtocolError(f"policy line longer than {MAX_LINE} bytes")
        # the complete lines at once, decoded together: UTF-8 keeps LF and '=' apart
        # from every multi-byte sequence, so each value decodes as it would alone
        lines = complete.decode("utf-8", "replace").split("\n")
        lines.pop()  # the empty piece after the last LF
        done: list[PolicyRequest] = []
        attrs = self._attrs
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                if not attrs:
                    raise ProtocolError("empty policy request")
                done.append(PolicyRequest(attrs))
                attrs = self._attrs = {}
                continue
            name, eq, value = line.partition("=")
            if not eq:
                raise ProtocolError("policy line without '='")
            if name not in _NAMES:
                if not _NAME.fullmatch(name):
                    raise ProtocolError("bad policy attribute name")
                if len(_NAMES) < MAX_NAMES:
                    _NAMES.add(name)
            if name in attrs:
                raise ProtocolError(f"policy attribute {name} given twice")
            if len(attrs) >= MAX_ATTRIBUTES:
                raise ProtocolError(f"more than {MAX_ATTRIBUTES} policy attributes")
            attrs[name] = value
        return done

    @property
    def pending(self) -> bool:
        """Whether a request is half read (bytes or attributes without their end)."""
        return bool(self._buf) or bool(self._attrs)


def format_reply(action: str) -> bytes:
    """``action=<action>`` and the empty line; the text must be one printable line."""
    if not action or len(action) > MAX_ACTION or not action.isprintable():
        raise ValueError("a policy action is one printable line of at most 512 characters")
    return f"action={action}\n\n".encode()
