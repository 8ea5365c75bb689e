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

A login is decided in two steps, so that a server can schedule the costly
one (docs/design.md, point 8): :meth:`DecisionEngine.classify` looks the
user up and matches the network (microseconds) and says whether the login
*could* succeed; the verification then hashes and finishes. ``decide``
runs both. A login that cannot succeed may be finished by
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

from saslnetauth.credentials.check import PamVerifier, check_credentials
from saslnetauth.credentials.passwords import ParsedHash, PasswordHasher
from saslnetauth.errors import BackendError, InvalidUsernameError
from saslnetauth.events.authlog import log_decision
from saslnetauth.logfmt import kv
from saslnetauth.policy.apppolicy import (
    credential_rule_sets,
    named_app_password,
    named_by_id,
    token_id_of,
    verify_app_password,
)
from saslnetauth.policy.classification import Classified, Lookup, refusal
from saslnetauth.policy.mainpassword import main_password_allows
from saslnetauth.policy.model import Store, UserRecord, normalize_username
from saslnetauth.policy.retiredcheck import matching_retired, record_tried
from saslnetauth.policy.rules.netrules import RuleSet, merged_match, parse_address
from saslnetauth.policy.suspension import admitted_by, suspended
from saslnetauth.policy.verdict import WRONG_PASSWORD, Decision, Reason, Verdict

if TYPE_CHECKING:
    from saslnetauth.policy.rules.geoip import GeoLocator

__all__ = ["DecisionEngine", "PamVerifier"]

log = logging.getLogger("saslnetauth.auth")

MAX_SERVICE = 32


class DecisionEngine:
    """Decides OK / FAIL / TEMPFAIL for ``(user, password, rip, service)``."""

    def __init__(
        self,
        store: Store,
        hasher: PasswordHasher,
        *,
        lowercase_usernames: bool = True,
        rehash_on_login: bool = False,
        pam: PamVerifier | None = None,
        pam_any_user: bool = False,
        on_decision: Callable[[Decision, str | None, str], None] | None = None,
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
        self.on_decision = on_decision
        #: Where addresses are, for country and ASN terms (None: they match nothing).
        self.geoip = geoip
        self._locate = geoip.geo if geoip is not None else None
        #: Told the id of an app password after each OK with it (last_used_at).
        self.on_app_password_used: Callable[[int], None] | None = None
        #: Where the main password works for users without a setting (None: everywhere).
        self.main_password_services = main_password_services
        #: Shown every OK, may mark it new_location (LocationMemory.note; never raises).
        self.note_place: Callable[[Decision, UserRecord, str | None], Decision] | None = None
        #: [alerts] retired_days for the server's engine (0: never check them).
        self.retired_days = 0
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
        username: str,
        password: bytes | str,
        rip: str | None,
        service: str,
        *,
        log_fields: dict[str, object] | None = None,
        quiet: bool = False,
        after_reply: list[Callable[[], None]] | None = None,
        repeat: bool = False,
        retired_by: float = 0.0,
    ) -> Decision:
        """Run the policy for one login attempt and log one line about it.

        ``repeat``: the password repeats a recent wrong one (a wrong password is
        logged ``repeat=yes``). ``retired_by``: until this monotonic time (0: never)
        a wrong password may be checked against retired ones (:mod:`.retiredcheck`).

        Work that must wait until the client has its answer (the rehash of
        ``rehash_on_login``) is appended to ``after_reply`` for the caller to
        run then; without the list it runs here, after the decision."""
        secret = (
            password.encode("utf-8", "surrogateescape") if isinstance(password, str) else password
        )
        service = _clean_service(service)
        rehash: list[ParsedHash] = []
        tried: list[int] = []  # the retired password it matched
        try:
            if not secret:
                # before any lookup or verification; the frontend's deadline hides
                # that no hash was spent
                decision = Decision(Verdict.FAIL, Reason.EMPTY_PASSWORD, _display_name(username))
            else:
                classified = self._classify(username, rip, service, token_id_of(secret))
                decision = self._verify(
                    classified, secret, rip, service, rehash, (retired_by, tried)
                )
                decision = suspended(decision, classified.user)  # docs/sending.md
                if decision.ok and self.note_place is not None and classified.user is not None:
                    decision = self.note_place(decision, classified.user, rip)
        except Exception as exc:  # fail closed on anything unexpected
            log.exception("internal error while deciding a login")
            decision = Decision(
                Verdict.TEMPFAIL, Reason.BACKEND_ERROR, _display_name(username), detail=str(exc)
            )
        fields = log_fields or {}
        if repeat and decision.reason in WRONG_PASSWORD:
            fields = {**fields, "repeat": True}
        decision = self._finish(decision, rip, service, fields, quiet)
        job: Callable[[], None] | None = None
        if decision.ok and rehash:
            job = functools.partial(self._rehash, decision.user, secret)
        elif tried:
            job = functools.partial(record_tried, self.store, tried[0])
        if job is not None:
            if after_reply is None:
                job()
            else:
                after_reply.append(job)
        return decision

    def classify(
        self, username: str, rip: str | None, service: str, token_id: str | None = None
    ) -> Classified:
        """The cheap step alone (no secret, no log line): for scheduling. ``token_id`` is
        the public identifier of the token the password has the shape of
        (:func:`~saslnetauth.policy.apppolicy.token_id_of`), which names the credential. An
        unexpected error classifies as "could succeed", leaving it to ``decide``."""
        try:
            return self._classify(username, rip, _clean_service(service), token_id)
        except Exception:
            log.exception("internal error while classifying a login")
            return Classified(_display_name(username), True)

    def refuse_unverified(
        self, c: Classified, rip: str | None, service: str, *, quiet: bool = False
    ) -> Decision:
        """FAIL, without a hash, a login that :meth:`classify` found unable to succeed;
        logged and recorded like any decision, with its true reason and ``verified=no``."""
        return self._finish(refusal(c), rip, _clean_service(service), {"verified": "no"}, quiet)

    def _finish(
        self,
        decision: Decision,
        rip: str | None,
        service: str,
        log_fields: dict[str, object],
        quiet: bool,
    ) -> Decision:
        """Log and record ``decision``; a FAIL first learns where its address is."""
        if decision.verdict is Verdict.FAIL:
            decision = self._located(decision, rip)
        if not quiet:
            log_decision(decision, rip, service, **log_fields)
        if self.on_decision is not None:
            try:
                self.on_decision(decision, rip, service)
            except Exception:
                log.exception("decision hook failed")
        return decision

    def _located(self, decision: Decision, rip: str | None) -> Decision:
        """``decision`` with the country and ASN of its address, when the GeoIP
        databases are configured and the address parses."""
        geoip = self.geoip
        if geoip is None or not geoip.configured:
            return decision
        addr = parse_address(rip)
        if addr is None:
            return decision
        geo, status = geoip.locate(addr)
        return replace(decision, country=geo.country, asn=geo.asn, geoip=status)

    # -- the policy ---------------------------------------------------------------

    def _classify(
        self, username: str, rip: str | None, service: str, token_id: str | None
    ) -> Classified:
        try:
            name: str | None = normalize_username(username, lowercase=self.lowercase)
        except InvalidUsernameError:
            name = None
        user: UserRecord | None = None
        try:
            if name is not None:
                user = self.store.get_user(name)
            global_rules = self.store.global_rules()
        except BackendError as exc:
            if name is None:  # decided by the name alone
                return Classified(_display_name(username), True, valid_name=False)
            error = Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, name, detail=str(exc))
            return Classified(name, True, error=error)
        return self._match(Lookup(username, name, user, global_rules), rip, service, token_id)

    def match(
        self, found: Lookup, rip: str | None, service: str, token_id: str | None = None
    ) -> Classified:
        """:meth:`classify` from what an earlier one read (no I/O): for a server that
        reuses a lookup for at most ``global_cache_seconds``."""
        return self._match(found, rip, _clean_service(service), token_id)

    def _match(
        self, found: Lookup, rip: str | None, service: str, token_id: str | None
    ) -> Classified:
        name, user = found.name, found.user
        if user is None and name is not None and self.pam_any_user:
            # any PAM (system) user, under the global networks only
            user = UserRecord(id=0, name=name, password_hash=None, enabled=True, backend="pam")
        rules = found.global_rules
        # the networks of the one credential the password names (an unknown name: the
        # global ones, like a main password from outside the user's own networks)
        app = None if user is None else named_by_id(user, token_id)
        display = user.name if user is not None else name or _display_name(found.given)
        if app is not None and app.error is not None:  # the verification says TEMPFAIL
            return Classified(display, True, user=user, app=app, lookup=found)
        expired = app is not None and app.expired(self.clock())
        if user is None:
            sets: tuple[RuleSet, ...] = (rules,)
        elif app is None:
            sets = (user.rules, rules)
        else:
            sets = () if expired else credential_rule_sets(app, rules, service)
        applicable, rule = merged_match(
            sets, parse_address(rip), service, self._locate, now=self.clock()
        )
        return Classified(
            display,
            rule is not None,
            user=user,
            rule=rule,
            applicable=applicable,
            valid_name=name is not None,
            app=app,
            expired=expired,
            lookup=found,
        )

    def _verify(
        self,
        c: Classified,
        secret: bytes,
        rip: str | None,
        service: str,
        rehash: list[ParsedHash],
        retired: tuple[float, list[int]] | None = None,
    ) -> Decision:
        if c.error is not None:
            return c.error
        user = c.user
        if user is None:  # unknown or invalid name
            # network_ok as for a user without networks of their own (the global ones
            # only), so that the user brake treats unknown and existing names alike
            started = time.perf_counter()
            self.hasher.dummy_verify(secret)
            return Decision(
                Verdict.FAIL,
                Reason.UNKNOWN_USER,
                c.name,
                network_ok=c.could_succeed,
                verify_seconds=time.perf_counter() - started,
            )

        found = c.lookup.global_rules if c.lookup is not None else RuleSet()
        named = named_app_password(user, secret)
        if named is not None:  # that app password alone, no slow hash
            used, locate = self.on_app_password_used, self._locate
            return verify_app_password(
                user, *named, rip, service, found, clock=self.clock, on_used=used, locate=locate
            )

        # The network is matched for every existing user before the password,
        # so the work done does not depend on which check fails: the classification
        # matched the main password's (the user's networks and the global ones, never
        # the app passwords').
        applicable, rule = c.applicable, c.rule
        net_ok = rule is not None
        started = time.perf_counter()
        checked = check_credentials(self.hasher, self.pam, user, secret, rip, service)
        spent = time.perf_counter() - started
        if isinstance(checked, Decision):
            return replace(checked, network_ok=net_ok, verify_seconds=spent)
        ok, parsed = checked
        if not ok:
            until, tried = retired or (0.0, [])
            if until > 0 and self.retired_days > 0 and user.backend == "hash":
                tried += matching_retired(self, user.id, secret, until=until, estimate=spent)
            return Decision(
                Verdict.FAIL,
                Reason.RETIRED_PASSWORD if tried else Reason.BAD_PASSWORD,
                user.name,
                network_ok=net_ok,
                verify_seconds=spent,
            )
        if not user.enabled:
            return Decision(
                Verdict.FAIL,
                Reason.DISABLED,
                user.name,
                credentials_valid=True,
                network_ok=net_ok,
                verify_seconds=spent,
            )
        if rule is not None and not main_password_allows(
            user.main_password_services, self.main_password_services, service
        ):
            return Decision(
                Verdict.FAIL,
                Reason.APP_PASSWORD_REQUIRED,
                user.name,
                credentials_valid=True,
                network_ok=True,
                verify_seconds=spent,
            )
        if rule is not None:
            # only a final OK may change the stored hash (never a forbidden network
            # or a disabled user: that would show in the reply's timing and the row)
            if parsed is not None and self.rehash_on_login and self.hasher.needs_rehash(parsed):
                rehash.append(parsed)
            return Decision(
                Verdict.OK,
                Reason.OK,
                user.name,
                credentials_valid=True,
                matched=rule.describe(),
                network_ok=True,
                verify_seconds=spent,
                expires=rule.expires,
                admitted=admitted_by(rule),
            )
        reason = Reason.NETWORK if applicable else Reason.NO_NETWORK_RULES
        return Decision(
            Verdict.FAIL,
            reason,
            user.name,
            credentials_valid=True,
            network_ok=False,
            verify_seconds=spent,
        )

    def _rehash(self, name: str, secret: bytes) -> None:
        try:
            self.store.update_hash(name, self.hasher.hash(secret))
            log.info("%s", kv("password rehashed", user=name, scheme=self.hasher.default_scheme))
        except Exception as exc:  # never fails a login
            log.warning("%s", kv("rehash failed", user=name, error=str(exc)))


def _clean_service(service: str | None) -> str:
    if not service:
        return ""
    s = service.strip().lower()
    return s[:MAX_SERVICE] if s.isprintable() else ""


def _display_name(username: object) -> str:
    return username[:255] if isinstance(username, str) else "?"
