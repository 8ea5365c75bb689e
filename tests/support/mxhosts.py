"""Several MX hosts on one machine: each a network namespace of its own
(:func:`tests.support.remotehost.remote_host`: a veth pair, an address of its own)
running its own Postfix and its own ``saslnetauth serve``.

- Postfix: a :class:`tests.support.postfix.PostfixInstance` with its own config
  directory, queue and data directory (``postfix -c DIR``, run as root: Postfix
  3.7 asks for ``alternate_config_directories`` only from unprivileged users of
  its set-gid programs, so no default instance is involved), listening on port 25
  of the namespace's address alone; every Postfix command runs in the namespace
  (:class:`NetnsRoot`), so master and all its children live there.
- ``saslnetauth serve``: started through ``nsenter --net`` (:data:`NetnsRoot.wrap`).
  Postfix reaches it through UNIX sockets, which a network namespace does not
  separate; it reaches the shared Redis over TCP through its veth (a server bound
  to our end of every veth) and PostgreSQL through PostgreSQL's own UNIX socket
  (:func:`pg_over_socket`: the server listens on loopback, which is every
  namespace's own).

The test's SMTP client connects from this namespace to each host's address, so each
Postfix sees it as a remote client (our end of that host's veth).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tests.support.peers import missing
from tests.support.roots import Root

PG_SOCKET_DIR = os.environ.get("SASLNETAUTH_TEST_PG_SOCKET", "/var/run/postgresql")


@dataclass(frozen=True)
class NetnsRoot(Root):
    """This machine's programs, run in the network namespace ``netns``."""

    netns: str = ""

    @property
    def wrap(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def cmd(self, *argv: str) -> list[str]:
        return [*self.wrap, *super().cmd(*argv)]


def pg_over_socket(url: str) -> str:
    """The database ``url`` (PostgreSQL on loopback) through the server's UNIX socket."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if not os.path.exists(os.path.join(PG_SOCKET_DIR, f".s.PGSQL.{parsed.port or 5432}")):
        missing(f"PostgreSQL's UNIX socket in {PG_SOCKET_DIR} (SASLNETAUTH_TEST_PG_SOCKET)")
    over = parsed._replace(host=None).update_query_dict({"host": PG_SOCKET_DIR})
    return over.render_as_string(hide_password=False)
