"""The app password half of the policy (docs/app-passwords.md). Pure, no I/O.

The engine (:mod:`saslnetauth.policy.engine`) calls these; the rule:

1. A password with a token's shape (:mod:`saslnetauth.credentials.apptokens`)
   whose identifier names one of *this user's* app passwords is checked
   against that app password only: one SHA-256, no slow hash. Any other
   password is checked as the main password (one slow hash or PAM). So a
   login costs at most one slow hash however many app passwords the user has.
2. Then, in this order: wrong secret -> FAIL ``bad_password``; disabled user
   -> FAIL ``disabled``; past ``expires_at`` -> FAIL ``expired``; a row a
   script wrote that does not parse -> TEMPFAIL (never OK).
3. The network: the client address must lie in the app password's own
   networks or in the global networks for the service, and the service must
   be one of the app password's services (none = all); the user's own
   networks do NOT apply (they belong to the main password). An app password
   without networks of its own works only from the global networks.
   Nothing applies -> FAIL ``no_network_rules``; outside -> FAIL ``network``;
   both with ``credentials_valid`` (the stolen-credential event, naming the
   label).

For classification (the secret unseen) a login *could succeed* from the
networks of the credential it names (:func:`named_by_id`): an app password
named by the token's public identifier (:func:`token_id_of`), otherwise the
main password. So from outside the user's own networks only a client that
knows an app password's identifier is classified by that app password's
networks (docs/floods.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from saslnetauth.credentials.apptokens import parse_token, verify_token
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import AppPasswordRecord, UserRecord
from saslnetauth.policy.rules.netrules import Locate, RuleSet, merged_match
from saslnetauth.policy.suspension import OUTSIDE
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = [
    "credential_rule_sets",
    "named_app_password",
    "named_by_id",
    "token_id_of",
    "verify_app_password",
]

log = logging.getLogger("saslnetauth.auth")


def named_app_password(user: UserRecord, password: bytes) -> tuple[AppPasswordRecord, str] | None:
    """(the user's app password that ``password`` names, the normalised token), or None
    when the password is to be checked as the main password (rule 1)."""
    if not user.app_passwords:
        return None
    token = parse_token(password)
    if token is None:
        return None
    app = named_by_id(user, token[0])
    return None if app is None else (app, token[1])


def token_id_of(password: bytes) -> str | None:
    """The public identifier of the token ``password`` has the shape of, or None: all
    that classification reads of a password (never the secret)."""
    token = parse_token(password)
    return None if token is None else token[0]


def named_by_id(user: UserRecord, token_id: str | None) -> AppPasswordRecord | None:
    """The user's app password with identifier ``token_id``, or None (the main
    password): the credential a login with that token is checked against (rule 1)."""
    if token_id is None or not user.app_passwords:
        return None
    return user.app_password(token_id)


def credential_rule_sets(
    app: AppPasswordRecord, global_rules: RuleSet, service: str
) -> tuple[RuleSet, ...]:
    """The rule sets that may admit app password ``app`` for ``service``."""
    if not app.applies_to(service):
        return ()
    return (app.rules, global_rules)


def verify_app_password(
    user: UserRecord,
    app: AppPasswordRecord,
    normalised: str,
    login: Login,
    global_rules: RuleSet,
    *,
    clock: Callable[[], float],
    on_used: Callable[[int], None] | None = None,
    locate: Locate | None = None,
) -> Decision:
    """The decision for ``login``, which named ``app`` (rules 2 and 3 of the module);
    ``on_used`` is told the app password's id after an OK (``last_used_at``);
    ``locate`` places the address for country and ASN terms."""
    label = app.label
    if app.error is not None:
        return Decision(
            Verdict.TEMPFAIL,
            Reason.BACKEND_ERROR,
            user.name,
            detail=f"unusable app password row: {app.error}",
            credential=label,
        )
    now = clock()
    started = time.perf_counter()
    right = verify_token(normalised, app.secret_hash)
    spent = time.perf_counter() - started
    sets = credential_rule_sets(app, global_rules, login.service)
    applicable, rule = merged_match(sets, login.address, login.service, locate, now=now)
    net_ok = rule is not None

    def out(verdict: Verdict, reason: Reason, valid: bool, matched: str | None = None) -> Decision:
        admitted = None if rule is None or matched is None else OUTSIDE  # never its own
        return Decision(
            verdict,
            reason,
            user.name,
            credentials_valid=valid,
            matched=matched,
            network_ok=net_ok,
            verify_seconds=spent,
            credential=label,
            admitted=admitted,
        )

    if not right:
        return out(Verdict.FAIL, Reason.BAD_PASSWORD, False)
    if not user.enabled:
        return out(Verdict.FAIL, Reason.DISABLED, True)
    if app.expired(now):
        return out(Verdict.FAIL, Reason.EXPIRED, True)
    if rule is not None:
        if on_used is not None:
            try:
                on_used(app.id)
            except Exception:  # never a login's problem
                log.exception("app password use not noted")
        return out(Verdict.OK, Reason.OK, True, rule.describe())
    return out(Verdict.FAIL, Reason.NETWORK if applicable else Reason.NO_NETWORK_RULES, True)
