"""The running ``saslnetauth serve``: the decider, the auth-socket responder and the
services beside it (verdict record, purge of expired grants, revoke watch, /metrics,
userdb lookups, Dovecot's auth policy endpoint, the shared brake of ``[state] url``),
and their shutdown in order.

:func:`run` is the process's event loop body (:func:`saslnetauth.serve.app.start`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from saslnetauth.config import Config
from saslnetauth.settings import ServeConfig

if TYPE_CHECKING:
    import socket

    from saslnetauth.serve.authsocket.server import AuthServer
    from saslnetauth.serve.http.policyproxy import PolicyProxies
    from saslnetauth.store import SqlStore

#: What to call when the server ends; a coroutine it returns is awaited.
Closer = Callable[[], object]
Reload = Callable[[], tuple[Config, ServeConfig]]


@dataclass(frozen=True)
class Listening:
    """The sockets the process serves on, bound (or inherited) before it starts."""

    auth: list[socket.socket]
    metrics: socket.socket | None = None
    userdb: socket.socket | None = None
    policy: socket.socket | None = None
    sending: socket.socket | None = None


async def run(cfg: Config, listening: Listening, reload: Reload, mail_connections: int) -> None:
    """Serve on ``listening`` until SIGTERM/SIGINT, then close everything in order."""
    from saslnetauth.runtime import measure_verification
    from saslnetauth.serve.authsocket.server import AuthServer
    from saslnetauth.serve.decide.classifier import Classifier
    from saslnetauth.serve.decide.inline import InlineCheap
    from saslnetauth.serve.decide.scheduler import Scheduler
    from saslnetauth.serve.decide.workers import make_decider

    decider = InlineCheap(Scheduler(make_decider(cfg), cfg, Classifier(cfg)))
    # the failure deadline covers the slowest scheme (saslnetauth.policy.deadline)
    measured, _ = await asyncio.gather(
        asyncio.to_thread(measure_verification, cfg), decider.start()
    )
    closers: list[Closer] = []  # run in this order when serve() ends
    record = _responder_record(cfg, closers)
    reload_all, start_watch = _housekeeping(cfg, reload, closers)
    server = AuthServer(
        decider,
        cfg.serve,
        reload=reload_all,
        measured=measured,
        record=record,
        geoip=cfg.geoip,
        mail_connections=mail_connections,
    )
    _shared_brake(cfg, server, closers)
    await server.start(listening.auth)
    start_watch()
    if listening.metrics is not None:
        await server.start_metrics(listening.metrics)
    await _start_lookups(cfg, server, listening, closers)
    server.install_signal_handlers()
    try:
        await server.serve()
    finally:
        await _close_all(closers)


async def _close_all(closers: list[Closer]) -> None:
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result


def _shared_brake(cfg: Config, server: AuthServer, closers: list[Closer]) -> None:
    """With ``[state] url``: the brute-force brake counts in the shared store too
    (saslnetauth.serve.decide.sharedbrake), closed after the responder."""
    if not cfg.state.url:
        return
    from saslnetauth.serve.decide.sharedbrake import open_shared_brake

    shared = open_shared_brake(
        cfg.state.url, cfg.state.prefix, cfg.state.timeout, server.ip_penalty.expire
    )
    server.brakes.shared = shared
    closers.append(shared.close)


def _responder_record(cfg: Config, closers: list[Closer]) -> Callable[..., None] | None:
    """The verdict record (``saslnetauth report``) of the failures the responder decides
    itself, or None when ``[report] record`` is off."""
    if not cfg.report.record:
        return None
    from saslnetauth.runtime import open_store
    from saslnetauth.store.events import EventRecorder

    record_store = open_store(cfg, check_schema=False)
    recorder = EventRecorder(
        record_store, keep_days=cfg.report.keep_days, queue_size=cfg.report.queue_size
    )
    closers += [recorder.close, record_store.close]
    return recorder.record


def _housekeeping(
    cfg: Config, reload: Reload, closers: list[Closer]
) -> tuple[Reload, Callable[[], None]]:
    """The purge of expired grants and the revoke watch on one store: the reload that
    retunes them too, and the call that starts the watch."""
    from saslnetauth.runtime import open_store
    from saslnetauth.serve.revokewatch import ExpiryWatcher
    from saslnetauth.store.purge import ExpiredPurger

    purge_store = open_store(cfg, check_schema=False)
    purger = ExpiredPurger(purge_store, cfg.serve.expired_keep_days, alerts=cfg.alerts)
    closers += [purger.close, purge_store.close]
    # expiries end sessions within seconds (docs/revoke.md)
    watcher = ExpiryWatcher(purge_store, cfg.revoke)
    closers.insert(0, watcher.close)

    def reload_all() -> tuple[Config, ServeConfig]:
        new, settings = reload()
        purger.keep_days = settings.expired_keep_days
        watcher.retune(new.revoke)
        purger.alerts = new.alerts
        return new, settings

    return reload_all, watcher.start


async def _start_lookups(
    cfg: Config, server: AuthServer, listening: Listening, closers: list[Closer]
) -> None:
    """Dovecot's userdb lookups and auth policy requests, on one store, when their
    sockets are configured (they close first)."""
    if listening.userdb is None and listening.policy is None and listening.sending is None:
        return
    from saslnetauth.runtime import open_store

    store = open_store(cfg, check_schema=False)
    closers.append(store.close)
    if listening.userdb is not None:
        from saslnetauth.serve.authsocket.access import PeerPolicy
        from saslnetauth.serve.authsocket.userdb import UserdbServer

        userdb = UserdbServer(
            store.get_user,
            PeerPolicy.from_settings(cfg.serve),  # the auth socket's peer checks
            pam_any_user=cfg.pam.enabled and cfg.pam.any_user,
        )
        await userdb.start(listening.userdb)
        closers.insert(0, userdb.close)
    if listening.policy is not None:
        closers[:0] = await _start_policy(cfg, server, store, listening.policy)
    if listening.sending is not None:
        from saslnetauth.sending.server import start_sending_listener

        closers[:0] = await start_sending_listener(cfg, server, store, listening.sending)


async def _start_policy(
    cfg: Config, server: AuthServer, store: SqlStore, sock: socket.socket
) -> list[Closer]:
    """Dovecot's auth policy requests on ``sock`` (docs/dovecot.md, "Policy endpoint")."""
    from saslnetauth.policy.mainpassword import parse_main_services
    from saslnetauth.serve.http.policy import PolicyService
    from saslnetauth.serve.http.server import HttpServer

    closers: list[Closer] = []
    record = None
    if cfg.report.record:
        from saslnetauth.store.events import EventRecorder

        recorder = EventRecorder(
            store, keep_days=cfg.report.keep_days, queue_size=cfg.report.queue_size
        )
        record = recorder.record
        closers.append(recorder.close)
    p = cfg.policy
    main_default = parse_main_services(cfg.passwords.main_password_services)
    service = PolicyService(
        server, p, store.get_user, store.global_rules, record=record, main_default=main_default
    )
    service.proxies = _policy_proxies(cfg, store)  # proxies hook
    http = HttpServer(
        service.handle,
        name="policy",
        allow_from=p.allow_from,
        max_body=p.max_body,
        request_timeout=p.request_timeout,
        idle_timeout=p.idle_timeout,
        first_byte_timeout=p.first_byte_timeout,
        max_connections=p.max_connections,
        max_connections_per_peer=p.max_connections_per_peer,
        unix_peers=lambda: server.policy,  # the auth socket's users (TCP: the secret)
    )
    await http.start(sock)
    return [http.close, service.close, *closers]


def _policy_proxies(cfg: Config, store: SqlStore) -> PolicyProxies | None:
    """[proxies] for the policy endpoint (None: no proxies configured)."""
    import time

    from saslnetauth.policy.binding import SessionBinder
    from saslnetauth.policy.proxies import ProxyNetworks
    from saslnetauth.serve.http.policyproxy import PolicyProxies
    from saslnetauth.store.webmail import WebmailSessions

    proxies = ProxyNetworks.parse(cfg.proxies.networks)
    if not proxies:
        return None
    binder = None
    if cfg.proxies.session_seconds > 0:
        binder = SessionBinder(WebmailSessions(store), cfg.proxies.session_seconds, time.time)
    return PolicyProxies(proxies, binder)
