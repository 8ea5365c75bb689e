"""``saslnetauth serve``: the Dovecot auth-socket responder for Postfix and Exim.

Only the command line lives here; the process is wired in :mod:`saslnetauth.serve.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from saslnetauth.cli.common import AppContext, pass_app

if TYPE_CHECKING:
    from saslnetauth.config import Config


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
    from saslnetauth.config import load_config, validate
    from saslnetauth.serve.app import start

    def overrides(cfg: Config) -> Config:
        if listen:
            cfg.serve.listen = list(listen)
        if failure_delay is not None:
            cfg.serve.failure_delay = failure_delay
        if workers is not None:
            cfg.serve.workers = workers
        validate(cfg)
        return cfg

    start(overrides(app.config), lambda: overrides(load_config(app.config_path, app.database)))
