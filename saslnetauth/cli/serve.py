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

if TYPE_CHECKING:
    from saslnetauth.engine import DecisionEngine
    from saslnetauth.server import Settings

log = logging.getLogger("saslnetauth.server")


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
    help="Verification threads (default: two per core).",
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
    from saslnetauth import listeners
    from saslnetauth.runtime import setup_logging

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
    engine = _build_engine(cfg)
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

    def reload() -> tuple[DecisionEngine, Settings]:
        from saslnetauth.server import Settings

        new = overrides(load_config(app.config_path, app.database))
        setup_logging(new)
        return _build_engine(new), Settings.from_config(new.serve)

    asyncio.run(_run(cfg, engine, sockets, reload, metrics_sock))


def _build_engine(cfg: Config) -> DecisionEngine:
    from saslnetauth.runtime import build_server_engine

    return build_server_engine(cfg)


async def _run(
    cfg: Config,
    engine: DecisionEngine,
    sockets: list[socket.socket],
    reload: Callable[[], tuple[DecisionEngine, Settings]],
    metrics_sock: socket.socket | None = None,
) -> None:
    from saslnetauth.server import AuthServer, Settings

    server = AuthServer(
        engine, Settings.from_config(cfg.serve), workers=cfg.serve.workers, reload=reload
    )
    await server.start(sockets)
    if metrics_sock is not None:
        await server.start_metrics(metrics_sock)
    server.install_signal_handlers()
    await server.serve()
