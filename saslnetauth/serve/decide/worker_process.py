"""The decision worker process of ``saslnetauth serve`` (the child side of
:mod:`saslnetauth.serve.decide.workers`): the ordinary decision engine, deciding the
logins its parent sends until the parent says stop or goes away. A login
whose deadline (``[serve] request_timeout`` from its arrival, on the shared
monotonic clock) has passed when the worker comes to it is not decided: the
server has answered it TEMPFAIL already, so no hash is spent on it."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from saslnetauth.serve.decide.frames import decision_message, frame, frames, login_from, send

if TYPE_CHECKING:
    from saslnetauth.config import Config

__all__ = ["FLUSH_AFTER", "worker_main"]

#: Seconds a worker may hold decided verdicts to send them together.
FLUSH_AFTER = 0.001


def worker_main(sock: socket.socket, cfg: Config) -> None:
    """Entry point of a worker process: decide until the parent says stop or goes away.

    The verdicts of one read go back in one write, except that one is sent as soon
    as the batch has spent :data:`FLUSH_AFTER` seconds (a slow hash does not hold
    back the verdicts decided before it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from saslnetauth.runtime import build_server_engine, setup_logging

    setup_logging(cfg)
    engine = build_server_engine(cfg)
    engine.preload()  # global networks are loaded before the first login, not during it
    send(sock, ("ready", os.getpid()))
    # work that waits until the verdicts are sent (rehash_on_login)
    after_reply: list[Callable[[], None]] = []

    def flush(out: list[bytes]) -> None:
        sock.sendall(b"".join(out))
        out.clear()
        for job in after_reply:
            job()
        after_reply.clear()

    try:
        for batch in frames(sock):
            out: list[bytes] = []
            started = time.monotonic()
            for msg in batch:
                if msg is None:
                    if out:
                        flush(out)
                    return
                rid, login = msg[0], login_from(msg)
                if time.monotonic() >= login.deadline:
                    # the server has answered it already (TEMPFAIL): never hash it
                    out.append(frame((rid,)))
                    continue
                d = engine.decide(login, after_reply=after_reply)
                out.append(frame(decision_message(rid, d)))
                if time.monotonic() - started >= FLUSH_AFTER:
                    flush(out)
                    started = time.monotonic()
            if out:
                flush(out)
    except OSError:
        pass
    finally:
        engine.close()
