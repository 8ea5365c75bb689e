"""Statements built once, and explicit builders from their rows to the model.

Each statement has its builder: :data:`USER_BY_NAME` (the per-login lookup,
lean columns) goes with :func:`lean_user`; :data:`USER_DETAILS` (admin
listings, with timestamps and comments) with :func:`detailed_user`. Rows
are validated as they are built: a network row that does not parse, for
ANY reason (an ``expires_at`` that is not a time included), is skipped with
an error log, so a bad row written by an admin script can only narrow access.

``expires_at`` is read as the driver gives it, never through SQLAlchemy's
conversion (which raises on a SQLite text that is not a time, failing the
whole query instead of one row): see :mod:`saslnetauth.store.times`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from saslnetauth.errors import BackendError, InvalidInputError
from saslnetauth.logfmt import kv
from saslnetauth.policy.model import BACKENDS, NetworkRecord, UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet, format_services
from saslnetauth.policy.rules.networks import parse_network
from saslnetauth.store.schema import app_passwords, global_networks, user_networks, users
from saslnetauth.store.times import db_time, expiry_value, stored_expiry

log = logging.getLogger("saslnetauth.store")

#: Parsed per-user network rows remembered at most (emptied when full).
USER_RULE_CACHE = 50_000


_JOIN = users.outerjoin(user_networks, user_networks.c.user_id == users.c.id)

#: Whether the user has app passwords: the LAST column of :data:`USER_BY_NAME`, so
#: that only those users pay for reading them (one more indexed query).
HAS_APP_PASSWORDS = (
    sa.exists().where(app_passwords.c.user_id == users.c.id).label("has_app_passwords")
)

#: The per-login lookup: (user id, name, hash, enabled, backend, main password
#: services, network id, network, services, expires_at as stored, suspended_at, has
#: app passwords).
USER_BY_NAME = (
    sa.select(
        users.c.id,
        users.c.name,
        users.c.password_hash,
        users.c.enabled,
        users.c.backend,
        users.c.main_password_services,
        user_networks.c.id,
        user_networks.c.network,
        user_networks.c.services,
        expiry_value(user_networks.c.expires_at).label("expires_at"),
        users.c.suspended_at,
        HAS_APP_PASSWORDS,
    )
    .select_from(_JOIN)
    .where(users.c.name == sa.bindparam("name"))
    .order_by(user_networks.c.id)
)

#: Users for admins: the lean columns plus timestamps and the networks' comments.
USER_DETAILS = sa.select(
    users.c.id,
    users.c.name,
    users.c.password_hash,
    users.c.enabled,
    users.c.backend,
    users.c.created_at,
    users.c.updated_at,
    users.c.main_password_services,
    user_networks.c.id,
    user_networks.c.network,
    user_networks.c.services,
    user_networks.c.comment,
    user_networks.c.created_at,
    expiry_value(user_networks.c.expires_at).label("expires_at"),
    users.c.suspended_at,
).select_from(_JOIN)
USER_DETAILS_BY_NAME = USER_DETAILS.where(users.c.name == sa.bindparam("name")).order_by(
    user_networks.c.id
)

#: The global networks as the rules cache reads them:
#: (id, network, services, comment, expires_at as stored).
GLOBAL_RULE_ROWS = sa.select(
    global_networks.c.id,
    global_networks.c.network,
    global_networks.c.services,
    global_networks.c.comment,
    expiry_value(global_networks.c.expires_at).label("expires_at"),
).order_by(global_networks.c.id)

#: The global networks for admins: (id, network, services, comment, created_at,
#: expires_at as stored).
GLOBAL_DETAILS = sa.select(
    global_networks.c.id,
    global_networks.c.network,
    global_networks.c.services,
    global_networks.c.comment,
    global_networks.c.created_at,
    expiry_value(global_networks.c.expires_at).label("expires_at"),
).order_by(global_networks.c.id)


# -- users ---------------------------------------------------------------------------


class UserRuleCache:
    """Per-user network rules parsed once per distinct (network, services, expiry).

    Only the parsing is remembered, keyed by the row's content: the rows
    themselves are read from the database at every login. An invalid text is
    remembered with its error too, so it is logged once, not at every login.
    """

    def __init__(self, limit: int = USER_RULE_CACHE) -> None:
        self.limit = limit
        self._rules: dict[tuple[Any, Any, Any], NetworkRule | str] = {}
        self._sets: dict[tuple[NetworkRule, ...], RuleSet] = {}

    def rule_set(self, rules: Sequence[NetworkRule]) -> RuleSet:
        """The (immutable) RuleSet of ``rules``, indexed once per distinct list."""
        key = tuple(rules)
        found = self._sets.get(key)
        if found is None:
            found = RuleSet(key)
            if len(self._sets) >= self.limit:
                self._sets.clear()
            self._sets[key] = found
        return found

    def row(
        self, nid: int, net: Any, services: Any, user: str, expires: Any = None
    ) -> tuple[NetworkRecord, NetworkRule | None]:
        key = (net, services, expires)
        rule = self._rules.get(key)
        if rule is None:
            rule = parse_rule("user_networks", nid, net, services, None, user, expires)
            if len(self._rules) >= self.limit:
                self._rules.clear()
            self._rules[key] = rule
        if isinstance(rule, str):
            record = NetworkRecord(
                id=nid, network=str(net), services=None, comment=None, user=user, error=rule
            )
            return record, None
        record = NetworkRecord(
            id=nid,
            network=rule.spec,
            services=rule.services,
            comment=None,
            user=user,
            expires=rule.expires,
        )
        return record, rule


def lean_user(rows: Sequence[Any], cache: UserRuleCache) -> UserRecord:
    """The user of :data:`USER_BY_NAME` rows (driver rows: ``enabled`` may be 0/1)."""
    uid, uname, phash, enabled, backend, main = rows[0][:6]
    enabled = _driver_bool(enabled)
    _check_user(uid, uname, enabled, backend)
    records: list[NetworkRecord] = []
    rules: list[NetworkRule] = []
    for row in rows:
        nid, net, services, expires = row[6:10]
        if nid is None:
            continue
        rec, rule = cache.row(nid, net, services, uname, expires)
        records.append(rec)
        if rule is not None:
            rules.append(rule)
    suspended = rows[0][10] is not None
    ruleset = cache.rule_set(rules)
    return _user(uid, uname, phash, enabled, backend, records, ruleset, None, None, main, suspended)


def detailed_user(rows: Sequence[Any]) -> UserRecord:
    """The user of :data:`USER_DETAILS` rows, with timestamps and comments."""
    uid, uname, phash, enabled, backend, created, updated, main = rows[0][:8]
    _check_user(uid, uname, enabled, backend)
    records: list[NetworkRecord] = []
    rules: list[NetworkRule] = []
    for row in rows:
        nid, net, services, comment, ncreated, expires = row[8:14]
        if nid is None:
            continue
        rec, rule = network_row(
            "user_networks", nid, net, services, comment, ncreated, expires, user=uname
        )
        records.append(rec)
        if rule is not None:
            rules.append(rule)
    suspended = rows[0][14] is not None
    return _user(
        uid,
        uname,
        phash,
        enabled,
        backend,
        records,
        RuleSet(rules),
        created,
        updated,
        main,
        suspended,
    )


def _driver_bool(value: Any) -> Any:
    """Driver rows carry booleans as 0/1 on SQLite and MariaDB: make them bool
    (any other value stays as it is and is refused as an invalid row)."""
    if not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def _check_user(uid: Any, uname: Any, enabled: Any, backend: Any) -> None:
    if backend not in BACKENDS or not isinstance(enabled, bool):
        log.error(
            "%s",
            kv(
                "invalid user row",
                table="users",
                id=uid,
                user=uname,
                error=f"backend={backend!r} enabled={enabled!r}",
            ),
        )
        raise BackendError(f"invalid row for user {uname!r} in table users")


def _user(
    uid: Any,
    uname: Any,
    phash: Any,
    enabled: bool,
    backend: Any,
    records: list[NetworkRecord],
    rules: RuleSet,
    created: Any,
    updated: Any,
    main: Any,
    suspended: bool,
) -> UserRecord:
    return UserRecord(
        id=uid,
        name=uname,
        password_hash=phash,
        enabled=enabled,
        backend=backend,
        rules=rules,
        networks=tuple(records),
        created_at=created,
        updated_at=updated,
        main_password_services=main,
        suspended=suspended,
    )


# -- network rows ----------------------------------------------------------------------


def parse_rule(
    table: str,
    row_id: Any,
    network: Any,
    services: Any,
    comment: Any,
    user: str | None = None,
    expires: Any = None,
    *,
    scope: str | None = None,
) -> NetworkRule | str:
    """The rule of one network row, or why it is invalid (logged).

    Any failure skips the row, not only the parser's own errors: whatever
    an admin script wrote, a row can only fail to admit. ``expires`` is the
    stored ``expires_at`` as the driver gave it (:func:`~saslnetauth.store.times.stored_expiry`).
    """
    if scope is None:
        scope = "user" if user is not None else "global"
    try:
        if not isinstance(network, str) or (services is not None and not isinstance(services, str)):
            raise InvalidInputError("network and services must be text")
        return NetworkRule.parse(
            network, services, scope=scope, comment=comment, expires=stored_expiry(expires)
        )
    except Exception as exc:  # any invalid row is skipped, never fatal
        known = isinstance(exc, InvalidInputError | ValueError)
        error = str(exc) if known else f"{type(exc).__name__}: {exc}"
        log.error(
            "%s",
            kv(
                "invalid network row skipped",
                table=table,
                id=row_id,
                user=user,
                network=network,
                services=services,
                expires_at=expires,
                error=error,
            ),
        )
        return error


def network_row(
    table: str,
    row_id: Any,
    network: Any,
    services: Any,
    comment: Any,
    created: Any,
    expires: Any = None,
    *,
    user: str | None = None,
) -> tuple[NetworkRecord, NetworkRule | None]:
    """Validate one network row; an invalid one is logged and yields no rule."""
    rule = parse_rule(table, row_id, network, services, comment, user, expires)
    if not isinstance(rule, NetworkRule):
        record = NetworkRecord(
            id=row_id,
            network=str(network),
            services=None,
            comment=comment,
            created_at=created,
            user=user,
            error=rule,
        )
        return record, None
    record = NetworkRecord(
        id=row_id,
        network=rule.spec,
        services=rule.services,
        comment=comment,
        created_at=created,
        user=user,
        expires=rule.expires,
    )
    return record, rule


def rule_values(rule: NetworkRule, dialect: str) -> dict[str, Any]:
    """The columns of a network row for ``rule`` on a ``dialect`` database."""
    return {
        "network": rule.spec,
        "services": format_services(rule.services),
        "comment": rule.comment,
        "expires_at": db_time(rule.expires, dialect),
    }


def dedupe(rules: Sequence[NetworkRule]) -> list[NetworkRule]:
    seen: dict[str, NetworkRule] = {}
    for rule in rules:
        if rule.spec in seen:
            raise InvalidInputError(f"network {rule.spec} given twice")
        seen[rule.spec] = rule
    return list(seen.values())


def spec_variants(network: str) -> list[str]:
    """The canonical form of ``network`` plus the text as given."""
    variants = [network.strip()]
    with contextlib.suppress(InvalidInputError):
        variants.insert(0, parse_network(network)[0])
    return variants
