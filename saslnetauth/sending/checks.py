"""Range checks of ``[sending]`` and ``[state]`` (called by :func:`saslnetauth.config.validate`).

Standard library only, like :mod:`saslnetauth.settings`.
"""

from __future__ import annotations

import ipaddress
import re

from saslnetauth.errors import ConfigError
from saslnetauth.settings import SendingConfig, StateConfig

__all__ = ["LIMIT_KEYS", "validate_sending"]

LIMIT_KEYS = ("messages_per_hour", "recipients_per_hour", "messages_per_day", "recipients_per_day")
_PREFIX = re.compile(r"[A-Za-z0-9_.:{}-]{1,64}")
_INET = re.compile(r"inet:(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+|localhost)):([0-9]{1,5})")


def validate_sending(s: SendingConfig, st: StateConfig) -> None:
    for key in LIMIT_KEYS:
        if not 0 <= getattr(s, key) <= 2**31 - 1:
            raise ConfigError(f"sending.{key}: 0 (no limit) or more")
    if not 0 < s.outside_factor <= 1:
        raise ConfigError("sending.outside_factor: more than 0, at most 1")
    if s.suspend_after < 0 or not 60 <= s.suspend_window <= 7 * 86400:
        raise ConfigError("sending.suspend_after: 0 (never) or more; suspend_window: 60 to 604800")
    if not 60 <= s.login_window <= 7 * 86400:
        raise ConfigError("sending.login_window: 60 to 604800 seconds")
    if s.max_connections < 1 or s.idle_timeout <= 0:
        raise ConfigError("sending.max_connections: at least 1; idle_timeout: more than 0")
    if s.listen:
        _check_listen(s.listen)
    if st.url and not st.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError('state.url: "" (this process), redis://, rediss:// or unix://')
    if not _PREFIX.fullmatch(st.prefix):
        raise ConfigError("state.prefix: 1 to 64 letters, digits and _ . : { } -")
    if not 0 < st.timeout <= 5:
        raise ConfigError("state.timeout: more than 0, at most 5 seconds")


def _check_listen(text: str) -> None:
    """A UNIX socket, or TCP on loopback only (whoever connects names the sender)."""
    if text.startswith("unix:/"):
        return
    m = _INET.fullmatch(text)
    if m is None:
        raise ConfigError("sending.listen: unix:/path or inet:127.0.0.1:PORT")
    host = m.group(1) or m.group(2)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or not 0 < int(m.group(3)) < 65536:
        raise ConfigError("sending.listen: TCP only on a loopback address and a port")
