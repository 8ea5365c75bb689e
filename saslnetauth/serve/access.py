"""Who may talk to the responder: peer checks done before the handshake.

Whoever reaches the auth socket sends the client address (``rip=``) of its
logins itself, so the socket must only answer the mail servers. For UNIX
connections the kernel tells us the connecting process's user and groups
(``SO_PEERCRED``, and ``SO_PEERGROUPS`` for the supplementary groups,
socket(7)); they must be root, the server's own user, or listed in
``[serve] allowed_users`` / ``allowed_groups``. TCP clients must come from
``[serve] allowed_tcp_peers`` (loopback by default). Every listener, ours
or one systemd passed us, gets the same check.

The mail servers' own users (root, the server's user, ``allowed_users``
and ``allowed_groups``: :meth:`PeerPolicy.mail_server`) are the clients
the responder exists for: all of Postfix's smtpd processes are one user,
so no share of theirs may be smaller than what the mail server runs at once
(issue 21, item 6). Their connections are bounded only by the file
descriptors left for them (:mod:`saslnetauth.serve.fdlimits`). Every other
peer (a TCP address, as long as it carries no user) gets at most
``max_connections`` together and each only a share of them
(``max_connections_per_peer``, half by default), so that no such peer locks
out the others. A refused peer is logged once (up to
:data:`MAX_LOGGED_PEERS` peers; further refusals are only counted).
"""

from __future__ import annotations

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
from saslnetauth.settings import DEFAULT_ALLOWED_GROUPS, DEFAULT_ALLOWED_USERS, ServeConfig

__all__ = ["MAX_LOGGED_PEERS", "Peer", "PeerPolicy", "RefusalLog", "identify"]

#: Peers whose refusal is logged (once each); beyond that refusals are only counted.
MAX_LOGGED_PEERS = 1024
#: SO_PEERGROUPS (Linux 4.13+; not exported by Python's socket module).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59 if sys.platform.startswith("linux") else 0)
_MAX_GROUPS = 256
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a connection."""

    kind: str  # "unix", "inet", or "unknown"
    uid: int = -1
    gids: frozenset[int] = frozenset()
    pid: int = 0
    address: str = ""

    @property
    def key(self) -> str:
        """What the per-peer connection share counts: the uid, or the address."""
        if self.kind == "unix":
            return f"uid={self.uid}"
        return self.address or self.kind

    def describe(self) -> dict[str, object]:
        if self.kind == "unix":
            return {"uid": self.uid, "gid": min(self.gids, default=-1), "pid": self.pid}
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
        return Peer("inet", address=str(peername[0]))
    return Peer("unknown")


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
        if peer.kind == "unix":
            return peer.uid in self.uids or not self.gids.isdisjoint(peer.gids)
        if peer.kind == "inet":
            try:
                ip = ipaddress.ip_address(peer.address.partition("%")[0])
            except ValueError:
                return False
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return any(ip in net for net in self.networks)
        return False  # fail closed: a peer we cannot identify

    def mail_server(self, peer: Peer) -> bool:
        """Is ``peer`` one of the allowed users (by the uid and groups the kernel
        gave us, whatever the socket's family)? They are exempt from the per-peer
        share and from ``max_connections``."""
        if peer.uid < 0:
            return False
        return peer.uid in self.uids or not self.gids.isdisjoint(peer.gids)


class RefusalLog:
    """Remembers which peers were already logged as refused (bounded)."""

    def __init__(self, limit: int = MAX_LOGGED_PEERS) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    def first(self, reason: str, peer: Peer) -> bool:
        """Count a refusal; True when it should be logged (first time for this peer)."""
        self.counts[reason] += 1
        key = (reason, peer.key)
        if key in self._logged or len(self._logged) >= self.limit:
            return False
        self._logged.add(key)
        return True
