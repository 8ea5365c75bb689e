"""``saslnetauth serve``: the Dovecot auth-socket responder for Postfix and Exim."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from saslnetauth.cli.common import AppContext, pass_app
from saslnetauth.config import Config, check_policy_secret, load_config, validate
from saslnetauth.errors import ConfigError
from saslnetauth.logfmt import kv
from saslnetauth.settings import ServeConfig

if TYPE_CHECKING:
    from saslnetauth.serve.authsocket.server import AuthServer
    from saslnetauth.store import SqlStore

log = logging.getLogger("saslnetauth.serve.server")


@click.command()
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="ADDR",
    help="Listen on ADDR (repeatable): unix:/path/to/socket, inet:HOST:PORT or "
    "inet:[::1]:PORT. Default: serve.listen of the configuration "
    "(unix:/run/saslnetauth/auth-client). Ignored under systemd socket activation.",
)
@click.option(
    "--failure-delay",
    type=click.FloatRange(0, 8),
    metavar="SECONDS",
    help="Answer a failure this long after the request arrived, and never before the "
    "slowest password verification would end (default 2; 0 allowed).",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 1024),
    metavar="N",
    help="Decision worker processes (default: one per core; see [serve] worker_mode).",
)
@pass_app
def serve(
    app: AppContext, listen: tuple[str, ...], failure_delay: float | None, workers: int | None
) -> None:
    """Answer SASL logins for Postfix and Exim over Dovecot's auth protocol.

    \b
    Postfix main.cf:  smtpd_sasl_type = dovecot
                      smtpd_sasl_path = private/saslnetauth   (or inet:127.0.0.1:PORT)
    Exim:             driver = dovecot, server_socket = /run/saslnetauth/auth-client

    Only root, the server's own user and [serve] allowed_users/allowed_groups
    (default: postfix, Debian-exim, dovecot) may connect to a UNIX socket;
    TCP only from [serve] allowed_tcp_peers (loopback), and a local TCP client
    only if the owner of its socket is such a user (the kernel tells), and
    TCP listeners
    only on loopback unless [serve] allow_remote_listen = true: whoever can
    connect chooses the client address of its logins.

    \b
    Dovecot 2.4:      passdb lua asking this socket (dovecot-examples/dovecot-2.4/),
                      with [serve] userdb_listen for its userdb lookups
    Dovecot 2.3/2.4:  auth policy server: [policy] listen = "inet:127.0.0.1:4001"
                      with its shared secret, [policy] api_header (required)
    Sending limits:   [sending] listen = "unix:/var/spool/postfix/private/
                      saslnetauth-sending" for Postfix's check_policy_service
                      (and Exim's ${readsocket}); docs/sending.md

    Offers PLAIN and LOGIN. A login succeeds only with the right password
    AND from an allowed network; every failure gets the same reply at the
    same fixed deadline (--failure-delay, at least the slowest password
    verification). Logs one line per decision to standard error.
    SIGTERM stops (after answering requests in flight); SIGHUP reloads the
    configuration file (listen addresses, userdb_listen, [policy], [sending]
    and [state] need a restart).
    """
    from saslnetauth.runtime import setup_logging
    from saslnetauth.serve.authsocket import fdlimits, listeners
    from saslnetauth.serve.authsocket.access import PeerPolicy

    def overrides(cfg: Config) -> Config:
        if listen:
            cfg.serve.listen = list(listen)
        if failure_delay is not None:
            cfg.serve.failure_delay = failure_delay
        if workers is not None:
            cfg.serve.workers = workers
        validate(cfg)
        return cfg

    cfg = overrides(app.config)
    check_policy_secret(cfg)  # no policy listener without its shared secret
    setup_logging(cfg)
    PeerPolicy.from_settings(cfg.serve)  # unknown user and group names stop the start
    fds = fdlimits.plan(cfg, fdlimits.raise_soft_limit())  # too few descriptors stop it too
    log.info(
        "%s",
        kv("file descriptors", limit=fds.limit, mail_server_connections=fds.mail_servers),
    )
    inherited = listeners.systemd_sockets()
    for sock in inherited:
        listeners.check_inherited(sock, cfg.serve.allow_remote_listen)
    addrs = [] if inherited else [listeners.parse_listen(a) for a in cfg.serve.listen]
    if not inherited and not addrs:
        raise ConfigError("nothing to listen on: give --listen or serve.listen")
    _check_database(cfg)
    sockets = inherited or [
        listeners.bind(
            a,
            mode=cfg.serve.socket_mode,
            owner=cfg.serve.socket_owner,
            group=cfg.serve.socket_group,
            allow_remote=cfg.serve.allow_remote_listen,
        )
        for a in addrs
    ]
    metrics_sock = None
    if cfg.serve.metrics_listen:
        metrics_sock = listeners.bind(
            listeners.parse_listen(cfg.serve.metrics_listen), mode="0600", allow_remote=True
        )

    userdb_sock = None
    if cfg.serve.userdb_listen:
        userdb_sock = listeners.bind(
            listeners.parse_listen(cfg.serve.userdb_listen),
            mode="0600",
            owner=cfg.serve.socket_owner,
            group=cfg.serve.socket_group,
        )

    policy_sock = None
    if cfg.policy.listen:
        policy_sock = listeners.bind(
            listeners.parse_listen(cfg.policy.listen),
            mode=cfg.serve.socket_mode,  # Dovecot's auth process (not root) connects
            owner=cfg.serve.socket_owner,
            group=cfg.serve.socket_group,
        )

    sending_sock: socket.socket | None = None
    if cfg.sending.listen:  # Postfix's check_policy_service (docs/sending.md)
        sending_sock = listeners.bind(
            listeners.parse_listen(cfg.sending.listen),
            mode=cfg.serve.socket_mode,
            owner=cfg.serve.socket_owner,
            group=cfg.serve.socket_group,
        )

    def reload() -> tuple[Config, ServeConfig]:
        new = overrides(load_config(app.config_path, app.database))
        check_policy_secret(new)  # metrics_token is read anew: no secret in the open
        _check_database(new)
        setup_logging(new)
        return new, new.serve

    asyncio.run(
        _run(
            cfg,
            sockets,
            reload,
            fds.mail_servers,
            metrics_sock,
            userdb_sock,
            policy_sock,
            sending_sock=sending_sock,
        )
    )


def _check_database(cfg: Config) -> None:
    """Refuse an outdated schema before starting; a database that is down is only logged
    (logins fail temporarily until it answers)."""
    from saslnetauth.errors import BackendError, SchemaOutdatedError
    from saslnetauth.runtime import open_store

    try:
        open_store(cfg).close()
    except SchemaOutdatedError:
        raise
    except BackendError as exc:
        log.error("%s", kv("database unavailable at start", error=str(exc)))


async def _run(
    cfg: Config,
    sockets: list[socket.socket],
    reload: Callable[[], tuple[Config, ServeConfig]],
    mail_connections: int,
    metrics_sock: socket.socket | None = None,
    userdb_sock: socket.socket | None = None,
    policy_sock: socket.socket | None = None,
    sending_sock: socket.socket | None = None,
) -> None:
    from saslnetauth.runtime import measure_verification
    from saslnetauth.serve.authsocket.server import AuthServer
    from saslnetauth.serve.decide.classifier import Classifier
    from saslnetauth.serve.decide.scheduler import Scheduler
    from saslnetauth.serve.decide.workers import make_decider

    decider = Scheduler(make_decider(cfg), cfg, Classifier(cfg))
    # the failure deadline covers the slowest scheme (saslnetauth.policy.deadline)
    measured, _ = await asyncio.gather(
        asyncio.to_thread(measure_verification, cfg), decider.start()
    )
    closers: list[Callable[[], object]] = []  # run in this order when serve() ends
    record = None
    if cfg.report.record:  # the failures the responder decides itself
        from saslnetauth.runtime import open_store
        from saslnetauth.store.events import EventRecorder

        record_store = open_store(cfg, check_schema=False)
        recorder = EventRecorder(
            record_store, keep_days=cfg.report.keep_days, queue_size=cfg.report.queue_size
        )
        record = recorder.record
        closers += [recorder.close, record_store.close]
    from saslnetauth.runtime import open_store
    from saslnetauth.store.purge import ExpiredPurger

    purge_store = open_store(cfg, check_schema=False)
    purger = ExpiredPurger(purge_store, cfg.serve.expired_keep_days, alerts=cfg.alerts)
    closers += [purger.close, purge_store.close]
    from saslnetauth.serve.revokewatch import ExpiryWatcher

    # expiries end sessions within seconds (README, "Ending sessions on revoke")
    watcher = ExpiryWatcher(purge_store, cfg.revoke)
    closers.insert(0, watcher.close)

    def reload_all() -> tuple[Config, ServeConfig]:
        new, settings = reload()
        purger.keep_days = settings.expired_keep_days
        watcher.retune(new.revoke)
        purger.alerts = new.alerts
        return new, settings

    server = AuthServer(
        decider,
        cfg.serve,
        reload=reload_all,
        measured=measured,
        record=record,
        geoip=cfg.geoip,
        mail_connections=mail_connections,
    )
    await server.start(sockets)
    watcher.start()
    if metrics_sock is not None:
        await server.start_metrics(metrics_sock)
    if userdb_sock is not None or policy_sock is not None or sending_sock is not None:
        from saslnetauth.runtime import open_store

        store = open_store(cfg, check_schema=False)
        closers.append(store.close)
    if userdb_sock is not None:
        from saslnetauth.serve.authsocket.access import PeerPolicy
        from saslnetauth.serve.authsocket.userdb import UserdbServer

        userdb = UserdbServer(
            store.get_user,
            PeerPolicy.from_settings(cfg.serve),  # the auth socket's peer checks
            pam_any_user=cfg.pam.enabled and cfg.pam.any_user,
        )
        await userdb.start(userdb_sock)
        closers.insert(0, userdb.close)
    if policy_sock is not None:
        closers[:0] = await _start_policy(cfg, server, store, policy_sock)
    if sending_sock is not None:
        from saslnetauth.sending.server import start_sending_listener

        closers[:0] = await start_sending_listener(cfg, server, store, sending_sock)
    server.install_signal_handlers()
    try:
        await server.serve()
    finally:
        for close in closers:
            result = close()
            if asyncio.iscoroutine(result):
                await result


async def _start_policy(
    cfg: Config, server: AuthServer, store: SqlStore, sock: socket.socket
) -> list[Callable[[], object]]:
    """Dovecot's auth policy requests on ``sock`` (README, "Dovecot 2.4")."""
    from saslnetauth.serve.http.policy import PolicyService
    from saslnetauth.serve.http.server import HttpServer

    closers: list[Callable[[], object]] = []
    record = None
    if cfg.report.record:
        from saslnetauth.store.events import EventRecorder

        recorder = EventRecorder(
            store, keep_days=cfg.report.keep_days, queue_size=cfg.report.queue_size
        )
        record = recorder.record
        closers.append(recorder.close)
    p = cfg.policy
    from saslnetauth.policy.mainpassword import parse_main_services

    main_default = parse_main_services(cfg.passwords.main_password_services)
    service = PolicyService(
        server, p, store.get_user, store.global_rules, record=record, main_default=main_default
    )
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
