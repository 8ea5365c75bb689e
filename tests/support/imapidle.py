"""An IMAP session sitting in IDLE, for the tests that must see Dovecot end it
(tests/peers/test_revoke_sessions.py): raw IMAP over a socket from a chosen
source address (imaplib has no IDLE before Python 3.14)."""

from __future__ import annotations

import socket
from contextlib import suppress

from tests.support.net import PeerError

__all__ = ["ImapIdle"]


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapIdle:
    """An IMAP session from ``source_ip`` logged in as ``user``, INBOX selected and
    sitting in IDLE (RFC 2177), as a phone's mail client keeps one for days.

    :meth:`wait_closed` reads until the server closes the connection (True) or
    ``timeout`` passes (False); :meth:`done` ends the IDLE and tells whether the
    session still answers. Raises :class:`PeerError` when the login fails.
    """

    def __init__(self, host: str, port: int, source_ip: str, user: str, password: str) -> None:
        self.sock = socket.create_connection((host, port), 30, source_address=(source_ip, 0))
        self.file = self.sock.makefile("rb")
        self.lines: list[str] = []
        try:
            self._read_until("* ")
            self._command("a", f"LOGIN {_imap_quote(user)} {_imap_quote(password)}")
            self._command("b", "SELECT INBOX")
            self.sock.sendall(b"c IDLE\r\n")
            if not self._read_until("+").startswith("+"):
                raise PeerError(f"IDLE refused: {self.lines}")
        except BaseException:
            self.close()
            raise

    def _readline(self) -> str | None:
        raw = self.file.readline(65536)
        if not raw:
            return None
        line = raw.decode(errors="replace").rstrip("\r\n")
        self.lines.append(line)
        return line

    def _read_until(self, prefix: str) -> str:
        while True:
            line = self._readline()
            if line is None:
                raise PeerError(f"IMAP server closed the connection: {self.lines}")
            if line.startswith(prefix):
                return line

    def _command(self, tag: str, text: str) -> None:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        answer = self._read_until(f"{tag} ")
        if not answer.startswith(f"{tag} OK"):
            raise PeerError(f"IMAP {text.split()[0]} failed: {answer}")

    def wait_closed(self, timeout: float) -> bool:
        """True once the server has closed the connection (within ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            while self._readline() is not None:
                pass
        except TimeoutError:
            return False
        except OSError:
            return True  # reset by the server
        return True

    def done(self) -> bool:
        """End the IDLE: True when the server still answers it (``c OK``)."""
        self.sock.settimeout(30)
        try:
            self.sock.sendall(b"DONE\r\n")
            return self._read_until("c ").startswith("c OK")
        except (OSError, PeerError):
            return False

    def close(self) -> None:
        with suppress(OSError):
            self.file.close()
            self.sock.close()
