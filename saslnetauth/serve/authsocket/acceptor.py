"""Accepting connections on a listening socket, without asyncio's EMFILE storm.

asyncio's own accept loop (``start_server``) answers ``EMFILE`` (no file
descriptor left) by logging a traceback, and then goes on calling
``accept()`` up to the backlog (1,024) times in the same tick, each failure
another traceback and another retry timer: tens of thousands of tracebacks
a second while the descriptors are used up (issue 21, item 2). Here, when
``accept()`` fails for want of a resource (``EMFILE``, ``ENFILE``,
``ENOBUFS``, ``ENOMEM``) the listener stops accepting for
:data:`RETRY_SECONDS` (the connections wait in the kernel's backlog, using
no descriptor of ours) and logs at most one line per
:data:`LOG_SECONDS`, with the number of pauses, never a traceback. Each listener pauses on its
own: a full policy port never stops the auth socket.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from saslnetauth.logfmt import kv

__all__ = ["LOG_SECONDS", "RESOURCE_ERRNOS", "RETRY_SECONDS", "Acceptor"]

log = logging.getLogger("saslnetauth.serve.acceptor")

#: Seconds a listener stops accepting after accept() ran out of a resource.
RETRY_SECONDS = 0.5
#: Seconds between two log lines about pauses of one listener.
LOG_SECONDS = 10.0
#: accept() failures that mean "try again later", not "this client is broken".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Connections accepted at most per readiness event (others wait for the next one).
BATCH = 64

OnConnect = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Acceptor:
    """Accepts on ``sock`` and runs ``on_connect(reader, writer)`` for each connection."""

    def __init__(
        self, sock: socket.socket, on_connect: OnConnect, *, name: str, limit: int = 2**16
    ) -> None:
        self.sock = sock
        self.on_connect = on_connect
        self.name = name
        self.limit = limit
        #: Times accept() ran out of a resource (all of them, logged or not).
        self.paused = 0
        self._unlogged = 0
        self._logged_at = float("-inf")
        self._connecting: set[asyncio.Task[object]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._loop.add_reader(self.sock.fileno(), self._ready)

    def close(self) -> None:
        """Stop accepting and close our listening socket (new clients are refused; a
        UNIX socket's file stays, and systemd's copy of an inherited socket too)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _ready(self) -> None:
        for _ in range(BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._pause(exc)
                else:
                    log.warning("%s", kv(f"{self.name} accept failed", error=exc.strerror))
                return
            self._serve(conn)

    def _pause(self, exc: OSError) -> None:
        assert self._loop is not None
        self.paused += 1
        self._unlogged += 1
        self._loop.remove_reader(self.sock.fileno())
        self._retry = self._loop.call_later(RETRY_SECONDS, self._resume)
        now = self._loop.time()
        if now - self._logged_at >= LOG_SECONDS:
            self._logged_at = now
            log.error(
                "%s",
                kv(
                    f"{self.name} accept paused",
                    error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                    seconds=RETRY_SECONDS,
                    pauses=self._unlogged,
                    note="out of file descriptors: see docs/serve.md, file descriptor limits",
                ),
            )
            self._unlogged = 0

    def _resume(self) -> None:
        self._retry = None
        if not self._closed and self._loop is not None:
            self._loop.add_reader(self.sock.fileno(), self._ready)

    def _serve(self, conn: socket.socket) -> None:
        assert self._loop is not None
        conn.setblocking(False)
        loop = self._loop
        reader = asyncio.StreamReader(limit=self.limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self.on_connect, loop=loop)
        task: asyncio.Task[object] = loop.create_task(
            loop.connect_accepted_socket(lambda: protocol, sock=conn)
        )
        self._connecting.add(task)

        def done(task: asyncio.Task[object]) -> None:
            self._connecting.discard(task)
            if task.cancelled() or task.exception() is not None:
                conn.close()

        task.add_done_callback(done)
