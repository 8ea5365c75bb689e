"""``saslnetauth serve``: the Dovecot auth-socket responder for Postfix and Exim."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from saslnetauth.cli.common import AppContext, pass_app
from saslnetauth.config import Config, load_config, validate
from saslnetauth.errors import ConfigError
from saslnetauth.logfmt import kv

if TYPE_CHECKING:
    from saslnetauth.serve.server import Settings

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
    help="Wait this long before answering a failure (default 2; 0 allowed).",
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

    Offers PLAIN and LOGIN. A login succeeds only with the right password
    AND from an allowed network; every failure gets the same reply after
    --failure-delay. Logs one line per decision to standard error.
    SIGTERM stops (after answering requests in flight); SIGHUP reloads the
    configuration file (listen addresses need a restart).
    """
    from saslnetauth.runtime import setup_logging
    from saslnetauth.serve import listeners

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
    setup_logging(cfg)
    inherited = listeners.systemd_sockets()
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
        )
        for a in addrs
    ]
    metrics_sock = None
    if cfg.serve.metrics_listen:
        metrics_sock = listeners.bind(listeners.parse_listen(cfg.serve.metrics_listen), mode="0600")

    def reload() -> tuple[Config, Settings]:
        new = overrides(load_config(app.config_path, app.database))
        _check_database(new)
        setup_logging(new)
        return new, new.serve

    asyncio.run(_run(cfg, sockets, reload, metrics_sock))


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
    reload: Callable[[], tuple[Config, Settings]],
    metrics_sock: socket.socket | None = None,
) -> None:
    from saslnetauth.serve.classifier import Classifier
    from saslnetauth.serve.scheduler import Scheduler
    from saslnetauth.serve.server import AuthServer
    from saslnetauth.serve.workers import make_decider

    decider = Scheduler(make_decider(cfg), cfg, Classifier(cfg))
    await decider.start()
    server = AuthServer(decider, cfg.serve, reload=reload)
    await server.start(sockets)
    if metrics_sock is not None:
        await server.start_metrics(metrics_sock)
    server.install_signal_handlers()
    await server.serve()
