"""The owner of a TCP peer's socket (issue 21, item 4): the sock_diag messages
(saslnetauth.serve.authsocket.inetdiag, pure) and the kernel's answers for real loopback
connections (saslnetauth.serve.authsocket.tcpowner, saslnetauth.serve.authsocket.access.identify)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saslnetauth.serve.authsocket import tcpowner
from saslnetauth.serve.authsocket.access import Peer, identify, with_account_groups
from saslnetauth.serve.authsocket.inetdiag import (
    DiagError,
    Endpoint,
    Owner,
    normalise,
    pack_request,
    parse_reply,
)

NOBODY = 65534
V4 = normalise("127.0.0.1", 40000), normalise("127.0.0.1", 12345)


def reply(
    seq: int,
    local: Endpoint,
    remote: Endpoint,
    *,
    uid: int = 0,
    inode: int = 1,
    state: int = 1,
    family: int = 0,
    kind: int = 20,
) -> bytes:
    """An answer as the kernel writes it (struct inet_diag_msg, one attribute)."""
    family = family or (socket.AF_INET if local.address.version == 4 else socket.AF_INET6)
    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack(
        "!HH16s16s",
        local.port,
        remote.port,
        local.address.packed.ljust(16, b"\0"),
        remote.address.packed.ljust(16, b"\0"),
    )
    body += struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    body += struct.pack("=IIIII", 0, 0, 0, uid, inode)
    body += struct.pack("=HHB3x", 5, 8, 0)  # INET_DIAG_SHUTDOWN
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


# -- the messages ------------------------------------------------------------------


def test_request_names_the_socket_by_its_exact_four_tuple() -> None:
    local, remote = normalise("127.0.0.2", 40000), normalise("127.0.0.1", 12345)
    data = pack_request(local, remote, 7)
    assert len(data) == 72
    assert struct.unpack_from("=IHHII", data) == (72, 20, 1, 7, 0)
    assert struct.unpack_from("=BBBBI", data, 16) == (socket.AF_INET, 6, 0, 0, 0xFFFFFFFF)
    assert struct.unpack_from("!HH", data, 24) == (40000, 12345)
    assert data[28:32] == bytes([127, 0, 0, 2]) and data[44:48] == bytes([127, 0, 0, 1])
    assert struct.unpack_from("=III", data, 60) == (0, 0xFFFFFFFF, 0xFFFFFFFF)
    six = pack_request(normalise("::1", 1, 3), normalise("::1", 2), 8)
    assert six[16] == socket.AF_INET6 and six[28:44] == ipaddress.ip_address("::1").packed
    assert struct.unpack_from("=I", six, 60) == (3,)
    with pytest.raises(ValueError, match="one address family"):
        pack_request(normalise("::1", 1), normalise("127.0.0.1", 2), 1)


def test_mapped_addresses_are_ipv4_and_junk_is_refused() -> None:
    assert normalise("::ffff:127.0.0.1", 5) == Endpoint(ipaddress.ip_address("127.0.0.1"), 5)
    assert normalise("127.0.0.1", 5, 9).scope == 0
    assert normalise("fe80::1%eth0", 5, 2).scope == 2
    for bad in (("junk", 1), ("127.0.0.1", 70000), ("127.0.0.1", -1)):
        with pytest.raises(ValueError):
            normalise(*bad)


def test_reply_gives_the_owner_of_that_socket_only() -> None:
    local, remote = V4
    assert parse_reply(reply(3, local, remote, uid=NOBODY, inode=99), 3, local, remote) == Owner(
        NOBODY, 99
    )
    # an IPv6 socket's IPv4 connection is reported with mapped addresses
    mapped = reply(3, Endpoint(ipaddress.ip_address("::ffff:127.0.0.1"), 40000), _v6(remote))
    assert parse_reply(mapped, 3, local, remote).uid == 0
    wrong = {
        "answer to request 4": reply(4, local, remote),
        "another socket": reply(3, normalise("127.0.0.1", 40001), remote),
        "no owner any more": reply(3, local, remote, inode=0),
        "no owner any more ": reply(3, local, remote, state=6),  # TIME_WAIT: uid 0
        "address family 1": reply(3, local, remote, family=1),
        "unexpected netlink message": reply(3, local, remote, kind=3),
        "short netlink answer": b"\x10\0\0",
        "in an answer of": reply(3, local, remote)[:-4],
    }
    for message, data in wrong.items():
        with pytest.raises(DiagError, match=message.strip()):
            parse_reply(data, 3, local, remote)
    error = struct.pack("=IHHIIi", 36, 2, 0, 3, 0, -errno.ENOENT) + bytes(16)
    with pytest.raises(DiagError) as caught:
        parse_reply(error, 3, local, remote)
    assert caught.value.errno == errno.ENOENT


def _v6(end: Endpoint) -> Endpoint:
    return Endpoint(ipaddress.ip_address(f"::ffff:{end.address}"), end.port)


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_fuzzed_answers_never_name_an_owner_by_accident(data: bytes, seq: int) -> None:
    local, remote = V4
    try:
        owner = parse_reply(data, seq, local, remote)
    except DiagError:
        return
    # only a well-formed answer about exactly this socket gets through
    assert struct.unpack_from("=IHHI", data)[1:4:2] == (20, seq)
    assert data[20:24] == struct.pack("!HH", 40000, 12345)
    assert owner.inode != 0


addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)).filter(
    lambda a: ipaddress.ip_address(a).version == 4 or not a.startswith("::ffff:")
)
ports = st.integers(0, 65535)


@given(addresses, ports, ports, st.integers(0, 2**32 - 1), st.integers(1, 2**32 - 1), st.data())
def test_round_trip_and_any_changed_byte_of_the_socket_is_refused(
    address: str, sport: int, dport: int, uid: int, inode: int, data: st.DataObject
) -> None:
    local, remote = normalise(address, sport), normalise(address, dport)
    seq = data.draw(st.integers(0, 2**32 - 1))
    good = reply(seq, local, remote, uid=uid, inode=inode)
    assert parse_reply(good, seq, local, remote) == Owner(uid, inode)
    assert len(pack_request(local, remote, seq)) == 72
    width = 4 if local.address.version == 4 else 16
    at = data.draw(st.sampled_from([*range(20, 24), *range(24, 24 + width)]))
    bad = bytearray(good)
    bad[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DiagError):
        parse_reply(bytes(bad), seq, local, remote)


# -- the kernel's answers ----------------------------------------------------------


@contextmanager
def listener(host: str, *, v6only: bool = True) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as srv:
        if family == socket.AF_INET6:
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        srv.bind((host, 0))
        srv.listen()
        yield srv


@pytest.mark.parametrize(
    ("listen", "connect"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("::", "127.0.0.1")]
)
def test_the_kernel_names_the_owner_of_a_loopback_client(listen: str, connect: str) -> None:
    with listener(listen, v6only=listen != "::") as srv:
        port = srv.getsockname()[1]
        with socket.create_connection((connect, port)) as client:
            conn, peername = srv.accept()
            with conn:
                if listen == "::":
                    assert str(peername[0]) == "::ffff:127.0.0.1"
                peer = identify(conn, peername)
                assert (peer.kind, peer.uid, peer.error) == ("inet", os.geteuid(), "")
                owner = tcpowner.owner_of(
                    normalise(*client.getsockname()[:2]), normalise(*conn.getsockname()[:2])
                )
                assert owner.inode == os.fstat(client.fileno()).st_ino


def test_a_client_that_closed_or_never_was_has_no_owner() -> None:
    with listener("127.0.0.1") as srv:
        client = socket.create_connection(srv.getsockname())
        client.close()  # orphaned: FIN_WAIT2 as a timewait socket, reported as uid 0
        conn, peername = srv.accept()
        with conn:
            peer = identify(conn, peername)
            assert (peer.uid, peer.remote) == (-1, False) and peer.error, peer
            missing = normalise("127.0.0.1", peername[1] ^ 1)
            with pytest.raises(DiagError) as caught:
                tcpowner.owner_of(missing, normalise(*conn.getsockname()[:2]))
            assert tcpowner.is_missing(caught.value)
    assert identify(None, None) == Peer("unknown")


def test_account_groups_come_from_the_passwd_and_group_files() -> None:
    assert 0 in tcpowner.account_groups(0)
    assert tcpowner.account_groups(2**31 - 7) == frozenset()  # no such account
    peer = asyncio.run(with_account_groups(Peer("inet", uid=NOBODY, address="127.0.0.1")))
    assert NOBODY in peer.gids and not peer.error
