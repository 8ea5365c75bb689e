"""Dovecot's authentication policy server protocol, answered with saslnetauth's networks.

Dovecot (2.3 and 2.4) POSTs JSON to ``auth_policy_server_url`` with
``?command=allow`` (before and/or after it checks the password) and
``?command=report`` (after). We answer ``{"status": 0}`` (allow),
``{"status": N}`` with N > 0 (allow after a tarpit of N seconds: the
per-client brake) or ``{"status": -1, "msg": ...}`` (refuse). Dovecot
ignores the answer to ``report``. The body carries ``login``, ``remote``
and ``protocol`` (Dovecot's default attributes), 2.4 adds ``fail_type``;
no password ever comes.

The decision is the network half of the engine (docs/dovecot.md, "Policy endpoint"): the
client address must lie in the user's networks (when saslnetauth knows the
user) or in a global network that applies to ``protocol``; users unknown to
saslnetauth get the global networks only, or are refused
(``[policy] unknown_users``); disabled users are refused, and so is a user
whose main password may not log in to ``protocol`` (``app_password_required``:
Dovecot's passdb holds the main passwords only, so every login checked here
is one with the main password). Anything that goes
wrong answers -1 (fail closed; Dovecot itself refuses on an HTTP error when
``auth_policy_reject_on_fail = yes``, which the shipped snippets set).

``report`` feeds the brake, the verdict record, the log line fail2ban reads,
the metrics and, in ``after_auth`` mode (where ``allow`` is asked only after a
correct password), the stolen-password alert. A report only adds evidence: a
failure raises the client's brake, a success never lowers it.

Every request must carry the shared secret (``[policy] api_header``, Dovecot's
``auth_policy_server_api_header``; ``serve`` does not start the listener
without one), compared in constant time; anything else is answered 401, counted
(``command="unauthorized"``) and logged once a minute at most.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from saslnetauth.errors import InvalidUsernameError
from saslnetauth.events.authlog import Record
from saslnetauth.logfmt import kv
from saslnetauth.policy.model import UserRecord, normalize_username
from saslnetauth.policy.proxies import Case
from saslnetauth.policy.rules.netrules import RuleSet
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.decide.penalty import client_bucket
from saslnetauth.serve.decide.sharedpenalty import Step
from saslnetauth.serve.http.policyrequest import PolicyRequest, decide_network, parse_request
from saslnetauth.serve.http.server import Request, Response
from saslnetauth.settings import PolicyConfig

if TYPE_CHECKING:
    from saslnetauth.serve.authsocket.server import AuthServer
    from saslnetauth.serve.http.policyproxy import PolicyProxies, Routed

__all__ = ["PolicyService"]

log = logging.getLogger("saslnetauth.auth")

MAX_REMEMBERED = 10000
#: Refused (unauthorised) requests are logged at most once per this many seconds.
REFUSAL_LOG_SECONDS = 60.0


def _json(obj: dict[str, object], status: int = 200) -> Response:
    return Response(status, json.dumps(obj).encode())


class PolicyService:
    """The HTTP handler: ``POST ...?command=allow|report``."""

    def __init__(
        self,
        server: AuthServer,
        settings: PolicyConfig,
        get_user: Callable[[str], UserRecord | None],
        global_rules: Callable[[], RuleSet],
        *,
        record: Record | None = None,
        clock: Callable[[], float] = time.time,
        main_default: frozenset[str] | None = None,
    ) -> None:
        self.server = server
        #: [passwords] main_password_services, parsed (None: everywhere)
        self.main_default = main_default
        #: Wall-clock time (UNIX seconds) against which grants expire.
        self.clock = clock
        self.settings = settings
        self.get_user = get_user
        self.global_rules = global_rules
        self.record = record
        # one thread keeps the (blocking) database lookups off the event loop
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")
        name, _, value = settings.api_header.partition(":")
        secret = value.strip().encode()
        self._api = (name.strip().lower(), secret) if name.strip() and secret else None
        #: refused requests since the last log line about them (one per minute at most)
        self._refused = 0
        self._refusal_logged = -math.inf
        #: why allow refused (user, remote), for the report that follows; bounded
        self._last_reason: dict[tuple[str, str], Reason] = {}
        #: proxies hook: trusted proxies and webmail sessions (None: none configured)
        self.proxies: PolicyProxies | None = None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def authorized(self, request: Request) -> bool:
        """Does the request carry the shared secret (``api_header``)? Compared in
        constant time; without a configured secret nothing is (fail closed)."""
        if self._api is None:
            return False
        given = request.headers.get(self._api[0], "").strip().encode("latin-1")
        return hmac.compare_digest(given, self._api[1])

    def _unauthorized(self) -> Response:
        self._count("unauthorized", "-1")
        now = time.monotonic()
        self._refused += 1
        if now >= self._refusal_logged + REFUSAL_LOG_SECONDS:
            log.warning(
                "%s",
                # refused: since the previous such line (one a minute at most)
                kv("policy request refused: no or wrong api header", refused=self._refused),
            )
            self._refusal_logged, self._refused = now, 0
        return _json({"status": -1, "msg": "unauthorized"}, 401)

    async def handle(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._unauthorized()
        if request.method != "POST":
            return _json({"status": -1, "msg": "method not allowed"}, 405)
        command = request.query.get("command", "")
        if command not in ("allow", "report"):
            return _json({"status": -1, "msg": "unknown command"}, 400)
        try:
            req = parse_request(request.body)
        except ValueError as exc:
            log.warning("%s", kv("policy request refused", error=str(exc)))
            self._count(command, "-1")
            return _json({"status": -1, "msg": "bad request"}, 400)
        if command == "report":
            self.report(req)
            self._count("report", "0")
            return _json({"status": 0})
        status = await self.allow(req)
        self._count("allow", str(max(-1, min(status, 1))))
        if status < 0:
            return _json({"status": -1, "msg": self.settings.reject_message})
        return _json({"status": status})

    def _count(self, command: str, status: str) -> None:
        self.server.metrics.count_policy(command, status)

    # -- allow -----------------------------------------------------------------------

    async def _lookup(
        self, name: str, req: PolicyRequest
    ) -> tuple[UserRecord | None, RuleSet, Routed | None]:
        """The user, the global networks and the proxy route, from the lookup thread. Its
        queue holds at most one lookup per open connection (Dovecot waits for each
        answer), and a lookup that times out while still queued is cancelled, never run."""

        def work() -> tuple[UserRecord | None, RuleSet, Routed | None]:
            user = self.get_user(name)
            routed = None if self.proxies is None else self.proxies.route(req, user)
            return user, self.global_rules(), routed

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work)

    async def allow(self, req: PolicyRequest) -> int:
        """-1 refuse, 0 allow, N > 0 allow after N seconds (brake)."""
        try:
            name = normalize_username(req.login)
        except InvalidUsernameError:
            return -1
        try:
            user, global_rules, routed = await asyncio.wait_for(
                self._lookup(name, req), self.settings.lookup_timeout
            )
        except Exception as exc:  # fail closed
            log.error("%s", kv("policy lookup failed", user=name, error=repr(exc)))
            return -1
        geoip = self.server.geoip
        judged = req if routed is None else routed.req  # proxies hook
        allowed, reason = False, Reason.PROXY_WITHOUT_CLIENT_ADDRESS
        if judged is not None:
            allowed, reason = decide_network(
                user,
                global_rules,
                judged,
                self.settings.unknown_users,
                geoip.geo if geoip is not None else None,
                now=self.clock(),
                main_default=self.main_default,
            )
        if routed is not None and self.proxies is not None:  # proxies hook
            allowed, reason = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.proxies.settle, routed, user, allowed, reason
            )
        if not allowed:
            if self.settings.mode == "after_auth" and reason in (
                Reason.NETWORK,
                Reason.NO_NETWORK_RULES,
            ):
                # allow is asked only after a correct password: likely stolen credentials
                self.server.stats["stolen_credentials"] += 1
                log.warning(
                    "%s",
                    kv(
                        "auth fail",
                        user=name,
                        service=req.protocol or None,
                        rip=req.attempt.shown_rip,
                        reason=reason.value,
                        credentials_valid=True,
                        via="policy",
                    ),
                )
                self.server.alerts.fire(name, req.attempt, reason.value)
            if len(self._last_reason) >= MAX_REMEMBERED:
                del self._last_reason[next(iter(self._last_reason))]
            self._last_reason[(name, req.remote)] = reason
            return -1
        key = client_bucket(
            req.attempt.address, ipv6_prefix=self.server.settings.penalty_ipv6_prefix
        )
        delay, _ = await self.server.brakes.client_wait(key, time.monotonic())
        return math.ceil(delay) if delay > 0 else 0

    # -- report ----------------------------------------------------------------------

    def report(self, req: PolicyRequest) -> None:
        try:
            name = normalize_username(req.login)
        except InvalidUsernameError:
            name = req.login[:64]
        server = self.server
        key = client_bucket(req.attempt.address, ipv6_prefix=server.settings.penalty_ipv6_prefix)
        reason_hint = self._last_reason.pop((name, req.remote), None)
        after = self.settings.mode == "after_auth"
        if req.success:
            decision = Decision(Verdict.OK, Reason.OK, name, credentials_valid=True)
        elif req.policy_reject or req.fail_type == "policy":
            why = reason_hint or Reason.NETWORK
            decision = Decision(Verdict.FAIL, why, name, credentials_valid=after)
        elif req.fail_type == "account":
            decision = Decision(Verdict.FAIL, Reason.UNKNOWN_USER, name)
        elif req.fail_type == "":
            # 2.4 names every refusal; none named is Dovecot's own temporary failure
            # (e.g. a passdb error, or the policy request itself timed out): no penalty,
            # nothing for fail2ban
            decision = Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, name)
        else:  # "credentials", or 2.3 (no fail_type): wrong password or unknown user
            decision = Decision(Verdict.FAIL, Reason.BAD_PASSWORD, name)
        # a report only adds evidence: a success never clears or shortens the brake
        # (saslnetauth checked no password; docs/dovecot.md, "Policy endpoint")
        proxy = self._proxy_report(req, decision)  # proxies hook
        if proxy is not None:
            decision = replace(decision, proxy=proxy)
        if decision.verdict is Verdict.FAIL:
            server.ip_penalty.record_failure(key, time.monotonic())
            if server.brakes.shared is not None:  # every host's count (docs/sending.md)
                server.brakes.shared.settle_later(Step(client=key))
        server.metrics.count(decision.verdict.value, decision.reason.value, req.protocol)
        stolen = decision.reason in (Reason.NETWORK, Reason.NO_NETWORK_RULES)
        if not (after and decision.credentials_valid and stolen):
            # (the stolen-password line was logged when allow refused it)
            fields = {"user": name, "service": req.protocol or None, "rip": req.attempt.shown_rip}
            fields["proxy"] = decision.proxy
            if decision.ok:
                log.info("%s", kv("auth ok", **fields, via="policy"))
            elif decision.verdict is Verdict.TEMPFAIL:
                log.warning("%s", kv("auth tempfail", **fields, via="policy"))
            else:
                reason = decision.reason.value
                log.info("%s", kv("auth fail", **fields, reason=reason, via="policy"))
        if self.record is not None:
            self.record(decision, req.attempt)

    def _proxy_report(self, req: PolicyRequest, decision: Decision) -> str | None:
        """The trusted proxy of a reported login (None: direct); its session is opened,
        renewed or ended on the lookup thread (proxies hook)."""
        proxies = self.proxies
        if proxies is None:
            return None
        route = proxies.proxies.route(req.remote, req.real_remote or None, req.protocol)
        if route.case is Case.FORWARDED:

            def work() -> None:
                try:
                    user = self.get_user(normalize_username(req.login))
                    proxies.report(req, decision, user)
                except Exception as exc:
                    log.error("%s", kv("webmail session not updated", error=repr(exc)))

            self._executor.submit(work)
        return route.proxy
