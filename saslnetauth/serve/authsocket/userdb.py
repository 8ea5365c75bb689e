"""Userdb lookups for Dovecot 2.4's Lua userdb: the auth-master ``USER`` request.

The auth-client protocol that :mod:`saslnetauth.serve.authsocket.server` speaks has no
way to ask whether a user exists (Dovecot keeps ``USER`` lookups on its
privileged master socket), and ``doveadm user`` and LMTP delivery need
exactly that. So ``[serve] userdb_listen`` serves the master protocol's
lookup, and nothing else, on its own socket (mode 0600 by default: only the
Dovecot auth-worker, running as root, asks)::

    S: VERSION  1  2
    S: SPID  <pid>
    C: VERSION  1  <minor>
    C: USER  <id>  <name>  [service=... and other fields, ignored]
    S: USER  <id>  <canonical name>          an enabled user saslnetauth knows
    S: NOTFOUND  <id>                        unknown or disabled
    S: FAIL  <id>  reason=<text>             database unavailable (temporary)

Only existence is answered: the Lua script adds uid, gid and home from its
settings (see dovecot-examples/dovecot-2.4/). A PAM user unknown to
saslnetauth exists when ``[pam] any_user`` admits it and the system knows
the name. Lookups run in a thread, never on the event loop.

Who may ask is checked like on the auth socket (:mod:`saslnetauth.serve.authsocket.access`,
``SO_PEERCRED``): root, the server's own user, ``[serve] allowed_users`` and
``allowed_groups``; everyone else is closed before a byte is read (the socket's
owner follows ``socket_owner``, and a name's existence is itself worth hiding).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from saslnetauth.dovecot.protocol import unescape
from saslnetauth.errors import BackendError, InvalidUsernameError
from saslnetauth.logfmt import kv
from saslnetauth.policy.model import UserRecord, normalize_username
from saslnetauth.serve.authsocket.acceptor import Acceptor
from saslnetauth.serve.authsocket.access import PeerPolicy, RefusalLog, identify
from saslnetauth.serve.authsocket.fdlimits import USERDB_MAX_CONNECTIONS as MAX_CONNECTIONS
from saslnetauth.serve.authsocket.listeners import describe

__all__ = ["UserdbServer", "answer"]

log = logging.getLogger("saslnetauth.serve.userdb")

MAX_LINE = 16384
#: Seconds a connection may stay silent before it is closed.
IDLE_TIMEOUT = 300.0
#: Seconds one database lookup may take before the request fails temporarily.
LOOKUP_TIMEOUT = 5.0


def answer(
    line: str, lookup: Callable[[str], UserRecord | None], *, pam_any_user: bool = False
) -> str | None:
    """The reply line (without newline) to one client line, or None to say nothing.

    Pure apart from ``lookup``, which may raise :class:`BackendError`.
    """
    parts = line.split("\t")
    if parts[0] != "USER":
        return None
    if len(parts) < 3 or not parts[1].isdigit() or len(parts[1]) > 10:
        raise ValueError("malformed USER request")
    req_id, raw = parts[1], unescape(parts[2])
    try:
        name = normalize_username(raw)
    except InvalidUsernameError:
        return f"NOTFOUND\t{req_id}"
    try:
        user = lookup(name)
    except BackendError:
        return f"FAIL\t{req_id}\treason=user lookup failed temporarily"
    if user is None and pam_any_user:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return f"USER\t{req_id}\t{name}"
    if user is None or not user.enabled:
        return f"NOTFOUND\t{req_id}"
    return f"USER\t{req_id}\t{user.name}"


class UserdbServer:
    """Serves :func:`answer` on listening sockets."""

    def __init__(
        self,
        lookup: Callable[[str], UserRecord | None],
        policy: PeerPolicy,
        *,
        pam_any_user: bool = False,
    ) -> None:
        self.lookup = lookup
        #: who may connect (the auth socket's rules, resolved at start)
        self.policy = policy
        self._refusals = RefusalLog()
        self.pam_any_user = pam_any_user
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="userdb")
        self._acceptors: list[Acceptor] = []
        self._open = 0

    async def start(self, sock: socket.socket) -> None:
        acceptor = Acceptor(sock, self._on_connect, name="userdb", limit=MAX_LINE)
        acceptor.start()
        self._acceptors.append(acceptor)
        log.info("%s", kv("userdb listening", on=describe(sock)))

    async def close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = identify(writer.get_extra_info("socket"), writer.get_extra_info("peername"))
        if not self.policy.allows(peer):
            if self._refusals.first("peer_not_allowed", peer):
                log.warning("%s", kv("userdb connection refused", **peer.describe()))
            writer.close()
            return
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            writer.write(f"VERSION\t1\t2\nSPID\t{os.getpid()}\n".encode())
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                reply = await self._reply(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
                if reply is None:
                    return
                if reply:
                    writer.write(reply.encode() + b"\n")
                    await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._open -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(self, line: str) -> str | None:
        """The reply to send ("" for none), or None to hang up on a broken client."""
        loop = asyncio.get_running_loop()
        try:
            reply = await asyncio.wait_for(
                loop.run_in_executor(
                    self._executor,
                    lambda: answer(line, self.lookup, pam_any_user=self.pam_any_user),
                ),
                LOOKUP_TIMEOUT,
            )
        except ValueError as exc:
            log.warning("%s", kv("userdb client error, disconnecting", error=str(exc)))
            return None
        except Exception as exc:  # timeout or an unexpected error: temporary, never found
            log.error("%s", kv("userdb lookup failed", error=repr(exc)))
            parts = line.split("\t")
            req_id = parts[1] if len(parts) > 1 and parts[1].isdigit() else "0"
            return f"FAIL\t{req_id}\treason=user lookup failed temporarily"
        return reply or ""
