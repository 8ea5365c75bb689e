"""What an import changes: compare a file's users with the database's. No I/O.

:func:`plan_import` takes the validated records of
:mod:`saslnetauth.admin.passwdfile` or :mod:`saslnetauth.admin.csvimport`
and a snapshot of the existing users (read by
:mod:`saslnetauth.store.bulk` with one query) and returns a
:class:`~saslnetauth.store.changes.ChangeSet`: users to add, users to update,
and the network rows to delete, change and insert, so that after the import each user in the file
has exactly the file's password, state and networks. Users of the database
that the file does not name are left alone. An existing user is counted
"unchanged" when its hash, state and networks already match (comments on
matching network rows are kept), so a second run of the same file changes
nothing. The files carry permanent networks only: an expiring grant
(``expires_at`` set) that the file does not name is left as it is, and one
that the file names becomes permanent, as the file says.

Plain-text passwords (the CSV ``password`` column) are compared by
verifying them against the stored hash (:func:`matching_plaintext`) and
hashed only where they differ (:func:`hash_pending`); both run on threads,
since argon2, bcrypt and libcrypt release the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from saslnetauth.admin.importers import ImportRecord, LineError
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.rules.netrules import format_services, parse_services
from saslnetauth.policy.rules.networks import parse_network
from saslnetauth.store.changes import (
    ChangeSet,
    ExistingNetwork,
    ExistingUser,
    NetworkRow,
    NewUser,
    UserUpdate,
)

__all__ = [
    "Plan",
    "hash_pending",
    "matching_plaintext",
    "plan_import",
]

Progress = Callable[[int], None]
_INVALID = "\x00invalid"  # a stored services text that does not parse


@dataclass
class Plan:
    changes: ChangeSet
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[LineError] = field(default_factory=list)


def plan_import(
    records: Iterable[ImportRecord],
    existing: Mapping[str, ExistingUser],
    *,
    plaintext_matches: frozenset[str] = frozenset(),
) -> Plan:
    """Compare ``records`` with ``existing`` users (keyed by canonical name).

    ``plaintext_matches`` names the users whose plain-text password from
    the file already verifies against their stored hash.
    """
    plan = Plan(ChangeSet())
    for rec in records:
        rows = tuple(NetworkRow(rule.spec, format_services(rule.services)) for rule in rec.networks)
        old = existing.get(rec.name)
        if old is None:
            plan.changes.new_users.append(NewUser(rec.name, rec.password_hash, rec.enabled, rows))
            if rec.password_plain is not None:
                plan.changes.pending_plain[rec.name] = rec.password_plain
            plan.added += 1
            continue
        if old.backend != "hash":
            plan.errors.append(
                LineError(
                    rec.line,
                    f"user {rec.name} exists with backend {old.backend!r} (PAM); an import does "
                    f"not replace it (remove it first: saslnetauth user del {rec.name})",
                )
            )
            continue
        if _update_user(plan.changes, rec, old, rows, rec.name in plaintext_matches):
            plan.updated += 1
        else:
            plan.unchanged += 1
    return plan


def _update_user(
    changes: ChangeSet,
    rec: ImportRecord,
    old: ExistingUser,
    rows: Sequence[NetworkRow],
    plaintext_matches: bool,
) -> bool:
    """Add the changes that bring ``old`` to ``rec``; True if there are any."""
    new_hash = rec.password_hash
    pending = False
    if rec.password_plain is not None:
        if plaintext_matches:
            new_hash = old.password_hash
        else:
            pending = True
    changed = pending or new_hash != old.password_hash or rec.enabled != old.enabled
    wanted = {row.network: row.services for row in rows}
    kept: set[str] = set()
    for net in old.networks:
        spec, services = _canonical(net)
        if net.expiring and spec not in wanted:
            continue  # imports write permanent networks; expiring grants are left alone
        if net.expiring:  # the file makes it permanent: replaced by a row without expiry
            changes.network_deletes.append(net.id)
            changed = True
            continue
        if spec is None or spec in kept or spec not in wanted:
            changes.network_deletes.append(net.id)
            changed = True
            continue
        kept.add(spec)
        if services != wanted[spec]:
            changes.network_updates.append((net.id, wanted[spec]))
            changed = True
    for row in rows:
        if row.network not in kept:
            changes.network_inserts.append((old.id, row))
            changed = True
    if changed:
        changes.user_updates.append(UserUpdate(old.id, old.name, new_hash, rec.enabled))
        if pending:
            assert rec.password_plain is not None
            changes.pending_plain[old.name] = rec.password_plain
    return changed


def _canonical(net: ExistingNetwork) -> tuple[str | None, str | None]:
    """(canonical network or None if invalid, canonical services or a marker)."""
    try:
        spec = parse_network(net.network)[0]
    except (InvalidInputError, TypeError):
        return None, None
    try:
        services = format_services(parse_services(net.services))
    except (InvalidInputError, TypeError):
        services = _INVALID
    return spec, services


def _workers() -> int:
    return max(1, os.cpu_count() or 1)


def matching_plaintext(
    records: Iterable[ImportRecord],
    existing: Mapping[str, ExistingUser],
    hasher: PasswordHasher,
    *,
    progress: Progress | None = None,
) -> frozenset[str]:
    """Names whose plain-text password verifies against their stored hash."""
    todo = [
        (rec.name, rec.password_plain, old.password_hash)
        for rec in records
        if rec.password_plain is not None
        and (old := existing.get(rec.name)) is not None
        and old.backend == "hash"
        and old.password_hash is not None
    ]

    def check(item: tuple[str, str | None, str | None]) -> bool:
        _, plain, stored = item
        assert plain is not None and stored is not None
        try:
            return hasher.verify(plain, stored)
        except InvalidInputError:
            return False  # an unusable stored hash is simply replaced

    matches: set[str] = set()
    with ThreadPoolExecutor(_workers()) as pool:
        for done, (item, ok) in enumerate(zip(todo, pool.map(check, todo), strict=True), 1):
            if ok:
                matches.add(item[0])
            if progress is not None:
                progress(done)
    return frozenset(matches)


def hash_pending(
    changes: ChangeSet, hasher: PasswordHasher, *, progress: Progress | None = None
) -> ChangeSet:
    """A copy of ``changes`` with every pending plain-text password hashed."""
    names = list(changes.pending_plain)
    with ThreadPoolExecutor(_workers()) as pool:
        hashes: dict[str, str] = {}
        for done, (name, value) in enumerate(
            zip(
                names, pool.map(lambda n: hasher.hash(changes.pending_plain[n]), names), strict=True
            ),
            1,
        ):
            hashes[name] = value
            if progress is not None:
                progress(done)
    return replace(
        changes,
        new_users=[
            replace(u, password_hash=hashes[u.name]) if u.name in hashes else u
            for u in changes.new_users
        ],
        user_updates=[
            replace(u, password_hash=hashes[u.name]) if u.name in hashes else u
            for u in changes.user_updates
        ],
        pending_plain={},
    )
