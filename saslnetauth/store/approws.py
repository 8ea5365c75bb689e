"""App password rows: the statements that read them and the builders to the model.

:data:`APP_PASSWORDS_OF_USER` is the per-login read (only for users that have
app passwords: :data:`saslnetauth.store.rows.USER_BY_NAME` says so), with
:func:`lean_app_passwords`; :data:`APP_PASSWORD_DETAILS` is the admin listing,
with :func:`detailed_app_passwords`. Rows are validated as they are built,
whoever wrote them: a row whose token identifier, hash, services or expiry
does not parse is kept with its ``error`` (it admits nothing, and a login that
names it is TEMPFAIL), and a network row that does not parse is skipped; each
is logged once, not at every login.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from saslnetauth.credentials.apptokens import valid_hash, valid_token_id
from saslnetauth.logfmt import kv
from saslnetauth.policy.model import AppPasswordRecord, NetworkRecord
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet, parse_services
from saslnetauth.store.rows import parse_rule
from saslnetauth.store.schema import app_password_networks, app_passwords
from saslnetauth.store.times import expiry_value, stored_expiry

__all__ = [
    "APP_PASSWORDS_OF_USER",
    "APP_PASSWORD_DETAILS",
    "AppRowCache",
    "as_utc",
    "detailed_app_passwords",
    "lean_app_passwords",
]

log = logging.getLogger("saslnetauth.store")

#: Parsed app password rows remembered at most (emptied when full).
APP_ROW_CACHE = 50_000

_AP = app_passwords.c
_APN = app_password_networks.c
_JOIN = app_passwords.outerjoin(
    app_password_networks, app_password_networks.c.app_password_id == app_passwords.c.id
)

#: (id, label, token_id, secret_hash, services, expires_at as stored, network id,
#: network): ``expires_at`` is read like a network row's (:func:`stored_expiry`).
_COLUMNS = (
    _AP.id,
    _AP.label,
    _AP.token_id,
    _AP.secret_hash,
    _AP.services,
    expiry_value(_AP.expires_at).label("expires_at"),
    _APN.id,
    _APN.network,
)
APP_PASSWORDS_OF_USER = (
    sa.select(*_COLUMNS, _AP.suspended_at)
    .select_from(_JOIN)
    .where(_AP.user_id == sa.bindparam("uid"))
    .order_by(_AP.id, _APN.id)
)

#: The same plus (last_used_at, created_at, network created_at), for admins; both
#: end with suspended_at.
APP_PASSWORD_DETAILS = (
    sa.select(*_COLUMNS, _AP.last_used_at, _AP.created_at, _APN.created_at, _AP.suspended_at)
    .select_from(_JOIN)
    .where(_AP.user_id == sa.bindparam("uid"))
    .order_by(_AP.id, _APN.id)
)


def as_utc(value: Any) -> datetime | None:
    """A timestamp column (``created_at``, ``last_used_at``) as an aware UTC datetime
    (None stays None).

    Drivers give datetimes (aware on PostgreSQL, naive UTC on MariaDB) or, on
    SQLite's raw connection, text; a script may have written ISO 8601 text
    with an offset. ValueError when it is neither."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    if not isinstance(value, datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AppRowCache:
    """The parsing of app password rows, keyed by their content (the rows themselves
    are read at every login): an invalid row is logged once."""

    def __init__(self, limit: int = APP_ROW_CACHE) -> None:
        self.limit = limit
        self._heads: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._nets: dict[tuple[Any, ...], NetworkRule | str] = {}
        self._sets: dict[tuple[NetworkRule, ...], RuleSet] = {}

    def _remember(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= self.limit:
            table.clear()
        table[key] = value

    def rule_set(self, rules: Sequence[NetworkRule]) -> RuleSet:
        """The (immutable) RuleSet of ``rules``, indexed once per distinct list."""
        key = tuple(rules)
        found = self._sets.get(key)
        if found is None:
            found = RuleSet(key)
            self._remember(self._sets, key, found)
        return found

    def head(self, row: Sequence[Any], user: str) -> tuple[Any, ...]:
        """(services, expires (UNIX time), error) of one app password row."""
        key = (user, *row[:6])
        hit = self._heads.get(key)
        if hit is None:
            hit = _check_head(row, user)
            self._remember(self._heads, key, hit)
        return hit

    def network(
        self, nid: Any, net: Any, services: Any, label: str, user: str
    ) -> NetworkRule | str:
        key = (nid, net, services, label)
        hit = self._nets.get(key)
        if hit is None:
            hit = parse_rule(
                "app_password_networks", nid, net, services, None, user, scope=_scope(label)
            )
            self._remember(self._nets, key, hit)
        return hit


def _scope(label: str) -> str:
    return f"app password {label}"


def _check_head(row: Sequence[Any], user: str) -> tuple[Any, ...]:
    aid, label, token_id, secret_hash, services, raw_expires = row[:6]
    error: str | None = None
    parsed_services: frozenset[str] | None = None
    expires: float | None = None
    try:
        if not isinstance(label, str) or not label:
            raise ValueError("empty label")
        if not valid_token_id(token_id):
            raise ValueError("token_id is not 7 letters of the token alphabet")
        if not valid_hash(secret_hash):
            raise ValueError("secret_hash is not sha256:<64 hex digits>")
        if services is not None and not isinstance(services, str):
            raise ValueError("services must be text")
        parsed_services = parse_services(services)
        expires = stored_expiry(raw_expires)
    except Exception as exc:  # any invalid row admits nothing, never fatal
        error = str(exc) or type(exc).__name__
        log.error(
            "%s",
            kv(
                "invalid app password row",
                table="app_passwords",
                id=aid,
                user=user,
                label=label,
                error=error,
            ),
        )
    return parsed_services, expires, error


def _group(rows: Sequence[Any]) -> list[list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    return list(groups.values())


def _build(group: list[Any], cache: AppRowCache, user: str, details: bool) -> AppPasswordRecord:
    first = group[0]
    aid, label, token_id, secret_hash, services_text = first[:5]
    services, expires, error = cache.head(first, user)
    label = str(label)
    rules: list[NetworkRule] = []
    records: list[NetworkRecord] = []
    for row in group:
        nid, net = row[6:8]
        if nid is None:
            continue
        created = as_utc_or_none(row[10]) if details else None
        rule = cache.network(nid, net, services_text if error is None else None, label, user)
        if isinstance(rule, str):
            records.append(NetworkRecord(nid, str(net), None, None, created, user, error=rule))
            continue
        records.append(NetworkRecord(nid, rule.spec, rule.services, None, created, user))
        if error is None:
            rules.append(rule)
    return AppPasswordRecord(
        id=int(aid),
        label=label,
        token_id=str(token_id),
        secret_hash=str(secret_hash),
        services=services,
        expires=expires,
        rules=cache.rule_set(rules),
        networks=tuple(records),
        last_used_at=as_utc_or_none(first[8]) if details else None,
        created_at=as_utc_or_none(first[9]) if details else None,
        error=error,
        suspended=first[-1] is not None,
    )


def as_utc_or_none(value: Any) -> datetime | None:
    """:func:`as_utc` for columns only shown to people: unreadable is None."""
    try:
        return as_utc(value)
    except (ValueError, TypeError):
        return None


def lean_app_passwords(
    rows: Sequence[Any], cache: AppRowCache, user: str
) -> tuple[AppPasswordRecord, ...]:
    """The app passwords of :data:`APP_PASSWORDS_OF_USER` rows."""
    return tuple(_build(g, cache, user, False) for g in _group(rows))


def detailed_app_passwords(
    rows: Sequence[Any], cache: AppRowCache, user: str
) -> tuple[AppPasswordRecord, ...]:
    """The app passwords of :data:`APP_PASSWORD_DETAILS` rows, with their timestamps."""
    return tuple(_build(g, cache, user, True) for g in _group(rows))
