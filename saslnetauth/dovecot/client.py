"""A small blocking client of the Dovecot auth protocol. Standard library only.

Used by ``saslnetauth-checkpassword``'s fast path to ask a running
``saslnetauth serve``, so it must stay light: no SQLAlchemy, passlib or
click here, nor in anything it imports.
"""

from __future__ import annotations

import _socket
import binascii
import os

from saslnetauth.dovecot.escaping import unescape

__all__ = ["AuthClientError", "AuthReply", "AuthServerUnreachable", "authenticate_plain", "connect"]

#: Longest reply line we read from the server.
MAX_REPLY = 16 * 1024


class AuthClientError(Exception):
    """The server could not be reached, did not answer in time or broke the protocol."""


class AuthServerUnreachable(AuthClientError):
    """No server accepted the connection (nothing listens there): only then may a
    caller decide without it. A server that accepted and then failed or was slow
    raises plain :class:`AuthClientError`."""


class AuthReply:
    __slots__ = ("fields", "ok", "temp", "user")

    def __init__(self, ok: bool, temp: bool, user: str | None, fields: dict[str, str]) -> None:
        self.ok = ok
        self.temp = temp
        self.user = user
        self.fields = fields


def connect(address: str, timeout: float) -> _socket.socket:
    """Connect to ``/path``, ``unix:/path``, ``inet:HOST:PORT`` or ``inet:[V6]:PORT``.

    A UNIX socket is made with ``_socket`` (the C module behind ``socket``, whose
    Python layer imports selectors and enum, paid once per login: issue 26); TCP
    uses ``socket.create_connection``.
    """
    try:
        if address.startswith("inet:"):
            import socket

            rest = address[5:]
            if rest.startswith("["):
                host, _, port = rest[1:].partition("]:")
            else:
                host, _, port = rest.rpartition(":")
            return socket.create_connection((host, int(port)), timeout=timeout)
        path = address[5:] if address.startswith("unix:") else address
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock
    except (OSError, ValueError) as exc:
        raise AuthServerUnreachable(f"cannot connect to {address}: {exc}") from None


class _Lines:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self) -> str:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_REPLY:
                raise AuthClientError("reply line too long")
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise AuthClientError("the auth server did not answer in time") from None
            except OSError as exc:
                raise AuthClientError(f"read failed: {exc}") from None
            if not chunk:
                raise AuthClientError("connection closed by the auth server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def _clean(value: str) -> str:
    """Make a parameter value safe for a TAB-separated line."""
    return "".join(c for c in value if c not in "\t\n\r\x00\x01")


def authenticate_plain(
    address: str,
    username: bytes,
    password: bytes,
    *,
    service: str,
    rip: str | None = None,
    lip: str | None = None,
    timeout: float = 10.0,
    real_rip: str | None = None,
) -> AuthReply:
    """One PLAIN login over a fresh connection; raises AuthClientError.

    The request goes out with the connection, before the server's handshake is
    read (as Postfix sends its VERSION and CPID): the server reads it after
    writing its handshake, and the login saves a round trip. The handshake is
    still checked (protocol version 1, PLAIN offered) before the reply counts.
    """
    sock = connect(address, timeout)
    try:
        try:
            sock.sendall(_request(username, password, service, (rip, lip, real_rip)))
        except OSError as exc:
            raise AuthClientError(f"write failed: {exc}") from None
        lines = _Lines(sock)
        _check_handshake(lines)
        return _reply(lines)
    finally:
        sock.close()


def _request(
    username: bytes,
    password: bytes,
    service: str,
    addresses: tuple[str | None, str | None, str | None],
) -> bytes:
    rip, lip, real_rip = addresses
    plain = b"\0" + username + b"\0" + password  # binascii: base64 imports re and struct
    resp = binascii.b2a_base64(plain, newline=False).decode("ascii")
    request = f"AUTH\t1\tPLAIN\tservice={_clean(service)}\tnologin"
    if lip:
        request += f"\tlip={_clean(lip)}"
    if rip:
        request += f"\trip={_clean(rip)}"
    if real_rip:  # the connecting address (docs/webmail.md)
        request += f"\treal_rip={_clean(real_rip)}"
    request += f"\tresp={resp}\n"
    return f"VERSION\t1\t2\nCPID\t{os.getpid()}\n{request}".encode()


def _check_handshake(lines: _Lines) -> None:
    mechs = set()
    while True:
        line = lines.next()
        if line == "DONE":
            break
        parts = line.split("\t")
        if parts[0] == "VERSION" and parts[1:2] != ["1"]:
            raise AuthClientError(f"incompatible auth protocol: {line!r}")
        if parts[0] == "MECH" and len(parts) > 1:
            mechs.add(parts[1].upper())
    if "PLAIN" not in mechs:
        raise AuthClientError("the auth server does not offer PLAIN")


def _reply(lines: _Lines) -> AuthReply:
    while True:
        parts = lines.next().split("\t")
        if len(parts) >= 2 and parts[1] == "1" and parts[0] in ("OK", "FAIL"):
            break
    fields: dict[str, str] = {}
    flags = set()
    for arg in parts[2:]:
        key, eq, value = arg.partition("=")
        if eq:
            fields[key] = unescape(value)
        else:
            flags.add(arg)
    temp = "temp" in flags or fields.get("code") == "temp_fail"
    return AuthReply(parts[0] == "OK", temp, fields.get("user"), fields)
