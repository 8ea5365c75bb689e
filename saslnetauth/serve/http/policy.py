"""Dovecot's authentication policy server protocol, answered with saslnetauth's networks.

Dovecot (2.3 and 2.4) POSTs JSON to ``auth_policy_server_url`` with
``?command=allow`` (before and/or after it checks the password) and
``?command=report`` (after). We answer ``{"status": 0}`` (allow),
``{"status": N}`` with N > 0 (allow after a tarpit of N seconds: the
per-client brake) or ``{"status": -1, "msg": ...}`` (refuse). Dovecot
ignores the answer to ``report``. The body carries ``login``, ``remote``
and ``protocol`` (Dovecot's default attributes), 2.4 adds ``fail_type``;
no password ever comes.

The decision is the network half of the engine (README, "Dovecot 2.4"): the
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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from saslnetauth.errors import InvalidUsernameError
from saslnetauth.logfmt import kv
from saslnetauth.policy.mainpassword import main_password_allows
from saslnetauth.policy.model import UserRecord, normalize_username
from saslnetauth.policy.rules.netrules import Locate, RuleSet, merged_match, parse_address
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.decide.penalty import client_bucket
from saslnetauth.serve.http.server import Request, Response
from saslnetauth.settings import PolicyConfig

if TYPE_CHECKING:
    from saslnetauth.serve.authsocket.server import AuthServer

__all__ = ["PolicyRequest", "PolicyService", "decide_network", "parse_request"]

log = logging.getLogger("saslnetauth.auth")

MAX_FIELD = 512
MAX_REMEMBERED = 10000
#: Refused (unauthorised) requests are logged at most once per this many seconds.
REFUSAL_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class PolicyRequest:
    login: str
    remote: str
    protocol: str
    success: bool | None = None  # report only
    policy_reject: bool = False
    fail_type: str | None = None  # 2.4 only: "", "policy", "credentials", "account"


def _text(data: dict[str, object], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_FIELD or not value.isprintable():
        raise ValueError(f"{key}: expected printable text")
    return value


def parse_request(body: bytes) -> PolicyRequest:
    """The fields we use from a Dovecot policy request body; ValueError when unusable."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    success = data.get("success")
    fail_type = data.get("fail_type")
    return PolicyRequest(
        login=_text(data, "login"),
        remote=_text(data, "remote"),
        protocol=_text(data, "protocol").lower()[:32],
        success=success if isinstance(success, bool) else None,
        policy_reject=data.get("policy_reject") is True,
        fail_type=fail_type if isinstance(fail_type, str) and len(fail_type) < 32 else None,
    )


def decide_network(
    user: UserRecord | None,
    global_rules: RuleSet,
    req: PolicyRequest,
    unknown_users: str,
    locate: Locate | None = None,
    *,
    now: float,
    main_default: frozenset[str] | None = None,
) -> tuple[bool, Reason]:
    """May this login proceed from ``req.remote`` at ``now`` (UNIX time: expired
    grants do not count)? (allowed, reason). Pure but for ``locate`` (the GeoIP
    lookup of country and ASN terms; without it they match nothing).

    A missing or unparsable address matches only ``local``, as in the engine."""
    addr = parse_address(req.remote)
    if user is None:
        if unknown_users == "reject":
            return False, Reason.UNKNOWN_USER
        rules: tuple[RuleSet, ...] = (global_rules,)
    elif not user.enabled:
        return False, Reason.DISABLED
    elif user.suspended:  # Dovecot's passdb checks the main password (docs/sending.md)
        return False, Reason.SUSPENDED
    else:
        rules = (user.rules, global_rules)
    applicable, rule = merged_match(rules, addr, req.protocol, locate, now=now)
    if rule is not None:
        if user is not None and not main_password_allows(
            user.main_password_services, main_default, req.protocol
        ):
            return False, Reason.APP_PASSWORD_REQUIRED
        return True, Reason.OK
    return False, Reason.NETWORK if applicable else Reason.NO_NETWORK_RULES


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
        record: Callable[[Decision, str | None, str], None] | None = None,
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

    async def _lookup(self, name: str) -> tuple[UserRecord | None, RuleSet]:
        """The user and the global networks, from the lookup thread. Its queue holds at
        most one lookup per open connection (Dovecot waits for each answer), and a
        lookup that times out while still queued is cancelled, never run."""

        def work() -> tuple[UserRecord | None, RuleSet]:
            return self.get_user(name), self.global_rules()

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work)

    async def allow(self, req: PolicyRequest) -> int:
        """-1 refuse, 0 allow, N > 0 allow after N seconds (brake)."""
        try:
            name = normalize_username(req.login)
        except InvalidUsernameError:
            return -1
        try:
            user, global_rules = await asyncio.wait_for(
                self._lookup(name), self.settings.lookup_timeout
            )
        except Exception as exc:  # fail closed
            log.error("%s", kv("policy lookup failed", user=name, error=repr(exc)))
            return -1
        geoip = self.server.geoip
        allowed, reason = decide_network(
            user,
            global_rules,
            req,
            self.settings.unknown_users,
            geoip.geo if geoip is not None else None,
            now=self.clock(),
            main_default=self.main_default,
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
                        rip=_rip(req.remote),
                        reason=reason.value,
                        credentials_valid=True,
                        via="policy",
                    ),
                )
                self.server.alerts.fire(name, req.remote, req.protocol, reason.value)
            if len(self._last_reason) >= MAX_REMEMBERED:
                del self._last_reason[next(iter(self._last_reason))]
            self._last_reason[(name, req.remote)] = reason
            return -1
        key = client_bucket(req.remote, ipv6_prefix=self.server.settings.penalty_ipv6_prefix)
        delay = self.server.ip_penalty.delay(key, time.monotonic())
        return math.ceil(delay) if delay > 0 else 0

    # -- report ----------------------------------------------------------------------

    def report(self, req: PolicyRequest) -> None:
        try:
            name = normalize_username(req.login)
        except InvalidUsernameError:
            name = req.login[:64]
        server = self.server
        key = client_bucket(req.remote, ipv6_prefix=server.settings.penalty_ipv6_prefix)
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
        # (saslnetauth checked no password; README, "Dovecot 2.4")
        if decision.verdict is Verdict.FAIL:
            server.ip_penalty.record_failure(key, time.monotonic())
        server.metrics.count(decision.verdict.value, decision.reason.value, req.protocol)
        stolen = decision.reason in (Reason.NETWORK, Reason.NO_NETWORK_RULES)
        if not (after and decision.credentials_valid and stolen):
            # (the stolen-password line was logged when allow refused it)
            fields = {"user": name, "service": req.protocol or None, "rip": _rip(req.remote)}
            if decision.ok:
                log.info("%s", kv("auth ok", **fields, via="policy"))
            elif decision.verdict is Verdict.TEMPFAIL:
                log.warning("%s", kv("auth tempfail", **fields, via="policy"))
            else:
                reason = decision.reason.value
                log.info("%s", kv("auth fail", **fields, reason=reason, via="policy"))
        if self.record is not None:
            self.record(decision, req.remote, req.protocol)


def _rip(remote: str) -> str:
    addr = parse_address(remote)
    return str(addr) if addr is not None else (remote or "-")
