"""Listening sockets for ``saslnetauth serve``: UNIX, TCP and systemd socket activation.

Addresses: ``unix:/path/to/socket``, ``inet:HOST:PORT``, ``inet:[IPv6]:PORT``.
UNIX sockets get the configured mode, owner and group (so that one can live
in Postfix's chroot ``private/`` directory, owned by postfix). The socket is
bound in a private directory (mode 0700, created next to it), given its
owner and mode there, and then renamed into place: a symbolic link planted
at the socket's path (or swapped in while we work) is replaced, never
followed, so it cannot make us chown or chmod another file. A stale socket
file is replaced; one that a running server still answers on is an error.

TCP listeners must be on a loopback address unless ``allow_remote`` is
given (``[serve] allow_remote_listen``): whoever can connect chooses the
client address (``rip=``) of the logins it sends. Sockets passed by systemd
(``LISTEN_FDS``/``LISTEN_PID``, see sd_listen_fds(3)) are used as they
are, after the same address check (:func:`check_inherited`).
A UNIX socket file is never removed when the server stops (under socket
activation it is the file systemd still listens on); the listeners are
served by :class:`saslnetauth.serve.authsocket.acceptor.Acceptor`, not asyncio's
servers, which since Python 3.13 unlink it.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import ipaddress
import os
import pwd
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from saslnetauth.errors import ConfigError

__all__ = [
    "ListenAddress",
    "bind",
    "check_inherited",
    "is_loopback",
    "parse_listen",
    "sd_notify",
    "systemd_sockets",
]

BACKLOG = 1024
SD_LISTEN_FDS_START = 3
#: Path of each UNIX socket we bound, by file descriptor (its own name is the
#: private directory it was bound in).
_UNIX_PATHS: dict[int, str] = {}


@dataclass(frozen=True, slots=True)
class ListenAddress:
    kind: str  # "unix" or "inet"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Parse ``unix:/path`` or ``inet:HOST:PORT`` (``inet:[::1]:PORT``)."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("unix", "inet") or not rest:
        raise ConfigError(
            f"invalid listen address {text!r}: use unix:/path/to/socket or inet:HOST:PORT"
        )
    if kind == "unix":
        if not rest.startswith("/"):
            raise ConfigError(f"invalid listen address {text!r}: the socket path must be absolute")
        return ListenAddress("unix", path=rest)
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
        if not sep:
            raise ConfigError(f"invalid listen address {text!r}: use inet:[IPv6]:PORT")
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(
                f"invalid listen address {text!r}: use inet:HOST:PORT (IPv6: inet:[::1]:PORT)"
            )
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ConfigError(f"invalid port in listen address {text!r}")
    if not host:
        raise ConfigError(f"invalid listen address {text!r}: missing host")
    return ListenAddress("inet", host=host, port=int(port_text))


def _resolve_uid(owner: str) -> int:
    if not owner:
        return -1
    if owner.isascii() and owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ConfigError(f"socket_owner: no such user {owner!r}") from None


def _resolve_gid(group: str) -> int:
    if not group:
        return -1
    if group.isascii() and group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"socket_group: no such group {group!r}") from None


def _remove_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale socket of a server that is gone
        return
    except OSError as exc:
        raise ConfigError(f"cannot probe existing socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise ConfigError(f"another server is already listening on {path}")


def bind(
    addr: ListenAddress,
    *,
    mode: str = "0660",
    owner: str = "",
    group: str = "",
    allow_remote: bool = False,
) -> socket.socket:
    """Create, bind and listen on ``addr``. Raises ConfigError with a clear message."""
    if addr.kind == "unix":
        return _bind_unix(Path(addr.path), int(mode, 8), _resolve_uid(owner), _resolve_gid(group))
    return _bind_inet(addr, allow_remote)


def _bind_unix(path: Path, mode: int, uid: int, gid: int) -> socket.socket:
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create directory {path.parent}: {exc.strerror}") from None
    _remove_stale(path)
    try:
        private = tempfile.mkdtemp(prefix=".sna", dir=path.parent)  # mode 0700, ours
    except OSError as exc:
        raise ConfigError(f"cannot create a directory in {path.parent}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dir_fd = -1
    try:
        dir_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        old_umask = os.umask(0o177)  # nobody can connect before chmod
        try:
            sock.bind(os.path.join(private, "s"))
        finally:
            os.umask(old_umask)
        # nobody else can write into the private directory: these names are ours
        if uid != -1 or gid != -1:
            os.chown("s", uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        os.chmod("s", mode, dir_fd=dir_fd)
        os.rename("s", path, src_dir_fd=dir_fd)  # replaces a planted link, never follows it
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot create socket {path}: {exc.strerror or exc}") from None
    finally:
        if dir_fd != -1:
            with contextlib.suppress(OSError):
                os.unlink("s", dir_fd=dir_fd)
            os.close(dir_fd)
        with contextlib.suppress(OSError):
            os.rmdir(private)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    _UNIX_PATHS[sock.fileno()] = str(path)
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, IPv4-mapped IPv6 included) is a loopback address."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _refuse_remote(what: str) -> ConfigError:
    return ConfigError(
        f"refusing to listen on {what}: not a loopback address, and whoever can connect "
        "chooses the client address (rip=) of the logins it sends; keep TCP on 127.0.0.1 "
        "or ::1 (or use a UNIX socket), or set [serve] allow_remote_listen = true and "
        "list the mail servers in [serve] allowed_tcp_peers"
    )


def _bind_inet(addr: ListenAddress, allow_remote: bool = False) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {addr}: {exc.strerror}") from None
    family, socktype, proto, _, sockaddr = infos[0]
    if not allow_remote and not is_loopback(str(sockaddr[0])):
        raise _refuse_remote(str(addr))
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        what = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"cannot listen on {addr}: {what}") from None
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def check_inherited(sock: socket.socket, allow_remote: bool) -> None:
    """The listen-address rule of :func:`bind`, for a socket systemd passed us."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not allow_remote:
        host = str(sock.getsockname()[0])
        if not is_loopback(host):
            raise _refuse_remote(f"{describe(sock)} (from systemd)")


def systemd_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation, if this process got any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def sd_notify(message: str) -> None:
    """Tell systemd about our state (Type=notify); silently nothing without systemd."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(target)
        s.sendall(message.encode())


def describe(sock: socket.socket) -> str:
    if sock.fileno() in _UNIX_PATHS:
        return f"unix:{_UNIX_PATHS[sock.fileno()]}"
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode(errors='replace')}"
    host, port = name[0], name[1]
    return f"inet:[{host}]:{port}" if ":" in host else f"inet:{host}:{port}"
