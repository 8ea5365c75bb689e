"""The main password's half of a login's verification (docs/design.md, the policy
contract): one slow hash (or PAM), then in this order a wrong password (perhaps a
retired one, :mod:`saslnetauth.policy.retiredcheck`), a disabled user, a service
where the main password does not work (:mod:`saslnetauth.policy.mainpassword`), and
the network the classification matched. Below the engine, which hands it what
it needs (:class:`MainVerifier`); the app passwords' half is
:mod:`saslnetauth.policy.apppolicy`."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

from saslnetauth.credentials.check import PamVerifier, check_credentials
from saslnetauth.credentials.passwords import ParsedHash, PasswordHasher
from saslnetauth.policy.classification import Classified
from saslnetauth.policy.login import Login
from saslnetauth.policy.mainpassword import main_password_allows
from saslnetauth.policy.model import Store, UserRecord
from saslnetauth.policy.retiredcheck import matching_retired
from saslnetauth.policy.suspension import admitted_by
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = ["MainVerifier", "verify_main_password"]


class MainVerifier(Protocol):
    """What the main password's verification reads of the engine."""

    store: Store
    hasher: PasswordHasher
    pam: PamVerifier | None
    rehash_on_login: bool
    retired_days: int
    main_password_services: frozenset[str] | None


def verify_main_password(
    v: MainVerifier,
    c: Classified,
    user: UserRecord,
    login: Login,
    rehash: list[ParsedHash],
    tried: list[int],
) -> Decision:
    """The decision for ``login`` as ``user``'s main password; a hash to renew is
    appended to ``rehash`` (only for an OK), the retired password it matched to
    ``tried``. The network is matched before the password for every existing user
    (classification, ``c``), so the work done does not depend on which check fails."""
    rule = c.rule
    net_ok = rule is not None
    started = time.perf_counter()
    checked = check_credentials(v.hasher, v.pam, user, login.password, login.rip, login.service)
    spent = time.perf_counter() - started
    if isinstance(checked, Decision):
        return replace(checked, network_ok=net_ok, verify_seconds=spent)
    ok, parsed = checked

    def out(
        verdict: Verdict,
        reason: Reason,
        matched: str | None = None,
        expires: float | None = None,
        admitted: str | None = None,
    ) -> Decision:
        return Decision(
            verdict,
            reason,
            user.name,
            credentials_valid=reason not in (Reason.BAD_PASSWORD, Reason.RETIRED_PASSWORD),
            matched=matched,
            network_ok=net_ok,
            verify_seconds=spent,
            expires=expires,
            admitted=admitted,
        )

    if not ok:
        until = login.retired_by
        if until > 0 and v.retired_days > 0 and user.backend == "hash":
            tried += matching_retired(v, user.id, login.password, until=until, estimate=spent)
        return out(Verdict.FAIL, Reason.RETIRED_PASSWORD if tried else Reason.BAD_PASSWORD)
    if not user.enabled:
        return out(Verdict.FAIL, Reason.DISABLED)
    if rule is None:
        return out(Verdict.FAIL, Reason.NETWORK if c.applicable else Reason.NO_NETWORK_RULES)
    allowed = v.main_password_services
    if not main_password_allows(user.main_password_services, allowed, login.service):
        return out(Verdict.FAIL, Reason.APP_PASSWORD_REQUIRED)
    # only a final OK may change the stored hash (never a forbidden network or a
    # disabled user: that would show in the reply's timing and the row)
    if parsed is not None and v.rehash_on_login and v.hasher.needs_rehash(parsed):
        rehash.append(parsed)
    return out(Verdict.OK, Reason.OK, rule.describe(), rule.expires, admitted_by(rule))
