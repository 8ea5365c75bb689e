"""Plain records exchanged between the store, the engine and the frontends.

No I/O here. The store returns these; nothing outside
:mod:`saslnetauth.store` sees SQLAlchemy objects.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from saslnetauth.errors import InvalidUsernameError
from saslnetauth.policy.rules.expiry import to_datetime
from saslnetauth.policy.rules.netrules import RuleSet

__all__ = [
    "BACKENDS",
    "MAX_USERNAME",
    "AppPasswordRecord",
    "NetworkRecord",
    "Store",
    "UserRecord",
    "normalize_username",
]

MAX_USERNAME = 255
#: How a user's password is checked: a stored hash, or the system's PAM.
BACKENDS = ("hash", "pam")


#: The control characters a user name may not hold (C0 and DEL).
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def normalize_username(name: str, *, lowercase: bool = True) -> str:
    """Validate a user name and return its canonical form.

    A name is 1..255 characters without control characters (TAB, CR, LF,
    NUL ... would break the wire protocols and the logs). With
    ``lowercase`` (the default, like Dovecot's ``auth_username_format =
    %Lu``) names are compared in lower case.
    """
    if not isinstance(name, str):
        raise InvalidUsernameError("user name must be text")
    if not name:
        raise InvalidUsernameError("empty user name")
    if len(name) > MAX_USERNAME:
        raise InvalidUsernameError(f"user name longer than {MAX_USERNAME} characters")
    if _CONTROL.search(name) is not None or name != name.strip():
        raise InvalidUsernameError(
            f"user name {name!r} contains control characters or surrounding spaces"
        )
    return name.lower() if lowercase else name


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    """A network row as an admin sees it (global or per user)."""

    id: int
    network: str
    services: frozenset[str] | None
    comment: str | None
    created_at: datetime | None = None
    user: str | None = None  # None for global networks
    error: str | None = None  # why the row is ignored, if it is invalid
    expires: float | None = None  # UNIX time from which it no longer matches; None: never

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self, now: float | None = None) -> dict[str, object]:
        """The documented ``--json`` shape; ``expired`` as of ``now`` (default: now)."""
        at = time.time() if now is None else now
        return {
            "network": self.network,
            "services": sorted(self.services) if self.services else [],
            "comment": self.comment,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(to_datetime(self.expires)) if self.expires is not None else None,
            "expired": self.expired(at),
            "valid": self.error is None,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class AppPasswordRecord:
    """One app password of a user (docs/app-passwords.md): never its secret in the clear.

    ``rules`` are its own networks, limited to its ``services``; ``error`` says why a
    row written by a script is unusable (it then admits nothing, and a login that
    names it fails temporarily)."""

    id: int
    label: str
    token_id: str
    secret_hash: str
    services: frozenset[str] | None
    #: UNIX time from which it no longer admits a login (:mod:`saslnetauth.policy.rules.expiry`,
    #: like a network row's); None: never.
    expires: float | None
    rules: RuleSet = field(default_factory=RuleSet)
    networks: tuple[NetworkRecord, ...] = ()
    last_used_at: datetime | None = None
    created_at: datetime | None = None
    error: str | None = None
    #: Suspended for sending too much (:mod:`saslnetauth.policy.suspension`).
    suspended: bool = False

    def expired(self, now: float) -> bool:
        """Whether it has expired at UNIX time ``now``."""
        return self.expires is not None and now >= self.expires

    def usable(self, now: float) -> bool:
        """Valid and not expired: its networks may admit a login."""
        return self.error is None and not self.expired(now)

    def applies_to(self, service: str) -> bool:
        return self.services is None or service in self.services

    def to_json(self, now: float) -> dict[str, object]:
        """The documented ``user app-password list --json`` shape (no secret, no hash)."""
        return {
            "label": self.label,
            "services": sorted(self.services) if self.services else [],
            "networks": [n.to_json() for n in self.networks],
            "expires_at": _iso(to_datetime(self.expires)) if self.expires is not None else None,
            "expired": self.expired(now),
            "last_used_at": _iso(self.last_used_at),
            "created_at": _iso(self.created_at),
            "valid": self.error is None,
            "error": self.error,
            "suspended": self.suspended,
        }


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as the engine needs it: validated, with its parsed networks."""

    id: int
    name: str
    password_hash: str | None
    enabled: bool
    backend: str = "hash"
    rules: RuleSet = field(default_factory=RuleSet)
    networks: tuple[NetworkRecord, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: Per-device credentials (read with the user at every login).
    app_passwords: tuple[AppPasswordRecord, ...] = ()
    #: Where the main password may log in, as stored (:mod:`saslnetauth.policy.mainpassword`:
    #: "all", "none" or services); None: ``[passwords] main_password_services``.
    main_password_services: str | None = None
    #: The main password is suspended for sending too much (:mod:`saslnetauth.policy.suspension`).
    suspended: bool = False

    def app_password(self, token_id: str) -> AppPasswordRecord | None:
        """The app password a token names by its identifier, if it is this user's."""
        for app in self.app_passwords:
            if app.token_id == token_id:
                return app
        return None

    def to_json(self, now: float | None = None) -> dict[str, object]:
        """The documented, stable ``--json`` shape of a user (expiry as of ``now``)."""
        from saslnetauth.credentials.passwords import split_scheme

        scheme = split_scheme(self.password_hash)[0] if self.password_hash else None
        return {
            "name": self.name,
            "enabled": self.enabled,
            "backend": self.backend,
            "has_password": self.password_hash is not None,
            "scheme": scheme,
            "networks": [n.to_json(now) for n in self.networks],
            "main_password_services": self.main_password_services,
            "suspended": self.suspended,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class Store(Protocol):
    """What the decision engine needs from storage."""

    def get_user(self, name: str) -> UserRecord | None:
        """The user and its valid network rules; ``None`` if unknown."""

    def global_rules(self) -> RuleSet:
        """All valid global network rules (may be cached briefly)."""

    def update_hash(self, name: str, new_hash: str) -> None:
        """Replace a user's hash (used for rehash-on-login)."""

    def retired_hashes(self, user_id: int, days: int) -> list[tuple[int, str]]:
        """(row id, hash) of the user's passwords retired within ``days``, newest first."""

    def retired_tried(self, row_id: int) -> None:
        """A failed login used retired password ``row_id``."""
