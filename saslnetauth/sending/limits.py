"""The sending decision: one policy request in, one Postfix action out.

For an authenticated session (``sasl_username`` set; anything else is
``DUNNO``: not this server's business) the credential comes from
:mod:`saslnetauth.sending.logins`, its limits from the database (its own, for
an app password then the user's, then ``[sending]``'s; 0 = none; kept in
memory until the database says they changed, :mod:`saslnetauth.sending.rows`), multiplied
by ``[sending] outside_factor`` when the login came from outside the user's
own networks. ``RCPT`` counts one recipient, ``END-OF-MESSAGE`` one message
(and ``recipient_count`` recipients when no ``RCPT`` of that message was seen
on the connection: Exim's data ACL). Counters are per credential (limited)
and per user (counted only, for ``sending show``).

Over a limit: ``450 4.7.1`` (an explicit 4xx: every SMTP client retries it,
whatever restrictions follow; ``DEFER_IF_PERMIT`` would depend on them), a
WARNING line, and a deferral counted in ``[sending] suspend_window``; at
``suspend_after`` of them the credential is suspended in the database
(:mod:`saslnetauth.policy.suspension`) and ``alert_command`` runs with
``SASLNETAUTH_EVENT=suspended``. A state store or database that does not
answer defers (``451 4.3.0``): fail closed, the mail waits in the client's queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from saslnetauth.logfmt import kv
from saslnetauth.policy.suspension import OUTSIDE, OWN
from saslnetauth.sending.linked import MAIN, WINDOWS, CredentialPlan, LinkedTake, take_linked
from saslnetauth.sending.logins import LoginLink, LoginLinks
from saslnetauth.sending.protocol import PolicyRequest
from saslnetauth.sending.rows import SettingsCache
from saslnetauth.sending.state import DAY, HOUR, Counter, SendingState, Window
from saslnetauth.settings import SendingConfig
from saslnetauth.store.sending import CredentialLimits, SendingRow

__all__ = [
    "DUNNO",
    "Connection",
    "SendingPolicy",
    "counter_key",
    "credential_name",
    "credential_plans",
    "effective_limits",
]

log = logging.getLogger("saslnetauth.sending")

DUNNO = "DUNNO"
UNAVAILABLE = "451 4.3.0 Sending limits cannot be checked now, please try again later"
SUSPENDED_TEXT = "450 4.7.1 This login is suspended for sending too much, please contact support"
#: (counter kind, window) -> words of the deferral text
_WORDS = {
    ("rcpt", "hour"): "recipients in the last hour",
    ("rcpt", "day"): "recipients in the last day",
    ("msg", "hour"): "messages in the last hour",
    ("msg", "day"): "messages in the last day",
}
#: Instances (messages) remembered per connection for the RCPT / END-OF-MESSAGE link.
MAX_INSTANCES = 64


@dataclass
class Connection:
    """What one policy connection remembers: the messages whose RCPTs it counted."""

    instances: dict[str, None] = field(default_factory=dict)

    def saw(self, instance: str) -> None:
        self.instances.pop(instance, None)
        self.instances[instance] = None
        while len(self.instances) > MAX_INSTANCES:
            del self.instances[next(iter(self.instances))]


def effective_limits(
    cfg: SendingConfig, row: SendingRow | None, link: LoginLink
) -> tuple[dict[str, int], bool]:
    """The limits of the session's credential after the outside factor, and whether it
    is suspended in the database."""
    own: list[CredentialLimits] = []
    suspended = False
    if row is not None:
        app = row.apps.get(link.credential) if link.credential is not None else None
        if app is not None:
            own.append(app)
            suspended = app.suspended_at is not None
        else:
            suspended = link.credential is None and row.main.suspended_at is not None
        own.append(row.main)  # an app password without its own limit: the user's
    out: dict[str, int] = {}
    for key in (
        "messages_per_hour",
        "recipients_per_hour",
        "messages_per_day",
        "recipients_per_day",
    ):
        value = next((c.limits[key] for c in own if c.limits.get(key) is not None), None)
        limit = int(getattr(cfg, key) if value is None else value)
        if limit > 0 and link.origin == OUTSIDE:
            limit = max(1, int(limit * cfg.outside_factor))
        out[key] = limit
    return out, suspended


def credential_plans(
    cfg: SendingConfig, row: SendingRow | None
) -> dict[str, dict[str, CredentialPlan]]:
    """Per counter kind ("rcpt", "msg"), every credential's plan by credential name."""
    labels: list[str | None] = [None, *sorted(row.apps)] if row is not None else [None]
    out: dict[str, dict[str, CredentialPlan]] = {"rcpt": {}, "msg": {}}
    for label in labels:
        own, _ = effective_limits(cfg, row, LoginLink(label, OWN))
        outside, _ = effective_limits(cfg, row, LoginLink(label, OUTSIDE))
        at = _suspended_at(row, label)
        for what, noun in (("rcpt", "recipients"), ("msg", "messages")):
            out[what][credential_name(label)] = CredentialPlan(
                (own[f"{noun}_per_hour"], own[f"{noun}_per_day"]),
                (outside[f"{noun}_per_hour"], outside[f"{noun}_per_day"]),
                at,
            )
    return out


def _suspended_at(row: SendingRow | None, label: str | None) -> float:
    """When the credential was suspended (Unix time), 0.0 when it is not."""
    if row is None:
        return 0.0
    limits = row.main if label is None else row.apps[label]
    when = limits.suspended_at
    if when is None:
        return 0.0
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def credential_name(credential: str | None) -> str:
    return "main" if credential is None else f"app:{credential}"


def counter_key(
    prefix: str, kind: str, user: str, credential: str | None, what: str, w: Window
) -> str:
    """``kind`` "c" (a credential's, limited), "u" (the user's) or "x" (deferrals)."""
    return f"{prefix}{kind}:{len(user)}:{user}:{credential_name(credential)}:{what}:{w.name}"


class SendingPolicy:
    """Answers policy requests (one instance per server; on the event loop)."""

    def __init__(
        self,
        cfg: SendingConfig,
        state: SendingState,
        links: LoginLinks,
        read_row: Callable[[str], SendingRow | None],
        suspend: Callable[[str, str | None], bool],
        *,
        read_version: Callable[[], tuple[Any, ...] | None] | None = None,
        read_rows: Callable[[int], dict[str, SendingRow] | None] | None = None,
        prefix: str = "saslnetauth:",
        cache_seconds: float = 1.0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.links = links
        self.read_row = read_row
        self.read_rows = read_rows
        self.suspend = suspend
        self.prefix = prefix
        self.cache_seconds = cache_seconds
        #: told ("defer" | "suspended" | "unavailable", fields) for metrics and alerts
        self.on_event = on_event
        self.clock = clock
        #: each user's row and plans (:mod:`saslnetauth.sending.rows`); with no
        #: ``read_version`` (nothing tells a change) a row is re-read every decision;
        #: ``read_rows`` reads every user's after a change (preload)
        self.rows: SettingsCache[tuple[SendingRow | None, dict[str, dict[str, CredentialPlan]]]]
        self.rows = SettingsCache(
            self._read,
            read_version or (lambda: None),
            cache_seconds if read_version is not None else 0.0,
            read_all=None if read_rows is None else self._read_all,
        )
        self._down = False

    def key(self, kind: str, user: str, credential: str | None, what: str, w: Window) -> str:
        return counter_key(self.prefix, kind, user, credential, what, w)

    async def answer(self, req: PolicyRequest, conn: Connection) -> str:
        """The action for ``req`` (never raises)."""
        user = req.get("sasl_username")
        state = req.state
        if not user or state not in ("RCPT", "END-OF-MESSAGE"):
            return DUNNO
        try:
            action = await self._answer(req, conn, user, state)
        except Exception as exc:  # the state store, the database: fail closed, mail waits
            if not self._down:
                log.error("%s", kv("sending limits unavailable", error=str(exc)))
            self._down = True
            self._event("unavailable", {"user": user})
            return UNAVAILABLE
        if self._down:
            log.info("%s", kv("sending limits available again"))
            self._down = False
        return action

    async def _answer(self, req: PolicyRequest, conn: Connection, user: str, state: str) -> str:
        client = req.get("client_address")
        link_key = self.links.key(user, client)
        name = user.lower() if self.links.lowercase else user
        row, plans = await self.rows.get(name)
        if row is not None:
            name = row.user
        instance = req.get("instance")
        take = functools.partial(self._take, name, link_key, client, plans=plans)
        if state == "RCPT":
            if instance:
                conn.saw(instance)
            return await take("rcpt", 1)
        if instance not in conn.instances:  # no RCPT seen: count them now
            rcpts = req.count("recipient_count")
            if rcpts > 0:
                action = await take("rcpt", rcpts)
                if action != DUNNO:
                    return action
        return await take("msg", 1)

    async def _take(
        self,
        user: str,
        link_key: str,
        client: str,
        what: str,
        amount: int,
        *,
        plans: dict[str, dict[str, CredentialPlan]],
    ) -> str:
        """One decision: one step of the state store (one Redis round trip)."""
        noun = "recipients" if what == "rcpt" else "messages"
        now = self.clock()
        req = LinkedTake(
            link_key,
            now - self.links.ttl,
            f"{self.prefix}c:{len(user)}:{user}:",
            f":{what}:",
            plans[what],
            (
                Counter(self.key("u", user, None, what, HOUR), HOUR),
                Counter(self.key("u", user, None, what, DAY), DAY),
            ),
            amount,
            now,
        )
        taken = await take_linked(self.state, req)
        if taken.suspended is not None:
            return SUSPENDED_TEXT
        if taken.ok:
            return DUNNO
        cred, origin = taken.over_credential
        window = WINDOWS[taken.over % len(WINDOWS)].name
        fields: dict[str, Any] = {
            "user": user,
            "credential": cred,
            "client": client or "-",
            "origin": origin,
            "limit": f"{noun}_per_{window}",
            "count": taken.counts[taken.over],
            "max": taken.limits[taken.over],
            "window": window,
        }
        if len(taken.credentials) > 1:  # behind one address: all counted, the tightest hit
            fields["candidates"] = ",".join(c for c, _ in taken.credentials)
        log.warning("%s", kv("sending deferred", **fields))
        self._event("defer", fields)
        label = None if cred == MAIN else cred.removeprefix("app:")
        await self._deferred(user, label, fields, now)
        return f"450 4.7.1 Too many {_WORDS[(what, window)]}, please try again later"

    async def _deferred(
        self, user: str, cred: str | None, fields: dict[str, Any], now: float
    ) -> None:
        """Count the deferral; suspend the credential at ``suspend_after`` of them."""
        after = self.cfg.suspend_after
        window = Window("suspend", self.cfg.suspend_window, 60)
        c = Counter(self.key("x", user, cred, "defer", window), window)
        taken = await self.state.take([c], 1, now)
        if after <= 0 or taken.counts[0] + 1 < after:
            return
        newly = await asyncio.to_thread(self.suspend, user, cred)
        self.rows.forget(user)
        if newly:
            log.warning("%s", kv("credential suspended", **fields, deferrals=taken.counts[0] + 1))
            self._event("suspended", fields)

    def _read(self, name: str) -> tuple[SendingRow | None, dict[str, dict[str, CredentialPlan]]]:
        """The user's row and plans (in a thread)."""
        row = self.read_row(name)
        return row, credential_plans(self.cfg, row)

    def _read_all(
        self, most: int
    ) -> dict[str, tuple[SendingRow | None, dict[str, dict[str, CredentialPlan]]]] | None:
        """Every user's row and plans (in a thread); None over ``most`` users."""
        assert self.read_rows is not None
        rows = self.read_rows(most)
        if rows is None:
            return None
        # users without app passwords whose settings are one value (the store gives
        # most users the same: no limit of their own) share its plans (read only);
        # every row is alive until the end, so an id names one value
        same: dict[int, dict[str, dict[str, CredentialPlan]]] = {}
        out: dict[str, tuple[SendingRow | None, dict[str, dict[str, CredentialPlan]]]] = {}
        for name, row in rows.items():
            if row.apps:
                out[name] = (row, credential_plans(self.cfg, row))
                continue
            plans = same.get(id(row.main))
            if plans is None:
                plans = same[id(row.main)] = credential_plans(self.cfg, row)
            out[name] = (row, plans)
        return out

    def _event(self, what: str, fields: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(what, fields)
            except Exception:
                log.exception("sending event hook failed")
