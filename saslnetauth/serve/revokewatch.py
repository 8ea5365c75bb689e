"""The server's side of ending sessions on revoke: noticing expiries.

A network grant or an app password that expires is revoked by time, with
nobody at a command line to run the ``[revoke] command``. So ``saslnetauth
serve`` (its main process) looks every ``[revoke] check_seconds`` at the rows
that have an expiry (one query, :func:`saslnetauth.store.expiries.expiring_rows`)
and, for each whose expiry passed since its previous look, runs the command
once (:mod:`saslnetauth.events.revoke`: ``network_expired`` with the grant's network,
``app_password_expired`` with the label; a global grant only when the command
names ``{network}``). The same command for several rows in one look runs once.

The commands run on a :class:`saslnetauth.events.commands.CommandRunner` (at most
``max_running`` at once, ``max_queued`` waiting, killed after ``timeout``, one
log line each). Expiries that passed while the server was not running are not
looked back at (sessions do not outlive a Dovecot restart either; after a
server restart, ``saslnetauth user kick`` by hand). A database that does not
answer is logged and asked again: what expired meanwhile is kicked late, not
forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from saslnetauth.events.commands import CommandRunner
from saslnetauth.events.revoke import RevokeEvent, kick_network, revoke_argv, revoke_environment
from saslnetauth.logfmt import kv
from saslnetauth.settings import RevokeConfig
from saslnetauth.store.connect import Database
from saslnetauth.store.expiries import Expiring, expiring_rows

__all__ = ["ExpiryWatcher", "expiry_event"]

log = logging.getLogger("saslnetauth.revoke")


def expiry_event(row: Expiring) -> RevokeEvent:
    """The revocation an expired row means."""
    if row.kind == "app_password":
        return RevokeEvent("app_password_expired", row.user, credential=row.what)
    return RevokeEvent("network_expired", row.user, network=kick_network(row.what))


class ExpiryWatcher:
    """Looks for expiries every ``config.check_seconds`` (see the module's text).
    ``config`` may be replaced (SIGHUP): :meth:`retune`."""

    def __init__(
        self, db: Database, config: RevokeConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.runner = CommandRunner(
            "revoke",
            log,
            timeout=config.timeout,
            max_running=config.max_running,
            max_queued=config.max_queued,
            log_done=True,
            ok_status=config.ok_status,
        )
        self._since = clock()
        self._task: asyncio.Task[None] | None = None

    def retune(self, config: RevokeConfig) -> None:
        self.config = config
        self.runner.timeout = config.timeout
        self.runner.max_running = config.max_running
        self.runner.max_queued = config.max_queued
        self.runner.ok_status = tuple(config.ok_status)

    def start(self) -> None:
        self._since = self.clock()
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_seconds)
            try:
                await self.check()
            except Exception as exc:  # a look that failed is retried, never fatal
                log.warning("%s", kv("revoke watcher: look for expiries failed", error=str(exc)))

    async def check(self) -> int:
        """One look: run the command for what expired since the last one; the number
        of commands submitted."""
        if not self.config.command:
            self._since = self.clock()
            return 0
        now = self.clock()
        rows = await asyncio.to_thread(expiring_rows, self.db)
        since, self._since = self._since, now
        seen: set[tuple[str, ...]] = set()
        submitted = 0
        for row in sorted(rows, key=lambda r: r.ends):
            if not since < row.ends <= now:
                continue
            event = expiry_event(row)
            argv = revoke_argv(self.config.command, event)
            if argv is None or tuple(argv) in seen:
                continue
            seen.add(tuple(argv))
            self.runner.submit(argv, revoke_environment(event), fields=event.fields())
            submitted += 1
        return submitted

    async def close(self, timeout: float = 5.0) -> None:
        """Stop looking; let the commands started finish (at most ``timeout``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runner.drain(timeout)
