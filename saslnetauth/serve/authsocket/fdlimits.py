"""File descriptors of ``saslnetauth serve``: the limit and who may use how many.

Every connection is a descriptor, and a process that has none left can
neither accept the mail servers nor open its database (issue 21, item 2:
idle connections to the policy port used up ``ulimit -n 1024`` and stalled
every login). So at start :func:`raise_soft_limit` lifts the soft
``RLIMIT_NOFILE`` to the hard one (systemd's soft default is 1,024, its
hard one 524,288; the unit sets ``LimitNOFILE=`` too), and :func:`plan`
divides it up: each listener's connection limit, the workers' pipes and a
fixed reserve (log, database files, GeoIP, listeners) are set aside, and
what is left is the bound of the mail servers' own connections (root, the
server's user, ``allowed_users``/``allowed_groups``), which no per-peer
share limits. If fewer than :data:`MIN_MAIL_SERVER_CONNECTIONS` are left,
the start (or a reload) fails with a message that says what took them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from saslnetauth.errors import ConfigError
from saslnetauth.settings import Config

__all__ = [
    "BASE_RESERVE",
    "METRICS_MAX_CONNECTIONS",
    "MIN_MAIL_SERVER_CONNECTIONS",
    "PER_WORKER",
    "USERDB_MAX_CONNECTIONS",
    "FdPlan",
    "plan",
    "raise_soft_limit",
]

#: Standard streams, the log file, the database with its -wal and -shm (one per
#: thread that uses it), GeoIP files, listeners, epoll, alert commands' pipes.
BASE_RESERVE = 64
#: Per decision worker: its socket pair and process sentinel, twice (a reload
#: starts the new workers before the old ones are gone).
PER_WORKER = 8
#: Connections of /metrics at once (Prometheus scrapers are few).
METRICS_MAX_CONNECTIONS = 32
#: Connections of the userdb socket at once (Dovecot's auth workers).
USERDB_MAX_CONNECTIONS = 256
#: Fewest connections the mail servers must be able to have (Postfix's
#: default_process_limit is 100 smtpd processes).
MIN_MAIL_SERVER_CONNECTIONS = 100
#: The soft limit to ask for when the hard one is unlimited (Linux's nr_open default).
_UNLIMITED_TARGET = 1 << 20


def raise_soft_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft if soft != resource.RLIM_INFINITY else target)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return int(soft)  # e.g. above fs.nr_open: keep what we have, plan() checks it
    return int(target)


@dataclass(frozen=True)
class FdPlan:
    limit: int
    reserved: dict[str, int]

    @property
    def mail_servers(self) -> int:
        """Connections left for the mail servers' own users."""
        return self.limit - sum(self.reserved.values())


def plan(cfg: Config, limit: int | None = None) -> FdPlan:
    """Divide ``limit`` (default: the soft RLIMIT_NOFILE now) among the listeners;
    ConfigError when the mail servers would be left fewer than the minimum."""
    if limit is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = _UNLIMITED_TARGET if soft == resource.RLIM_INFINITY else int(soft)
    s = cfg.serve
    workers = s.workers or (os.cpu_count() or 1)
    reserved = {
        "reserve": BASE_RESERVE,
        "workers": PER_WORKER * workers,
        "serve.max_connections": s.max_connections,
    }
    if cfg.policy.listen:
        reserved["policy.max_connections"] = cfg.policy.max_connections
    if s.metrics_listen:
        reserved["metrics"] = METRICS_MAX_CONNECTIONS
    if s.userdb_listen:
        reserved["userdb"] = USERDB_MAX_CONNECTIONS
    result = FdPlan(limit, reserved)
    if result.mail_servers < MIN_MAIL_SERVER_CONNECTIONS:
        parts = ", ".join(f"{k} {v}" for k, v in reserved.items())
        raise ConfigError(
            f"too few file descriptors: the limit (RLIMIT_NOFILE) is {limit}, the listeners "
            f"and workers take {sum(reserved.values())} ({parts}), which leaves "
            f"{result.mail_servers} for the mail servers' connections, fewer than "
            f"{MIN_MAIL_SERVER_CONNECTIONS}; raise LimitNOFILE= in the systemd unit (or "
            "ulimit -n), or lower [serve] max_connections or [policy] max_connections"
        )
    return result
