"""Table definitions: the documented database that admin scripts may use.

Tables (see docs/database.md):

``users``
    ``id`` integer key; ``name`` unique (canonical, lower case by default);
    ``password_hash`` Dovecot-style ``{SCHEME}value`` or NULL (no password:
    every login fails); ``backend`` ``hash`` or ``pam``; ``enabled``
    boolean; ``created_at``/``updated_at`` timestamps;
    ``main_password_services`` where the main password may log in (``all``,
    ``none`` or services such as ``smtp,submission``), NULL for the
    configured default (``[passwords] main_password_services``);
    ``messages_per_hour``, ``recipients_per_hour``, ``messages_per_day``,
    ``recipients_per_day`` the main password's sending limits (NULL: ``[sending]``'s,
    0: none) and ``suspended_at`` when it was suspended for sending too much
    (NULL: not suspended).
``user_networks``
    ``user_id`` -> users.id (cascade delete); ``network`` canonical text
    (``192.0.2.0/24``, ``2001:db8::/32``, ``local``, ``any``); ``services``
    comma separated lower-case names or NULL/empty for all; ``comment``;
    ``expires_at`` NULL (never) or the time after which the row no longer
    matches. Unique (user_id, network).
``global_networks``
    ``network`` unique, ``services``, ``comment``, ``expires_at`` as above;
    applies to every user.
``webmail_sessions``
    the live webmail sessions (docs/webmail.md): ``user_id`` -> users.id and
    ``app_password_id`` -> app_passwords.id (NULL: the main password; both
    cascade delete), ``scope`` the same id or 0, ``proxy`` the trusted proxy,
    ``rip`` the client address the session was opened from, ``fingerprint`` a
    digest of the credential's stored hash (never the password), ``expires``
    UNIX time. Unique (user_id, scope, proxy); expired rows are purged.
``rules_generation``
    one row (``id`` 1) whose ``generation`` is bumped by database triggers
    on every INSERT, UPDATE and DELETE of ``global_networks`` (and TRUNCATE
    on PostgreSQL), whoever writes; servers compare it to decide whether
    their cached copy of the global networks is still current.
``sending_generation``
    one row (``id`` 1) whose ``generation`` is bumped by database triggers
    (migration 0009) when rows of ``users`` or ``app_passwords`` are added or
    deleted, or their names, sending limits or ``suspended_at`` change: the
    policy server of ``[sending]`` keeps each user's settings until it moves.
``auth_events``
    one row per verdict of the server (``ts``, ``user``, ``rip``,
    ``service``, ``verdict``, ``reason``, ``credentials_valid``,
    ``credential`` the app password's label or NULL, ``country`` and ``asn``
    when known, ``proxy`` the trusted proxy the login came through or NULL),
    written in the background, read by ``saslnetauth report``.
``app_passwords``
    per-device credentials: ``user_id`` -> users.id (cascade delete),
    ``label`` unique per user, ``token_id`` unique public identifier,
    ``secret_hash``, ``services`` as above, ``expires_at``,
    ``last_used_at``, ``created_at``; the sending limits and ``suspended_at``
    as for users (a NULL limit: the user's, then ``[sending]``'s).
``app_password_networks``
    ``app_password_id`` -> app_passwords.id (cascade delete), ``network``
    as above; unique (app_password_id, network).
``user_locations``
    the places each user logged in from (new-location alerts): ``user_id`` ->
    users.id and ``app_password_id`` -> app_passwords.id (NULL: the main
    password; both cascade delete), ``scope`` the same id or 0 for the main
    password (NULL is never equal to NULL in a unique constraint, so the key
    needs a column that is never NULL), ``kind`` ``network``, ``country`` or
    ``asn``, ``value`` (``192.0.2.0/24``, ``DE``, ``3320``), ``first_seen``,
    ``last_seen``. Unique (user_id, scope, kind, value); written by the server in
    the background, rows unseen for ``[alerts] location_memory_days`` deleted.
``retired_passwords``
    the old hashes of users whose password changed (CLI, import; not PAM):
    ``user_id`` -> users.id (cascade delete), ``hash``, ``retired_at``,
    ``last_tried_at`` (a failed login used it; NULL: never). Kept for
    ``[alerts] retired_days``.

Changing these definitions requires a new Alembic migration.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from saslnetauth.sending import SENDING_LIMITS

metadata = sa.MetaData()

#: Alembic revision the code expects; tests check it equals the head.
SCHEMA_REVISION = "0009"

# Case-sensitive comparison on MySQL/MariaDB as on SQLite and PostgreSQL.
_NAME = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")
_LABEL = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")
_TOKEN = sa.String(32).with_variant(mysql.VARCHAR(32, collation="utf8mb4_bin"), "mysql", "mariadb")
_NET = sa.String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def _owner(name: str, target: str, constraint: str) -> sa.Column[object]:
    """The row's owner (``table.id``): deleting the owner deletes the row."""
    return sa.Column(
        name,
        sa.Integer,
        sa.ForeignKey(target, ondelete="CASCADE", name=constraint),
        nullable=False,
    )


def _created_at() -> sa.Column[object]:
    """When the row was written (the database's clock)."""
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


#: A credential's own sending limits (migration 0008; NULL: the default, 0: none).


def _sending_columns() -> list[sa.Column[Any]]:
    """The sending limits and the suspension of a credential (migration 0008)."""
    columns: list[sa.Column[Any]] = [
        sa.Column(name, sa.Integer, nullable=True) for name in SENDING_LIMITS
    ]
    return [*columns, sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True)]


users = sa.Table(
    "users",
    metadata,
    _id(),
    sa.Column("name", _NAME, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("backend", sa.String(16), nullable=False, server_default="hash"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    _created_at(),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("main_password_services", sa.String(255), nullable=True),
    *_sending_columns(),
    sa.UniqueConstraint("name", name="uq_users_name"),
)

user_networks = sa.Table(
    "user_networks",
    metadata,
    _id(),
    _owner("user_id", "users.id", "fk_user_networks_user"),
    sa.Column("network", _NET, nullable=False),
    sa.Column("services", sa.String(255), nullable=True),
    sa.Column("comment", sa.String(255), nullable=True),
    _created_at(),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("user_id", "network", name="uq_user_networks_user_network"),
    sa.Index("ix_user_networks_user_id", "user_id"),
)

global_networks = sa.Table(
    "global_networks",
    metadata,
    _id(),
    sa.Column("network", _NET, nullable=False),
    sa.Column("services", sa.String(255), nullable=True),
    sa.Column("comment", sa.String(255), nullable=True),
    _created_at(),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("network", name="uq_global_networks_network"),
)

_TEXT = sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")

#: One row per decision of the server (written in batches, pruned after keep_days).
auth_events = sa.Table(
    "auth_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user", _TEXT, nullable=True),
    sa.Column("rip", sa.String(64), nullable=True),
    sa.Column("service", sa.String(32), nullable=True),
    sa.Column("verdict", sa.String(8), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("credentials_valid", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("credential", _LABEL, nullable=True),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("asn", sa.BigInteger, nullable=True),
    sa.Column("proxy", sa.String(64), nullable=True),
    sa.Index("ix_auth_events_ts", "ts"),
)

#: Per-device credentials of a user (migration 0004).
app_passwords = sa.Table(
    "app_passwords",
    metadata,
    _id(),
    _owner("user_id", "users.id", "fk_app_passwords_user"),
    sa.Column("label", _LABEL, nullable=False),
    sa.Column("token_id", _TOKEN, nullable=False),
    sa.Column("secret_hash", sa.String(255), nullable=False),
    sa.Column("services", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    _created_at(),
    *_sending_columns(),
    sa.UniqueConstraint("user_id", "label", name="uq_app_passwords_user_label"),
    sa.UniqueConstraint("token_id", name="uq_app_passwords_token_id"),
    sa.Index("ix_app_passwords_user_id", "user_id"),
)

#: The networks each app password may log in from (migration 0004).
app_password_networks = sa.Table(
    "app_password_networks",
    metadata,
    _id(),
    _owner("app_password_id", "app_passwords.id", "fk_app_password_networks_app"),
    sa.Column("network", _NET, nullable=False),
    _created_at(),
    sa.UniqueConstraint("app_password_id", "network", name="uq_app_password_networks_app_network"),
    sa.Index("ix_app_password_networks_app_password_id", "app_password_id"),
)

#: Where each user (and each app password) logged in from (migration 0006).
user_locations = sa.Table(
    "user_locations",
    metadata,
    _id(),
    _owner("user_id", "users.id", "fk_user_locations_user"),
    sa.Column(
        "app_password_id",
        sa.Integer,
        sa.ForeignKey("app_passwords.id", ondelete="CASCADE", name="fk_user_locations_app"),
        nullable=True,
    ),
    sa.Column("scope", sa.Integer, nullable=False, server_default="0"),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", _NET, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("user_id", "scope", "kind", "value", name="uq_user_locations_place"),
    sa.Index("ix_user_locations_last_seen", "last_seen"),
)


#: Old hashes of users whose password changed (migration 0005).
retired_passwords = sa.Table(
    "retired_passwords",
    metadata,
    _id(),
    _owner("user_id", "users.id", "fk_retired_passwords_user"),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column(
        "retired_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("last_tried_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_retired_passwords_user_id", "user_id"),
    sa.Index("ix_retired_passwords_retired_at", "retired_at"),
)

#: Webmail sessions (migration 0007): a trusted proxy that forwarded no client
#: address admits a login of the user and credential only while one is live.
webmail_sessions = sa.Table(
    "webmail_sessions",
    metadata,
    _id(),
    _owner("user_id", "users.id", "fk_webmail_sessions_user"),
    sa.Column(
        "app_password_id",
        sa.Integer,
        sa.ForeignKey("app_passwords.id", ondelete="CASCADE", name="fk_webmail_sessions_app"),
        nullable=True,
    ),
    sa.Column("scope", sa.Integer, nullable=False, server_default="0"),
    sa.Column("proxy", sa.String(64), nullable=False),
    sa.Column("rip", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.UniqueConstraint("user_id", "scope", "proxy", name="uq_webmail_sessions_key"),
    sa.Index("ix_webmail_sessions_expires", "expires"),
)

#: The one row of :data:`rules_generation` (the triggers update only this id).
GENERATION_ROW = 1

#: A counter bumped by triggers (migration 0003) on every change of global_networks.
rules_generation = sa.Table(
    "rules_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
)

#: A counter bumped by triggers (migration 0009) on every change of the sending settings.
sending_generation = sa.Table(
    "sending_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
)
