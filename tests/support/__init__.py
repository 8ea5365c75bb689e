"""Real-peer harness: private Postfix, Dovecot and Exim instances on loopback.

Works with any server speaking Dovecot's auth-client protocol on a UNIX
socket or ``inet:HOST:PORT`` (saslnetauth, or Dovecot itself as the
reference, see tests/peers/test_reference.py):

- :mod:`tests.support.net`: ports, waiting, world-searchable temp dirs,
  source addresses (127.0.0.2 allowed, 127.0.0.3 denied, ::1), clean-up.
- :mod:`tests.support.postfix`: :class:`PostfixInstance` rendering the shipped
  ``dovecot-examples/postfix/main.cf``; smtplib and swaks clients.
- :mod:`tests.support.exim`: :class:`EximHostCheck` rendering the shipped
  ``dovecot-examples/exim/saslnetauth-authenticators.conf``; ``exim4 -bh``.
- :mod:`tests.support.dovecot`: :class:`DovecotInstance`; ``doveadm auth test``
  and IMAP clients.
- :mod:`tests.support.roots`: which release's peers run: this machine's
  (Debian 12) or the Debian 13 chroot's (``root=`` of the Postfix and Exim
  helpers); :mod:`tests.support.chrootvenv` runs the tests under the chroot's
  Python.

A missing program or system user goes through :func:`tests.peers.missing`:
a loud skip locally, a failure in CI. Everything needs root.
"""

from __future__ import annotations

from tests.support.dovecot import (
    AuthTest,
    DovecotInstance,
    checkpassword_passdb,
    doveadm_auth_test,
    imap_login,
    passwd_file_passdb,
    passwd_file_userdb,
    passwd_line,
    prefetch_userdb,
    static_userdb,
)
from tests.support.exim import EximHostCheck, EximSession
from tests.support.net import (
    ALLOWED_IP,
    DENIED_IP,
    IPV6_IP,
    PeerError,
    free_port,
    ipv6_loopback_usable,
    loopback_for,
    make_peer_dir,
    peer_tmpdir,
    require_source_addresses,
    source_address_usable,
    tcp_listening,
    unix_listening,
    wait_for,
    wait_port,
    wait_unix,
)
from tests.support.postfix import (
    LOCAL_DOMAIN,
    LOCAL_RECIPIENT,
    OUTSIDE_DOMAIN,
    OUTSIDE_RECIPIENT,
    PostfixInstance,
    RelayResult,
    smtp_inbound,
    smtp_login,
    smtp_relay,
    swaks,
)

__all__ = [
    "ALLOWED_IP",
    "DENIED_IP",
    "IPV6_IP",
    "LOCAL_DOMAIN",
    "LOCAL_RECIPIENT",
    "OUTSIDE_DOMAIN",
    "OUTSIDE_RECIPIENT",
    "AuthTest",
    "DovecotInstance",
    "EximHostCheck",
    "EximSession",
    "PeerError",
    "PostfixInstance",
    "RelayResult",
    "checkpassword_passdb",
    "doveadm_auth_test",
    "free_port",
    "imap_login",
    "ipv6_loopback_usable",
    "loopback_for",
    "make_peer_dir",
    "passwd_file_passdb",
    "passwd_file_userdb",
    "passwd_line",
    "peer_tmpdir",
    "prefetch_userdb",
    "require_source_addresses",
    "smtp_inbound",
    "smtp_login",
    "smtp_relay",
    "source_address_usable",
    "static_userdb",
    "swaks",
    "tcp_listening",
    "unix_listening",
    "wait_for",
    "wait_port",
    "wait_unix",
]
