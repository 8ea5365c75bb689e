"""Who may have another auth-socket connection now (the limits of
:mod:`saslnetauth.serve.authsocket.server`): the mail servers' users share the file
descriptors left for them (:mod:`saslnetauth.serve.authsocket.fdlimits`, no share
per peer: all of Postfix's smtpd processes are one user), every other peer
``max_connections`` and its share of them (``max_connections_per_peer``)."""

from __future__ import annotations

import logging
from collections import Counter

from saslnetauth.logfmt import kv
from saslnetauth.serve.authsocket.access import Peer, PeerPolicy, RefusalLog

__all__ = ["Admission"]

log = logging.getLogger("saslnetauth.serve.server")


class Admission:
    """The open connections, counted by peer; the refusal of one more."""

    def __init__(self) -> None:
        self.per_peer: Counter[str] = Counter()  # open connections by Peer.key
        self.open_mail = 0  # open connections of the mail servers' users
        self.open_other = 0
        self.refusals = RefusalLog()

    def refusal(
        self, peer: Peer, policy: PeerPolicy, *, max_connections: int, mail_connections: int
    ) -> str | None:
        """Why ``peer`` may not have another connection now (None: it may); a refusal
        is logged once per peer."""
        why = self._why(peer, policy, max_connections, mail_connections)
        if why is not None and self.refusals.first(why, peer):
            note = "logged once per peer"
            log.warning("%s", kv("connection refused", reason=why, **peer.describe(), note=note))
        return why

    def _why(
        self, peer: Peer, policy: PeerPolicy, max_connections: int, mail_connections: int
    ) -> str | None:
        not_allowed = policy.refusal(peer)
        if not_allowed is not None:
            return not_allowed
        if policy.mail_server(peer):
            # no share: all of Postfix's smtpd processes are one user (issue 21, item 6)
            if mail_connections and self.open_mail >= mail_connections:
                return "descriptor_limit"
            return None
        if self.open_other >= max_connections:
            return "max_connections"
        if self.per_peer[peer.key] >= policy.per_peer:
            return "max_connections_per_peer"
        return None

    def opened(self, peer: Peer, *, mail: bool) -> None:
        if mail:
            self.open_mail += 1
        else:
            self.open_other += 1
            self.per_peer[peer.key] += 1

    def closed(self, peer: Peer, *, mail: bool) -> None:
        if mail:
            self.open_mail -= 1
            return
        self.open_other -= 1
        self.per_peer[peer.key] -= 1
        if self.per_peer[peer.key] <= 0:
            del self.per_peer[peer.key]
