"""Who may talk to the responder: peer checks done before the handshake.

Whoever reaches the auth socket sends the client address (``rip=``) of its
logins itself, so the socket must only answer the mail servers. For UNIX
connections the kernel tells us the connecting process's user and groups
(``SO_PEERCRED``, and ``SO_PEERGROUPS`` for the supplementary groups,
socket(7)); they must be root, the server's own user, or listed in
``[serve] allowed_users`` / ``allowed_groups``. TCP clients must come from
``[serve] allowed_tcp_peers`` (loopback by default), and a local one must
be an allowed user too: the kernel names the owner of the client's socket
(:mod:`saslnetauth.serve.authsocket.tcpowner`), and its groups are its account's
(:func:`saslnetauth.serve.authsocket.tcpowner.account_groups`). A loopback peer whose
owner is not known is refused (``owner_unknown``); only a peer that has no
socket on this machine (another host, with ``allow_remote_listen``) is
checked by its address alone. Every listener, ours or one systemd passed
us, gets the same check.

The mail servers' own users (root, the server's user, ``allowed_users``
and ``allowed_groups``: :meth:`PeerPolicy.mail_server`) are the clients
the responder exists for: all of Postfix's smtpd processes are one user,
so no share of theirs may be smaller than what the mail server runs at once
(issue 21, item 6). Their connections are bounded only by the file
descriptors left for them (:mod:`saslnetauth.serve.authsocket.fdlimits`). Every other
peer (a TCP address, as long as it carries no user) gets at most
``max_connections`` together and each only a share of them
(``max_connections_per_peer``, half by default), so that no such peer locks
out the others. A refused peer is logged once (up to
:data:`MAX_LOGGED_PEERS` peers; further refusals are only counted).
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import ipaddress
import os
import pwd
import socket
import struct
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from saslnetauth.errors import ConfigError
from saslnetauth.serve.authsocket import tcpowner
from saslnetauth.serve.authsocket.inetdiag import DiagError, Endpoint, normalise
from saslnetauth.settings import DEFAULT_ALLOWED_GROUPS, DEFAULT_ALLOWED_USERS, ServeConfig

__all__ = [
    "MAX_LOGGED_PEERS",
    "Peer",
    "PeerPolicy",
    "RefusalLog",
    "identify",
    "with_account_groups",
]

#: Peers whose refusal is logged (once each); beyond that refusals are only counted.
MAX_LOGGED_PEERS = 1024
#: Seconds the groups of a TCP peer's account may take to look up.
GROUPS_TIMEOUT = 5.0
#: SO_PEERGROUPS (Linux 4.13+; not exported by Python's socket module).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59 if sys.platform.startswith("linux") else 0)
_MAX_GROUPS = 256
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a connection."""

    kind: str  # "unix", "inet", or "unknown"
    uid: int = -1  # TCP: the owner of the client's socket (-1: unknown or remote)
    gids: frozenset[int] = frozenset()
    pid: int = 0
    address: str = ""
    #: TCP: why the owner is unknown ("": it is known, or the peer is remote).
    error: str = ""
    #: TCP: no socket of this machine is the client's (another host).
    remote: bool = False

    @property
    def key(self) -> str:
        """What the per-peer connection share counts: the uid, or the address."""
        if self.kind == "unix":
            return f"uid={self.uid}"
        return self.address or self.kind

    def describe(self) -> dict[str, object]:
        if self.kind == "unix":
            return {"uid": self.uid, "gid": min(self.gids, default=-1), "pid": self.pid}
        if self.kind == "inet" and not self.remote:
            fields: dict[str, object] = {"peer": self.address or "-"}
            fields["uid"] = self.uid if self.uid >= 0 else "unknown"
            if self.error:
                fields["error"] = self.error
            return fields
        return {"peer": self.address or "-"}


def _unix_peer(sock: Any) -> Peer:
    try:
        pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return Peer("unknown")
    gids = {gid}
    if SO_PEERGROUPS:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * _MAX_GROUPS)
        except OSError:
            raw = b""  # too many groups, or an old kernel: the primary group only
        gids.update(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return Peer("unix", uid=uid, gids=frozenset(gids), pid=pid)


def identify(sock: Any, peername: Any) -> Peer:
    """Who is at the other end of the accepted socket ``sock`` (an asyncio
    TransportSocket or a socket)."""
    if sock is None:
        return Peer("unknown")
    if sock.family == socket.AF_UNIX:
        return _unix_peer(sock)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and peername:
        return _inet_peer(sock, peername)
    return Peer("unknown")


def _endpoint(name: Any) -> Endpoint:
    return normalise(str(name[0]), int(name[1]), int(name[3]) if len(name) > 3 else 0)


def _inet_peer(sock: Any, peername: Any) -> Peer:
    """A TCP peer and the owner of its socket, if it is one of this machine's."""
    address = str(peername[0])
    try:
        client, server = _endpoint(peername), _endpoint(sock.getsockname())
    except (OSError, ValueError) as exc:
        return Peer("inet", address=address, error=str(exc))
    try:
        return Peer("inet", uid=tcpowner.owner_of(client, server).uid, address=address)
    except DiagError as exc:
        if not tcpowner.is_missing(exc) or client.address.is_loopback:
            return Peer("inet", address=address, error=str(exc))
    try:  # no such client socket here: believed if the kernel knows our own end
        tcpowner.owner_of(server, client)
    except DiagError as exc:
        return Peer("inet", address=address, error=f"{exc} (our own end)")
    return Peer("inet", address=address, remote=True)


def _resolve(names: Iterable[str], what: str, defaults: tuple[str, ...]) -> set[int]:
    ids: set[int] = set()
    for name in names:
        if name.isascii() and name.isdigit():
            ids.add(int(name))
            continue
        try:
            ids.add(pwd.getpwnam(name).pw_uid if what == "user" else grp.getgrnam(name).gr_gid)
        except KeyError:
            if name in defaults:
                continue  # e.g. Debian-exim on a machine without Exim
            key = "allowed_users" if what == "user" else "allowed_groups"
            raise ConfigError(f"serve.{key}: no such {what} {name!r}") from None
    return ids


def _parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    nets = []
    for text in texts:
        try:
            nets.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise ConfigError(f"serve.allowed_tcp_peers: {text!r}: {exc}") from None
    return tuple(nets)


@dataclass(frozen=True)
class PeerPolicy:
    """Who may connect, resolved once (at start and on SIGHUP) from the settings."""

    uids: frozenset[int]
    gids: frozenset[int]
    networks: tuple[IPNetwork, ...]
    per_peer: int

    @classmethod
    def from_settings(cls, settings: ServeConfig) -> PeerPolicy:
        uids = _resolve(settings.allowed_users, "user", DEFAULT_ALLOWED_USERS)
        uids |= {0, os.geteuid()}
        gids = _resolve(settings.allowed_groups, "group", DEFAULT_ALLOWED_GROUPS)
        per_peer = settings.max_connections_per_peer or max(1, settings.max_connections // 2)
        return cls(
            frozenset(uids), frozenset(gids), _parse_networks(settings.allowed_tcp_peers), per_peer
        )

    def allows(self, peer: Peer) -> bool:
        return self.refusal(peer) is None

    def refusal(self, peer: Peer) -> str | None:
        """Why ``peer`` may not connect (``peer_not_allowed``, or ``owner_unknown``
        for a local TCP peer whose owner is not known); None: it may."""
        if peer.kind == "unix":
            return None if self._user_allowed(peer) else "peer_not_allowed"
        if peer.kind != "inet" or not self._address_allowed(peer.address):
            return "peer_not_allowed"  # fail closed: a peer we cannot identify
        if peer.remote:
            return None
        if peer.error or peer.uid < 0:
            return "owner_unknown"
        return None if self._user_allowed(peer) else "peer_not_allowed"

    def needs_groups(self, peer: Peer) -> bool:
        """Whether only the groups of a local TCP peer's account can admit it."""
        return (
            peer.kind == "inet"
            and peer.uid >= 0
            and not peer.gids
            and peer.uid not in self.uids
            and bool(self.gids)
        )

    def _user_allowed(self, peer: Peer) -> bool:
        return peer.uid in self.uids or not self.gids.isdisjoint(peer.gids)

    def _address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def mail_server(self, peer: Peer) -> bool:
        """Is ``peer`` one of the allowed users (by the uid and groups the kernel
        gave us, whatever the socket's family)? They are exempt from the per-peer
        share and from ``max_connections``."""
        return peer.uid >= 0 and self._user_allowed(peer)


async def with_account_groups(peer: Peer) -> Peer:
    """``peer`` (TCP, its owner known) with the groups of its owner's account, looked
    up in a thread: the name service may be remote. Fail closed: a lookup longer
    than :data:`GROUPS_TIMEOUT` leaves the owner unknown."""

    def lookup() -> Peer:
        return dataclasses.replace(peer, gids=tcpowner.account_groups(peer.uid))

    try:
        return await asyncio.wait_for(asyncio.to_thread(lookup), GROUPS_TIMEOUT)
    except TimeoutError:
        return dataclasses.replace(peer, error=f"the groups of uid {peer.uid} took too long")


class RefusalLog:
    """Remembers which peers were already logged as refused (bounded)."""

    def __init__(self, limit: int = MAX_LOGGED_PEERS) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def first(self, reason: str, peer: Peer) -> bool:
        """Count a refusal; True when it should be logged (first time for this peer)."""
        self.counts[reason] += 1
        key = (reason, f"{peer.key} uid={peer.uid}")
        if key in self._logged or len(self._logged) >= self.limit:
            return False
        self._logged.add(key)
        return True
