"""SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) as pure state machines.

A mechanism is fed the decoded initial response (or ``None``) and then
each decoded client answer; every step returns a :class:`Challenge` to
send, the final :class:`Credentials`, or a :class:`SaslFailure`. Nothing
here verifies a password: that is the engine's job.

Rules enforced:

* PLAIN is ``authzid NUL authcid NUL passwd``; an empty authcid, extra
  NULs, or an authzid that is non-empty and differs from the authcid (a
  request to act as another user, not supported) fail;
* LOGIN asks ``Username:`` then ``Password:``; the username may come as
  the initial response;
* user names must be UTF-8 without NUL; passwords are kept as bytes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "MECHANISMS",
    "Challenge",
    "Credentials",
    "LoginMechanism",
    "Mechanism",
    "PlainMechanism",
    "SaslFailure",
    "Step",
    "decode_base64",
    "encode_base64",
    "new_mechanism",
]

#: Longest decoded SASL message accepted (bytes).
MAX_SASL_MESSAGE = 8192


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: bytes

    def __repr__(self) -> str:  # never show the password
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class SaslFailure:
    """The exchange cannot go on; ``reason`` is for the log, never the client."""

    reason: str
    username: str | None = None


Step = Challenge | Credentials | SaslFailure


class Mechanism(Protocol):
    name: str

    def start(self, initial: bytes | None) -> Step: ...

    def step(self, data: bytes) -> Step: ...


def decode_base64(text: str) -> bytes | None:
    """Strict base64 decoding; ``None`` when ``text`` is not valid base64."""
    if len(text) > MAX_SASL_MESSAGE * 4 // 3 + 4:
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _username(raw: bytes) -> str | None:
    if not raw or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class PlainMechanism:
    """RFC 4616 PLAIN: one message, ``authzid NUL authcid NUL passwd``."""

    name = "PLAIN"

    def __init__(self) -> None:
        self._done = False

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"")
        return self.step(initial)

    def step(self, data: bytes) -> Step:
        if self._done:
            return SaslFailure("unexpected data after PLAIN message")
        self._done = True
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return SaslFailure("malformed PLAIN message")
        authzid_raw, authcid_raw, password = parts
        authcid = _username(authcid_raw)
        if authcid is None:
            return SaslFailure("invalid PLAIN authcid")
        if authzid_raw and authzid_raw != authcid_raw:
            return SaslFailure("PLAIN authzid differs from authcid (not supported)", authcid)
        return Credentials(authcid, password)


class LoginMechanism:
    """LOGIN: ``Username:`` then ``Password:`` challenges."""

    name = "LOGIN"
    USERNAME = b"Username:"
    PASSWORD = b"Password:"

    def __init__(self) -> None:
        self._user: str | None = None
        self._done = False

    def start(self, initial: bytes | None) -> Step:
        if initial is None or initial == b"":
            return Challenge(self.USERNAME)
        return self.step(initial)

    def step(self, data: bytes) -> Step:
        if self._done:
            return SaslFailure("unexpected data after LOGIN password")
        if self._user is None:
            user = _username(data)
            if user is None:
                self._done = True
                return SaslFailure("invalid LOGIN username")
            self._user = user
            return Challenge(self.PASSWORD)
        self._done = True
        return Credentials(self._user, data)


#: Mechanisms offered, with the flags announced in the handshake.
MECHANISMS: dict[str, tuple[str, ...]] = {"PLAIN": ("plaintext",), "LOGIN": ("plaintext",)}


def new_mechanism(name: str) -> Mechanism | None:
    """A fresh state machine for ``name`` (upper case), or None if unsupported."""
    if name == "PLAIN":
        return PlainMechanism()
    if name == "LOGIN":
        return LoginMechanism()
    return None
