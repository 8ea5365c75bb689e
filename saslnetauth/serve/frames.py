"""Frames between ``saslnetauth serve`` and its decision worker processes: a
4-byte length and a pickle of a tuple. Both ends are this program; a frame
over :data:`MAX_FRAME` ends the link. One frame cutter serves both ends."""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_FRAME", "cut_frames", "frame", "frames", "send"]

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20
READ_SIZE = 65536


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
