"""The cheap first step of a login (docs/design.md, point 8): what classifying
a name read from the store (:class:`Lookup`), whether the login could succeed
from its address (:class:`Classified`), and the FAIL of one that cannot
(:func:`refusal`). Made by :mod:`saslnetauth.policy.triage` for
:meth:`saslnetauth.policy.engine.DecisionEngine.triage`,
used by the responder's scheduler to order the costly verifications."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from saslnetauth.policy.model import AppPasswordRecord, UserRecord
from saslnetauth.policy.rules.netrules import NetworkRule, RuleSet
from saslnetauth.policy.verdict import Decision, Reason, Verdict

if TYPE_CHECKING:
    from saslnetauth.policy.binding import Binding

__all__ = ["Classified", "Lookup", "refusal"]


@dataclass(frozen=True, slots=True)
class Lookup:
    """What classifying a name read from the store."""

    given: str
    name: str | None  # None: not a valid user name
    user: UserRecord | None
    global_rules: RuleSet


@dataclass(frozen=True, slots=True)
class Classified:
    """The cheap first step of a login: who it is, which credential it names, and whether
    its address could let it succeed with that credential. Unknown (and invalid) names
    are matched against the global networks only, like an existing user's main password
    from outside the user's own networks, so that from there an unknown name classifies
    like an existing one.
    """

    #: Canonical name (existing user), normalised name (unknown), or the name as given.
    name: str
    #: The address lies in the networks that apply (the user's and the global ones).
    could_succeed: bool
    user: UserRecord | None = None
    #: The rule that admits the address, if any.
    rule: NetworkRule | None = None
    #: Some network rule applies to the service at all.
    applicable: bool = False
    #: The app password the login names by its token's identifier (None: the main
    #: password, or no such user).
    app: AppPasswordRecord | None = None
    #: That app password has expired (it can admit nothing).
    expired: bool = False
    valid_name: bool = True
    #: A decision reached without any password work (TEMPFAIL: database error).
    error: Decision | None = None
    #: What was read from the store to classify it.
    lookup: Lookup | None = field(default=None, repr=False, compare=False)
    #: The address is a trusted proxy's, or none is known: no rule may match it
    #: (saslnetauth.policy.proxies).
    unmatched: bool = False
    #: The webmail session a login from a proxy without a client address is judged
    #: by (saslnetauth.policy.binding; None: none).
    binding: Binding | None = None

    @property
    def owner(self) -> tuple[str, int | None]:
        """Whose credential the login tries, for fair scheduling: the name (an unknown
        one too, so that it has a lane like an existing user's) and the app password's
        id (None: the main password)."""
        return self.name, None if self.app is None else self.app.id


def refusal(c: Classified) -> Decision:
    """The FAIL of a login that cannot succeed, decided without its password."""
    if c.could_succeed:
        raise ValueError("only a login that cannot succeed is refused unverified")
    if c.user is None:
        return Decision(Verdict.FAIL, Reason.UNKNOWN_USER, c.name, network_ok=False)
    reason = Reason.NETWORK if c.applicable else Reason.NO_NETWORK_RULES
    if c.unmatched and c.binding is None:
        reason = Reason.PROXY_WITHOUT_CLIENT_ADDRESS
    if c.expired:
        reason = Reason.EXPIRED
    label = None if c.app is None else c.app.label
    return Decision(Verdict.FAIL, reason, c.name, network_ok=False, credential=label)
