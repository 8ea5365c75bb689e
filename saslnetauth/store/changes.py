"""What a bulk write changes, in the store's own terms: the rows as they are stored
(:class:`ExistingUser`, read by :func:`saslnetauth.store.bulk.load_users`) and the
:class:`ChangeSet` that :func:`saslnetauth.store.bulk.apply_changes` writes in one
transaction. Plain data, no I/O: the import planner above the store builds a
change set from them (the store imports nothing of the planner).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ChangeSet", "ExistingNetwork", "ExistingUser", "NetworkRow", "NewUser", "UserUpdate"]


@dataclass(frozen=True, slots=True)
class ExistingNetwork:
    """A ``user_networks`` row as stored (not validated)."""

    id: int
    network: str
    services: str | None
    #: has an ``expires_at`` (a grant given with --expires/--until, or by a script)
    expiring: bool = False


@dataclass(frozen=True, slots=True)
class ExistingUser:
    """A ``users`` row with its network rows, as stored."""

    id: int
    name: str
    password_hash: str | None
    backend: str
    enabled: bool
    networks: tuple[ExistingNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkRow:
    """A network row to write: canonical network and services text."""

    network: str
    services: str | None


@dataclass(frozen=True, slots=True)
class NewUser:
    name: str
    password_hash: str | None
    enabled: bool
    networks: tuple[NetworkRow, ...]


@dataclass(frozen=True, slots=True)
class UserUpdate:
    user_id: int
    name: str
    password_hash: str | None
    enabled: bool


@dataclass
class ChangeSet:
    """Everything one import writes, in one transaction."""

    new_users: list[NewUser] = field(default_factory=list)
    user_updates: list[UserUpdate] = field(default_factory=list)
    network_deletes: list[int] = field(default_factory=list)  # user_networks ids
    network_updates: list[tuple[int, str | None]] = field(default_factory=list)  # (id, services)
    network_inserts: list[tuple[int, NetworkRow]] = field(default_factory=list)  # (user_id, row)
    #: user name -> plain-text password still to be hashed (the planner's ``hash_pending``);
    #: :func:`~saslnetauth.store.bulk.apply_changes` refuses a change set that has any.
    pending_plain: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        """Number of rows written (for progress reports)."""
        return (
            len(self.new_users)
            + sum(len(u.networks) for u in self.new_users)
            + len(self.user_updates)
            + len(self.network_deletes)
            + len(self.network_updates)
            + len(self.network_inserts)
        )
