"""Bulk reads and writes for ``saslnetauth import``: few statements, no per-row round trips.

:func:`load_users` reads every user with its network rows in one query;
:func:`apply_changes` writes a :class:`~saslnetauth.store.changes.ChangeSet`
in ONE transaction with ``executemany`` batches of :data:`BATCH` rows:
either the whole import is written or, on any error, nothing is.
Order inside the transaction: network rows deleted, users updated, network
services changed, new users inserted (their ids read back by name, a batch
at a time), network rows inserted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saslnetauth.store.changes import ChangeSet, ExistingNetwork, ExistingUser
from saslnetauth.store.retired import retire_changed
from saslnetauth.store.schema import user_networks, users
from saslnetauth.store.sql import SqlStore

__all__ = ["BATCH", "apply_changes", "load_users"]

#: Rows per executemany() call (bounded statement size; progress granularity).
BATCH = 5000
#: Names per ``IN (...)`` when reading back new user ids (below SQLite's 999 limit).
IN_BATCH = 900

T = TypeVar("T")


def load_users(store: SqlStore) -> dict[str, ExistingUser]:
    """Every user (by stored name) with its network rows, read with one query."""
    query = (
        sa.select(
            users.c.id,
            users.c.name,
            users.c.password_hash,
            users.c.backend,
            users.c.enabled,
            user_networks.c.id,
            user_networks.c.network,
            user_networks.c.services,
            user_networks.c.expires_at.is_not(None),
        )
        .select_from(users.outerjoin(user_networks, user_networks.c.user_id == users.c.id))
        .order_by(users.c.id, user_networks.c.id)
    )
    with store._conn() as conn:
        rows = conn.execute(query).all()
    out: dict[str, ExistingUser] = {}
    nets: dict[int, list[ExistingNetwork]] = {}
    for uid, name, phash, backend, enabled, nid, network, services, expiring in rows:
        if uid not in nets:
            nets[uid] = []
            out[name] = ExistingUser(uid, name, phash, backend, bool(enabled))
        if nid is not None:
            nets[uid].append(ExistingNetwork(nid, network, services, bool(expiring)))
    return {
        name: ExistingUser(u.id, u.name, u.password_hash, u.backend, u.enabled, tuple(nets[u.id]))
        for name, u in out.items()
    }


def apply_changes(
    store: SqlStore, changes: ChangeSet, *, progress: Callable[[int], None] | None = None
) -> None:
    """Write ``changes`` in one transaction (all or nothing).

    Raises :class:`~saslnetauth.errors.AlreadyExistsError` when a user was
    added by someone else meanwhile, :class:`~saslnetauth.errors.BackendError`
    on any other database error; nothing is written then.
    """
    if changes.pending_plain:
        raise ValueError("plain-text passwords must be hashed before writing")
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done)

    with store._conn(write=True) as conn:
        for ids in _chunks(changes.network_deletes, BATCH):
            conn.execute(user_networks.delete().where(user_networks.c.id.in_(ids)))
            step(len(ids))
        _update_users(conn, changes, step)
        _update_services(conn, changes, step)
        new_ids = _insert_users(conn, changes, step)
        rows = [
            {"user_id": uid, "network": row.network, "services": row.services}
            for uid, row in changes.network_inserts
        ]
        rows += [
            {"user_id": new_ids[u.name], "network": row.network, "services": row.services}
            for u in changes.new_users
            for row in u.networks
        ]
        for batch in _chunks(rows, BATCH):
            conn.execute(user_networks.insert(), batch)
            step(len(batch))
    store.invalidate()


def _update_users(conn: Connection, changes: ChangeSet, step: Callable[[int], None]) -> None:
    stmt = (
        users.update()
        .where(users.c.id == sa.bindparam("b_id"))
        .values(
            password_hash=sa.bindparam("b_hash"),
            enabled=sa.bindparam("b_enabled"),
            updated_at=sa.func.now(),
        )
    )
    params = [
        {"b_id": u.user_id, "b_hash": u.password_hash, "b_enabled": u.enabled}
        for u in changes.user_updates
    ]
    # the hashes an import replaces are kept as retired passwords (store/retired.py)
    retire_changed(conn, {u.user_id: u.password_hash for u in changes.user_updates})
    for batch in _chunks(params, BATCH):
        conn.execute(stmt, batch)
        step(len(batch))


def _update_services(conn: Connection, changes: ChangeSet, step: Callable[[int], None]) -> None:
    stmt = (
        user_networks.update()
        .where(user_networks.c.id == sa.bindparam("b_id"))
        .values(services=sa.bindparam("b_services"))
    )
    params = [{"b_id": nid, "b_services": services} for nid, services in changes.network_updates]
    for batch in _chunks(params, BATCH):
        conn.execute(stmt, batch)
        step(len(batch))


def _insert_users(
    conn: Connection, changes: ChangeSet, step: Callable[[int], None]
) -> dict[str, int]:
    params: list[dict[str, Any]] = [
        {"name": u.name, "password_hash": u.password_hash, "enabled": u.enabled, "backend": "hash"}
        for u in changes.new_users
    ]
    for batch in _chunks(params, BATCH):
        conn.execute(users.insert(), batch)
        step(len(batch))
    ids: dict[str, int] = {}
    for names in _chunks([u.name for u in changes.new_users if u.networks], IN_BATCH):
        query = sa.select(users.c.name, users.c.id).where(users.c.name.in_(names))
        ids.update((str(name), int(uid)) for name, uid in conn.execute(query))
    return ids


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
