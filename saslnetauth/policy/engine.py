"""The decision engine: one function every frontend calls.

Implements the policy contract of docs/design.md:

1. credentials first (stored hash or PAM); unknown user, wrong password,
   disabled user or missing hash -> FAIL, and every one of these spends
   the time of a real verification (a dummy hash for unknown users);
2. then the network rule: the client address must lie in the union of the
   user's networks and the global networks that apply to the service;
3. no applicable network at all -> FAIL (fail closed); an expired grant is
   no network at all: every match reads the time from the engine's one
   ``clock`` (UNIX time, injectable for tests);
4. address parsing per :mod:`saslnetauth.policy.rules.netrules`;
5. the reason is logged, never returned to a client; a correct password
   from a forbidden network is logged as a WARNING with
   ``credentials_valid=yes``;
6. any infrastructure error -> TEMPFAIL, never OK.

App passwords (per-device credentials) follow :mod:`saslnetauth.policy.apppolicy`:
a password that names one of the user's app passwords is checked against
it alone (no slow hash), any other as the main password, so a login costs at
most one slow hash; classification, given the token's public identifier (never
the secret), matches the networks of that one credential too. The right
main password on a service outside the user's main password services
(:mod:`saslnetauth.policy.mainpassword`) is a FAIL ``app_password_required``, reached
after the same hash as any other: a wrong password and this refusal look alike.
An OK is shown to ``note_place`` (new-location alerts,
:mod:`saslnetauth.store.locations`), which may mark it ``new_location``.

An empty password is refused before anything else (no lookup, no hash):
Dovecot's ``nopassword`` or an empty ``{PLAIN}`` never lets one in. When the
reply leaves is not the engine's business: every frontend answers a failure
at the fixed deadline of :mod:`saslnetauth.policy.deadline`. ``rehash_on_login``
re-stores a password only after a final OK, and when the caller passes
``after_reply``, only once the caller has sent the reply.

Every hop takes one :class:`~saslnetauth.policy.login.Login` (its address parsed
once, by the frontend that built it). A login is decided in two steps, so that a
server can schedule the costly one (docs/design.md, point 8):
:meth:`DecisionEngine.triage` looks the user up and matches the network of the
credential the login names (microseconds, :mod:`saslnetauth.policy.triage`) and says
whether the login *could* succeed; the verification then hashes and finishes
(:mod:`saslnetauth.policy.mainverify` for the main password,
:mod:`saslnetauth.policy.apppolicy` for an app password). ``decide`` runs both. The
dependencies run one way: the rules at the bottom, the app-password rule and the
two steps above them, the engine on top. A login that cannot succeed may be finished by
:meth:`DecisionEngine.refuse_unverified` instead: FAIL with its true
reason, logged with ``verified=no``, without spending a hash.

The engine is synchronous and thread-safe; the server runs it in decision
worker processes (or threads) so that it never blocks the event loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from saslnetauth.credentials.check import PamVerifier
from saslnetauth.credentials.passwords import ParsedHash, PasswordHasher
from saslnetauth.errors import BackendError
from saslnetauth.events.authlog import Record, account
from saslnetauth.logfmt import kv
from saslnetauth.policy.apppolicy import named_app_password, named_by_id, verify_app_password
from saslnetauth.policy.cheap import cheap_to_decide
from saslnetauth.policy.classification import Classified, Lookup, refusal
from saslnetauth.policy.login import Login
from saslnetauth.policy.mainverify import verify_main_password
from saslnetauth.policy.model import Store, UserRecord
from saslnetauth.policy.proxies import Case, ProxyNetworks, Route
from saslnetauth.policy.retiredcheck import record_tried
from saslnetauth.policy.rules.addresses import parse_address
from saslnetauth.policy.rules.netrules import RuleSet
from saslnetauth.policy.suspension import suspended
from saslnetauth.policy.triage import display_name, look_up, match_credential
from saslnetauth.policy.verdict import WRONG_PASSWORD, Decision, Reason, Verdict

if TYPE_CHECKING:
    from saslnetauth.policy.binding import Binding, SessionBinder
    from saslnetauth.policy.rules.geoip import GeoLocator

__all__ = ["DecisionEngine", "Login", "PamVerifier"]

log = logging.getLogger("saslnetauth.auth")


class DecisionEngine:
    """Decides OK / FAIL / TEMPFAIL for one :class:`Login`."""

    def __init__(
        self,
        store: Store,
        hasher: PasswordHasher,
        *,
        lowercase_usernames: bool = True,
        rehash_on_login: bool = False,
        pam: PamVerifier | None = None,
        pam_any_user: bool = False,
        on_decision: Record | None = None,
        geoip: GeoLocator | None = None,
        clock: Callable[[], float] = time.time,
        main_password_services: frozenset[str] | None = None,
    ) -> None:
        self.store = store
        #: Wall-clock time (UNIX seconds) against which grants expire.
        self.clock = clock
        self.hasher = hasher
        self.lowercase = lowercase_usernames
        self.rehash_on_login = rehash_on_login
        self.pam = pam
        self.pam_any_user = pam_any_user and pam is not None
        #: Told every decision it logs (the verdict record).
        self.on_decision = on_decision
        #: Where addresses are, for country and ASN terms (None: they match nothing).
        self.geoip = geoip
        self._locate = geoip.geo if geoip is not None else None
        #: Told the id of an app password after each OK with it (last_used_at).
        self.on_app_password_used: Callable[[int], None] | None = None
        #: Where the main password works for users without a setting (None: everywhere).
        self.main_password_services = main_password_services
        #: Shown every OK, may mark it new_location (LocationMemory.note; never raises).
        self.note_place: Callable[[Decision, UserRecord, Login], Decision] | None = None
        #: [alerts] retired_days for the server's engine (0: never check them).
        self.retired_days = 0
        # -- proxies hook (saslnetauth.policy.proxies, .binding; docs/webmail.md) --
        #: [proxies] networks: addresses that are proxies, never clients.
        self.proxies = ProxyNetworks()
        #: Webmail sessions (None: none kept; a proxy without a client address fails).
        self.binder: SessionBinder | None = None
        #: Run by close(): what this engine owns (store, verdict recorder).
        self.closers: list[Callable[[], None]] = []

    def preload(self) -> None:
        """Load what the first login would otherwise wait for (errors are left to it)."""
        with contextlib.suppress(Exception):
            self.store.global_rules()

    def close(self) -> None:
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception:
                log.exception("error while closing the engine")
        self.closers.clear()

    def decide(
        self,
        login: Login,
        *,
        log_fields: dict[str, object] | None = None,
        quiet: bool = False,
        after_reply: list[Callable[[], None]] | None = None,
        looked: tuple[Classified, Login] | None = None,
    ) -> Decision:
        """Run the policy for one login attempt and log one line about it.

        ``login.repeat``: the password repeats a recent wrong one (a wrong password is
        logged ``repeat=yes``). ``login.retired_by``: until this monotonic time (0:
        never) a wrong password may be checked against retired ones (:mod:`.retiredcheck`).

        Work that must wait until the client has its answer (the rehash of
        ``rehash_on_login``) is appended to ``after_reply`` for the caller to
        run then; without the list it runs here, after the decision.

        ``looked``: the classification and judged login :meth:`decide_if_cheap` has
        just read for it (no second lookup)."""
        rehash: list[ParsedHash] = []
        tried: list[int] = []  # the retired password it matched
        route, judged = self._route(login)  # proxies hook: the login as judged
        try:
            if not login.password:
                # before any lookup or verification; the frontend's deadline hides
                # that no hash was spent
                decision = Decision(Verdict.FAIL, Reason.EMPTY_PASSWORD, display_name(login.user))
            else:
                classified, effective = looked or self._look_up_and_match(judged, route)
                decision = self._verify(classified, effective, rehash, tried)
                decision = suspended(decision, classified.user)  # docs/sending.md
                decision = self._settle(decision, route, classified)  # proxies hook
                if not decision.ok:
                    rehash.clear()
                if decision.ok and self.note_place is not None and classified.user is not None:
                    decision = self.note_place(decision, classified.user, effective)
        except Exception as exc:  # fail closed on anything unexpected
            log.exception("internal error while deciding a login")
            decision = Decision(
                Verdict.TEMPFAIL, Reason.BACKEND_ERROR, display_name(login.user), detail=str(exc)
            )
        fields = log_fields or {}
        if route.proxy is not None and decision.proxy is None:  # proxies hook
            decision = replace(decision, proxy=route.proxy)
        if login.repeat and decision.reason in WRONG_PASSWORD:
            fields = {**fields, "repeat": True}
        decision = self._finish(decision, judged, fields, quiet)
        job: Callable[[], None] | None = None
        if decision.ok and rehash:
            job = functools.partial(self._rehash, decision.user, login.password)
        elif tried:
            job = functools.partial(record_tried, self.store, tried[0])
        if job is not None:
            if after_reply is None:
                job()
            else:
                after_reply.append(job)
        return decision

    def triage(self, login: Login) -> Classified:
        """The cheap step alone (no secret, no log line): for scheduling. It reads of
        the password only ``login.credential``, the public identifier of the token it
        has the shape of. An unexpected error classifies as "could succeed", leaving it
        to ``decide``."""
        try:
            route, judged = self._route(login)
            return self._look_up_and_match(judged, route)[0]
        except Exception:
            log.exception("internal error while classifying a login")
            return Classified(display_name(login.user), True)

    def decide_if_cheap(
        self, login: Login, after_reply: list[Callable[[], None]]
    ) -> Decision | Classified:
        """:meth:`decide` when the login could succeed and is cheap to decide
        (:mod:`.cheap`), from the one lookup; otherwise its :meth:`triage` (nothing
        logged), for the scheduler and a worker to decide."""
        if not login.password:
            return self.decide(login, after_reply=after_reply)
        try:
            route, judged = self._route(login)
            looked = self._look_up_and_match(judged, route)
        except Exception:
            log.exception("internal error while classifying a login")
            return Classified(display_name(login.user), True)
        c = looked[0]
        # one that cannot succeed is the scheduler's (hopeless_share, verified=no)
        if not (c.could_succeed or c.error is not None) or not cheap_to_decide(c, login, self):
            return c
        return self.decide(login, after_reply=after_reply, looked=looked)

    def match_cached(self, found: Lookup, login: Login) -> Classified:
        """:meth:`triage` from what an earlier one read (no I/O): for a server that
        reuses a lookup for at most ``global_cache_seconds``."""
        return self._match(found, login)

    def refuse_unverified(self, c: Classified, login: Login, *, quiet: bool = False) -> Decision:
        """FAIL, without a hash, a login that :meth:`triage` found unable to succeed;
        logged and recorded like any decision, with its true reason and ``verified=no``."""
        return self._finish(refusal(c), login, {"verified": "no"}, quiet)

    def _finish(
        self, decision: Decision, login: Login, log_fields: dict[str, object], quiet: bool
    ) -> Decision:
        """Log and record ``decision``; a FAIL first learns where its address is."""
        if decision.verdict is Verdict.FAIL:
            decision = self._located(decision, login)
        account(decision, login, self.on_decision, log_fields, quiet=quiet)
        return decision

    def _located(self, decision: Decision, login: Login) -> Decision:
        """``decision`` with the country and ASN of its address, when the GeoIP
        databases are configured and the address parses."""
        geoip = self.geoip
        if geoip is None or not geoip.configured or login.address is None:
            return decision
        geo, status = geoip.locate(login.address)
        return replace(decision, country=geo.country, asn=geo.asn, geoip=status)

    # -- the policy ---------------------------------------------------------------

    def _route(self, login: Login) -> tuple[Route, Login]:
        """Which address of ``login`` is judged (:mod:`saslnetauth.policy.proxies`), and
        the login as judged; without proxies and nothing forwarded, the login itself."""
        if not self.proxies and login.real_rip is None:
            return Route(Case.DIRECT, login.rip), login
        return self.proxies.judged(login)

    def _look_up_and_match(
        self, login: Login, route: Route | None = None
    ) -> tuple[Classified, Login]:
        """The classification and the login it was matched as: ``login``, or for a
        trusted proxy without a client address the address of its webmail session."""
        found = look_up(self.store, login, lowercase=self.lowercase)
        if isinstance(found, Classified):
            return found, login
        if route is None or route.case is not Case.PROXY_ONLY:
            return self._match(found, login), login
        try:  # proxies hook: only a webmail session admits it
            binding = self._binding(route, found.user, login.credential)
        except BackendError as exc:
            name = found.name or display_name(login.user)
            error = Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, name, detail=str(exc))
            return Classified(name, True, error=error), login
        if binding is None:
            return self._match(found, login, matchable=False), login
        bound = replace(login, address=parse_address(binding.rip), rip=binding.rip, real_rip=None)
        return replace(self._match(found, bound), binding=binding), bound

    def _match(self, found: Lookup, login: Login, *, matchable: bool = True) -> Classified:
        # proxies hook: a proxy's address, or none known, matches no rule
        unmatched = not matchable or (
            bool(self.proxies) and self.proxies.contains(login.address, login.service)
        )
        return match_credential(
            found,
            login,
            pam_any_user=self.pam_any_user,
            now=self.clock(),
            locate=self._locate,
            unmatched=unmatched,
        )

    def _verify(
        self, c: Classified, login: Login, rehash: list[ParsedHash], tried: list[int]
    ) -> Decision:
        if c.error is not None:
            return c.error
        user = c.user
        if user is None:  # unknown or invalid name
            # network_ok as for a user without networks of their own (the global ones
            # only), so that the user brake treats unknown and existing names alike
            started = time.perf_counter()
            self.hasher.dummy_verify(login.password)
            return Decision(
                Verdict.FAIL,
                Reason.UNKNOWN_USER,
                c.name,
                network_ok=c.could_succeed,
                verify_seconds=time.perf_counter() - started,
            )
        named = named_app_password(user, login.password)
        if named is not None:  # that app password alone, no slow hash
            found = c.lookup.global_rules if c.lookup is not None else RuleSet()
            used, locate = self.on_app_password_used, self._locate
            if c.unmatched:  # proxies hook: no rule may match it
                found = RuleSet()
                named = (replace(named[0], rules=RuleSet()), named[1])
            return verify_app_password(
                user, *named, login, found, clock=self.clock, on_used=used, locate=locate
            )
        # the classification matched the main password's networks (the user's and the
        # global ones, never the app passwords')
        return verify_main_password(self, c, user, login, rehash, tried)

    # -- proxies hook (saslnetauth.policy.binding) --------------------------------------

    def _binding(
        self, route: Route, user: UserRecord | None, token_id: str | None
    ) -> Binding | None:
        """The webmail session a login from a proxy without a client address may use."""
        if self.binder is None or route.case is not Case.PROXY_ONLY:
            return None
        return self.binder.lookup(
            route, user, None if user is None else named_by_id(user, token_id)
        )

    def _settle(self, d: Decision, route: Route, c: Classified) -> Decision:
        """``d`` as the proxy case makes it (:meth:`SessionBinder.settle`)."""
        if route.proxy is None:
            return d
        if self.binder is None:  # no sessions kept: the proxy alone admits nothing
            from saslnetauth.policy.binding import settle_unbound

            return settle_unbound(d, route)
        return self.binder.settle(d, route, c.user, c.app, c.binding)

    def _rehash(self, name: str, secret: bytes) -> None:
        try:
            self.store.update_hash(name, self.hasher.hash(secret))
            log.info("%s", kv("password rehashed", user=name, scheme=self.hasher.default_scheme))
        except Exception as exc:  # never fails a login
            log.warning("%s", kv("rehash failed", user=name, error=str(exc)))
