"""The netlink messages that ask Linux who owns one TCP socket. Pure: no I/O.

``sock_diag(7)``: a ``SOCK_DIAG_BY_FAMILY`` request (``struct nlmsghdr`` and
``struct inet_diag_req_v2``) names one socket by its exact 4-tuple (its own
address and port, then its peer's); the kernel answers with one
``struct inet_diag_msg`` (the socket's uid and inode) or with an
``NLMSG_ERROR`` (``ENOENT``: no such socket). :mod:`saslnetauth.serve.authsocket.tcpowner`
sends and receives them. Every field the kernel writes is checked here: an
answer for another socket, another request, a socket without a file (a
``TIME_WAIT`` socket, reported with uid 0, or one its process closed) or a
short or malformed message is an :class:`DiagError`, never an owner.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "NETLINK_SOCK_DIAG",
    "DiagError",
    "Endpoint",
    "Owner",
    "normalise",
    "pack_request",
    "parse_reply",
]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
#: idiag_cookie meaning "any socket with this 4-tuple".
_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_TCP_TIME_WAIT = 6
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states
#: struct inet_diag_sockid: sport, dport (network order), src[16], dst[16], if, cookie[2]
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
_MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans
_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_SOCKID_SIZE = _SOCKID.size + _SOCKID_TAIL.size
_MSG_SIZE = _MSG_HEAD.size + _SOCKID_SIZE + _MSG_TAIL.size

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DiagError(ValueError):
    """The kernel did not name an owner (``errno`` when it said why, else 0)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a TCP connection: address, port and (IPv6 link-local) interface."""

    address: IPAddress
    port: int
    scope: int = 0


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    inode: int


def normalise(host: str, port: int, scope: int = 0) -> Endpoint:
    """An :class:`Endpoint` of a socket address as Python gives it; an IPv4-mapped
    IPv6 address becomes IPv4 (the kernel keeps such connections in the IPv4 table).
    ValueError for anything else than an IP address and a port."""
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not 0 <= port <= 0xFFFF or not 0 <= scope <= 0xFFFFFFFF:
        raise ValueError(f"invalid port {port} or scope {scope}")
    return Endpoint(address, port, scope if address.version == 6 else 0)


def _family(local: Endpoint, remote: Endpoint) -> int:
    if local.address.version != remote.address.version:
        raise ValueError("the two ends of a connection must be of one address family")
    return socket.AF_INET if local.address.version == 4 else socket.AF_INET6


def _sockid(local: Endpoint, remote: Endpoint) -> bytes:
    return _SOCKID.pack(
        local.port, remote.port, local.address.packed, remote.address.packed
    ) + _SOCKID_TAIL.pack(local.scope or remote.scope, _NOCOOKIE, _NOCOOKIE)


def pack_request(local: Endpoint, remote: Endpoint, seq: int) -> bytes:
    """The request for the TCP socket whose own end is ``local`` and peer ``remote``."""
    body = _REQ.pack(_family(local, remote), socket.IPPROTO_TCP, 0, 0, _ALL_STATES)
    body += _sockid(local, remote)
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
        + body
    )


def _address(raw: bytes, family: int) -> IPAddress:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    address = ipaddress.IPv6Address(raw)
    return address.ipv4_mapped or address  # an IPv6 socket's IPv4 connection


def _same_socket(got: bytes, family: int, local: Endpoint, remote: Endpoint) -> bool:
    sport, dport, src, dst = _SOCKID.unpack_from(got)
    return (sport, dport, _address(src, family), _address(dst, family)) == (
        local.port,
        remote.port,
        local.address,
        remote.address,
    )


def parse_reply(data: bytes, seq: int, local: Endpoint, remote: Endpoint) -> Owner:
    """The owner of the socket asked for with :func:`pack_request` (``seq``, ``local``,
    ``remote``), from the kernel's whole answer ``data``; DiagError otherwise."""
    if len(data) < _NLMSGHDR.size:
        raise DiagError(f"short netlink answer ({len(data)} bytes)")
    length, kind, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data)
    if length < _NLMSGHDR.size or length > len(data):
        raise DiagError(f"netlink message of {length} bytes in an answer of {len(data)}")
    if got_seq != seq:
        raise DiagError(f"answer to request {got_seq}, not {seq}")
    body = data[_NLMSGHDR.size : length]
    if kind == NLMSG_ERROR:
        if len(body) < 4:
            raise DiagError("short netlink error")
        (code,) = struct.unpack_from("=i", body)
        raise DiagError(f"sock_diag error {-code}", errno=-code if code < 0 else 0)
    if kind != SOCK_DIAG_BY_FAMILY or len(body) < _MSG_SIZE:
        raise DiagError(f"unexpected netlink message (type {kind}, {len(body)} bytes)")
    family, state, _timer, _retrans = _MSG_HEAD.unpack_from(body)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise DiagError(f"answer for address family {family}")
    if not _same_socket(body[_MSG_HEAD.size :], family, local, remote):
        raise DiagError("answer for another socket")
    *_, uid, inode = _MSG_TAIL.unpack_from(body, _MSG_HEAD.size + _SOCKID_SIZE)
    if state == _TCP_TIME_WAIT or inode == 0:
        # TIME_WAIT sockets are reported as uid 0; a socket without an inode has
        # no process holding it: neither has an owner to believe
        raise DiagError("the socket has no owner any more (closed by its process)")
    return Owner(uid, inode)
