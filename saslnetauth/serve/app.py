"""The ``saslnetauth serve`` process: the checks before it starts, its listening
sockets and their descriptor budget, then the responder and the services beside it
(:mod:`saslnetauth.serve.services`) until SIGTERM.

The command line (:mod:`saslnetauth.cli.serve`) only applies its options to the
configuration and calls :func:`start`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from saslnetauth.config import Config, check_policy_secret
from saslnetauth.errors import ConfigError
from saslnetauth.logfmt import kv
from saslnetauth.serve.services import Listening
from saslnetauth.settings import ServeConfig

log = logging.getLogger("saslnetauth.serve.server")

#: Reads the configuration anew (with the command line's overrides applied), for SIGHUP.
Reconfigure = Callable[[], Config]


def start(cfg: Config, reconfigure: Reconfigure) -> None:
    """Check ``cfg``, bind its sockets and serve until SIGTERM; SIGHUP calls
    ``reconfigure`` for the new configuration."""
    from saslnetauth.runtime import setup_logging
    from saslnetauth.serve.authsocket import fdlimits
    from saslnetauth.serve.authsocket.access import PeerPolicy
    from saslnetauth.serve.services import run

    check_policy_secret(cfg)  # no policy listener without its shared secret
    setup_logging(cfg)
    PeerPolicy.from_settings(cfg.serve)  # unknown user and group names stop the start
    fds = fdlimits.plan(cfg, fdlimits.raise_soft_limit())  # too few descriptors stop it too
    log.info(
        "%s",
        kv("file descriptors", limit=fds.limit, mail_server_connections=fds.mail_servers),
    )
    listening = bind_listeners(cfg)

    def reload() -> tuple[Config, ServeConfig]:
        new = reconfigure()
        check_policy_secret(new)  # metrics_token is read anew: no secret in the open
        check_database(new)
        setup_logging(new)
        return new, new.serve

    asyncio.run(run(cfg, listening, reload, fds.mail_servers))


def bind_listeners(cfg: Config) -> Listening:
    """The auth sockets (inherited from systemd, or bound from ``serve.listen``) and the
    optional metrics, userdb and policy sockets; the database is checked before binding."""
    from saslnetauth.serve.authsocket import listeners

    inherited = listeners.systemd_sockets()
    for sock in inherited:
        listeners.check_inherited(sock, cfg.serve.allow_remote_listen)
    addrs = [] if inherited else [listeners.parse_listen(a) for a in cfg.serve.listen]
    if not inherited and not addrs:
        raise ConfigError("nothing to listen on: give --listen or serve.listen")
    check_database(cfg)
    s = cfg.serve
    auth = inherited or [
        listeners.bind(
            a,
            mode=s.socket_mode,
            owner=s.socket_owner,
            group=s.socket_group,
            allow_remote=s.allow_remote_listen,
        )
        for a in addrs
    ]
    metrics = None
    if s.metrics_listen:
        metrics = listeners.bind(
            listeners.parse_listen(s.metrics_listen), mode="0600", allow_remote=True
        )
    userdb = None
    if s.userdb_listen:
        userdb = listeners.bind(
            listeners.parse_listen(s.userdb_listen),
            mode="0600",
            owner=s.socket_owner,
            group=s.socket_group,
        )
    policy = None
    if cfg.policy.listen:
        policy = listeners.bind(
            listeners.parse_listen(cfg.policy.listen),
            mode=s.socket_mode,  # Dovecot's auth process (not root) connects
            owner=s.socket_owner,
            group=s.socket_group,
        )
    sending = None
    if cfg.sending.listen:  # Postfix's check_policy_service (docs/sending.md)
        sending = listeners.bind(
            listeners.parse_listen(cfg.sending.listen),
            mode=s.socket_mode,
            owner=s.socket_owner,
            group=s.socket_group,
        )
    return Listening(auth, metrics=metrics, userdb=userdb, policy=policy, sending=sending)


def check_database(cfg: Config) -> None:
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
