"""Frames between ``saslnetauth serve`` and its decision worker processes: a
4-byte length and a pickle of a tuple. Both ends are this program; a frame
over :data:`MAX_FRAME` ends the link. One frame cutter serves both ends.

A login goes out as its request id and the fields of its
:class:`~saslnetauth.policy.login.Login` (:func:`login_message`), the verdict
comes back as the id and the fields of its :class:`Decision`
(:func:`decision_message`); each side rebuilds the value from them."""

from __future__ import annotations

import dataclasses
import pickle
import socket
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = [
    "MAX_FRAME",
    "cut_frames",
    "decision_from",
    "decision_message",
    "frame",
    "frames",
    "login_from",
    "login_message",
    "send",
]

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20
READ_SIZE = 65536


#: Decision's fields after verdict and reason, in their order: every field crosses,
#: whatever fields are added later (a list written by hand once dropped one, which
#: shifted the next into its place).
_DECISION_REST = tuple(f.name for f in dataclasses.fields(Decision))[2:]


#: Login's fields in their order: every one crosses, whatever fields are added later.
_LOGIN_FIELDS = tuple(f.name for f in dataclasses.fields(Login))


def login_message(rid: int, login: Login) -> tuple[Any, ...]:
    """A login for a worker: (request id, the Login's fields in order)."""
    return (rid, *(getattr(login, n) for n in _LOGIN_FIELDS))


def login_from(msg: Sequence[Any]) -> Login:
    """The Login of :func:`login_message` (request id left out)."""
    return Login(*msg[1:])


def decision_message(rid: int, d: Decision) -> tuple[Any, ...]:
    """A worker's answer: (request id, verdict, reason, the other fields in order)."""
    return (rid, d.verdict.value, d.reason.value, *(getattr(d, n) for n in _DECISION_REST))


def decision_from(msg: Sequence[Any]) -> Decision:
    """The Decision of :func:`decision_message` (request id left out)."""
    return Decision(Verdict(msg[1]), Reason(msg[2]), *msg[3:])


def frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def send(sock: socket.socket, obj: object) -> None:
    sock.sendall(frame(obj))


def cut_frames(buf: bytearray) -> list[Any]:
    """The whole frames at the start of ``buf``, unpickled and removed from it (a
    partial frame stays for the next read); EOFError for a frame over MAX_FRAME.
    Both ends use it: the parent's link and the worker's loop."""
    out: list[Any] = []
    pos = 0
    end = len(buf)
    while end - pos >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buf, pos)
        if size > MAX_FRAME:
            raise EOFError(f"frame of {size} bytes")
        start = pos + _HEADER.size
        if end - start < size:
            break
        pos = start + size
        out.append(pickle.loads(buf[start:pos]))  # noqa: S301 - both ends are this program
    del buf[:pos]
    return out


def frames(sock: socket.socket) -> Iterator[list[Any]]:
    """The parent's messages, a list per read (as many whole frames as arrived)."""
    buf = bytearray()
    while True:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            return
        buf += chunk
        try:
            batch = cut_frames(buf)
        except EOFError:
            return
        if batch:
            yield batch
