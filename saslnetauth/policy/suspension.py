"""What the engine says for the sending limits (docs/sending.md). Pure, no I/O.

1. A credential (the main password, or one app password) that went over its
   sending limits ``[sending] suspend_after`` times is suspended: its row has
   ``suspended_at``, which the store reads with the user at every login. Its
   next login with the right password fails like a wrong one, reason
   ``suspended``, after the same verification (:func:`suspended`), on every
   frontend, until ``saslnetauth user unsuspend``.
2. An OK says what admitted it (:func:`admitted_by`): ``own`` for the main
   password inside one of the user's own permanent networks, ``outside`` for a
   global network, an app password's network, a country or ASN term, or an
   expiring grant. The sending limits of an ``outside`` session are tightened
   by ``[sending] outside_factor``.
"""

from __future__ import annotations

from dataclasses import replace

from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = ["OUTSIDE", "OWN", "admitted_by", "suspended"]

OWN = "own"
OUTSIDE = "outside"


def admitted_by(rule: NetworkRule, *, app_password: bool = False) -> str:
    """:data:`OWN` or :data:`OUTSIDE` for an OK that ``rule`` admitted."""
    own = (
        not app_password
        and rule.scope == "user"
        and rule.expires is None
        and rule.country is None
        and rule.asn is None
    )
    return OWN if own else OUTSIDE


def suspended(decision: Decision, user: UserRecord | None) -> Decision:
    """``decision``, or a FAIL ``suspended`` when it is an OK of a suspended credential."""
    if not decision.ok or user is None:
        return decision
    if decision.credential is None:
        hit = user.suspended
    else:
        hit = any(a.suspended for a in user.app_passwords if a.label == decision.credential)
    if not hit:
        return decision
    return replace(
        decision,
        verdict=Verdict.FAIL,
        reason=Reason.SUSPENDED,
        matched=None,
        expires=None,
        admitted=None,
    )
