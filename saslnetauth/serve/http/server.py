"""A small HTTP/1.1 server: asyncio around h11 (sans-I/O), for the policy endpoint and /metrics.

h11 parses and frames; this module only moves bytes and enforces the
limits a client must not be able to exceed: header bytes
(:data:`MAX_HEADER_BYTES`), header count (:data:`MAX_HEADERS`), body size
(``max_body``), time to the first byte of a new connection
(``first_byte_timeout``), time to send one request (``request_timeout``),
idle time between keep-alive requests (``idle_timeout``), connections at
once (``max_connections``) and of one peer (``max_connections_per_peer``,
default half; a peer is a TCP address or a UNIX user,
:attr:`saslnetauth.serve.authsocket.access.Peer.key`). Each connection is a file
descriptor: these bounds keep idle holders from using up the process's
descriptors (issue 21, item 2), and accepting is
:class:`saslnetauth.serve.authsocket.acceptor.Acceptor`'s. TCP peers outside
``allow_from`` (loopback by default) are closed before a byte is read; so are UNIX
peers that are not allowed users when the listener is given ``unix_peers`` (the
auth socket's checks, :meth:`saslnetauth.serve.authsocket.access.PeerPolicy.refusal`: the
policy endpoint). A handler gets a
:class:`Request` and returns a :class:`Response`; anything it raises is a
500 with no detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11

from saslnetauth.logfmt import kv
from saslnetauth.serve.authsocket.acceptor import Acceptor
from saslnetauth.serve.authsocket.access import Peer, PeerPolicy, RefusalLog, identify
from saslnetauth.serve.authsocket.listeners import describe

__all__ = ["ANYWHERE", "LOOPBACK", "HttpServer", "Request", "Response", "peer_allowed"]

log = logging.getLogger("saslnetauth.serve.http")

MAX_HEADER_BYTES = 8192
MAX_HEADERS = 64
READ_SIZE = 65536
LOOPBACK = ("127.0.0.0/8", "::1/128")
#: Every TCP peer (the metrics listener: its address is the admin's choice).
ANYWHERE = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _Reject(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def peer_allowed(
    peer: object, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    """Is the TCP peer address (``getpeername()``) inside ``networks``? UNIX peers always are."""
    if not isinstance(peer, tuple):
        return True  # a UNIX socket: its file mode decides who connects
    try:
        addr = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        name: str,
        allow_from: Sequence[str] = LOOPBACK,
        max_body: int = 16384,
        request_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        first_byte_timeout: float = 3.0,
        max_connections: int = 512,
        max_connections_per_peer: int = 0,
        unix_peers: Callable[[], PeerPolicy] | None = None,
    ) -> None:
        self.handler = handler
        #: Who may connect over a UNIX socket (None: whoever the socket's mode lets in).
        self.unix_peers = unix_peers
        self.name = name
        self.allow_from = [ipaddress.ip_network(n, strict=False) for n in allow_from]
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.first_byte_timeout = first_byte_timeout
        self.max_connections = max_connections
        self.per_peer = max_connections_per_peer or max(1, max_connections // 2)
        self.open = 0
        self._per_peer: Counter[str] = Counter()
        self.refusals = RefusalLog()
        self._acceptors: list[Acceptor] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket) -> None:
        acceptor = Acceptor(sock, self._on_connect, name=self.name)
        acceptor.start()
        self._acceptors.append(acceptor)
        log.info("%s", kv(f"{self.name} listening", on=describe(sock)))

    def close(self) -> None:
        """Stop listening and close every connection (keep-alive ones included)."""
        for acceptor in self._acceptors:
            acceptor.close()
        for writer in list(self._writers):
            writer.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = identify(writer.get_extra_info("socket"), peername)
        reason = self._refusal(peer, peername)
        if reason is not None:
            if self.refusals.first(reason, peer):
                log.warning(
                    "%s",
                    kv(
                        f"{self.name} connection refused",
                        reason=reason,
                        **peer.describe(),
                        note="logged once per peer",
                    ),
                )
            writer.close()
            return
        self.open += 1
        self._per_peer[peer.key] += 1
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self.open -= 1
            self._per_peer[peer.key] -= 1
            if self._per_peer[peer.key] <= 0:
                del self._per_peer[peer.key]
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _refusal(self, peer: Peer, peername: object) -> str | None:
        """Why ``peer`` may not have another connection now (None: it may)."""
        if not peer_allowed(peername, self.allow_from):
            return "peer_not_allowed"
        if self.unix_peers is not None and peer.kind != "inet":
            refusal = self.unix_peers().refusal(peer)  # a UNIX peer: SO_PEERCRED
            if refusal is not None:
                return refusal
        if self.open >= self.max_connections:
            return "max_connections"
        if self._per_peer[peer.key] >= self.per_peer:
            return "max_connections_per_peer"
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        idle = self.first_byte_timeout  # a new connection starts its request at once
        while True:
            try:
                request = await self._read_request(conn, reader, idle)
            except _Reject as rej:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, Response(rej.status), close=True)
                return
            if request is None:
                return
            try:
                response = await self.handler(request)
            except Exception as exc:  # never a traceback to the client
                log.error("%s", kv(f"{self.name} handler failed", error=repr(exc)))
                response = Response(500)
            await self._send(conn, writer, response, close=False)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            idle = self.idle_timeout

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, idle: float
    ) -> Request | None:
        """The next request, None when the client closed between requests or sent
        nothing for ``idle`` seconds; limits raise."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # set once the request has begun
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Reject(exc.error_status_hint) from None
            if event is h11.NEED_DATA:
                wait = idle if deadline is None else deadline - loop.time()
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), max(wait, 0.001))
                except TimeoutError:
                    if deadline is None:
                        return None  # idle keep-alive connection: just close
                    raise _Reject(408) from None
                if deadline is None and data:
                    deadline = loop.time() + self.request_timeout
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
                if len(event.headers) > MAX_HEADERS:
                    raise _Reject(431)
                length = _content_length(event.headers)
                if length is not None and length > self.max_body:
                    raise _Reject(413)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise _Reject(413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, resp: Response, *, close: bool
    ) -> None:
        headers = [
            ("Content-Type", resp.content_type),
            ("Content-Length", str(len(resp.body))),
            *resp.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            data = conn.send(h11.Response(status_code=resp.status, headers=headers))
            data += conn.send(h11.Data(data=resp.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        writer.write(data or b"")
        try:  # a client that does not read its answers is not waited for forever
            await asyncio.wait_for(writer.drain(), self.request_timeout)
        except TimeoutError:
            writer.close()


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _request(head: h11.Request, body: bytes) -> Request:
    target = head.target.decode("ascii", "replace")
    parts = urlsplit(target)
    return Request(
        method=head.method.decode("ascii", "replace"),
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers={n.decode("latin-1").lower(): v.decode("latin-1") for n, v in head.headers},
        body=body,
    )
