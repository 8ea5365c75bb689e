"""The cheap first step of a login (docs/design.md, point 8): look the name up
and match the client address against the networks of the credential the login
names, without its secret. Made for :meth:`saslnetauth.policy.engine.DecisionEngine.triage`;
above the rules and the app-password rule, below the engine."""

from __future__ import annotations

from saslnetauth.errors import BackendError, InvalidUsernameError
from saslnetauth.policy.apppolicy import credential_rule_sets, named_by_id
from saslnetauth.policy.classification import Classified, Lookup
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import Store, UserRecord, normalize_username
from saslnetauth.policy.rules.netrules import Locate, RuleSet, merged_match
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = ["display_name", "look_up", "match_credential"]


def display_name(username: object) -> str:
    """The name as given, for a decision about a name that is not (yet) a user's."""
    return username[:255] if isinstance(username, str) else "?"


def look_up(store: Store, login: Login, *, lowercase: bool) -> Lookup | Classified:
    """What the store holds about the login's name and the global networks; a
    classification at once when the store fails (TEMPFAIL, or a name that cannot be
    a user's: decided by the name alone)."""
    try:
        name: str | None = normalize_username(login.user, lowercase=lowercase)
    except InvalidUsernameError:
        name = None
    user: UserRecord | None = None
    try:
        if name is not None:
            user = store.get_user(name)
        global_rules = store.global_rules()
    except BackendError as exc:
        if name is None:  # decided by the name alone
            return Classified(display_name(login.user), True, valid_name=False)
        error = Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, name, detail=str(exc))
        return Classified(name, True, error=error)
    return Lookup(login.user, name, user, global_rules)


def match_credential(
    found: Lookup,
    login: Login,
    *,
    pam_any_user: bool,
    now: float,
    locate: Locate | None,
    unmatched: bool = False,
) -> Classified:
    """Whether the login could succeed with the credential it names, from its address:
    an app password's own networks and the global ones, or (the main password) the
    user's and the global ones; an unknown name the global ones only. ``unmatched``:
    the address is a trusted proxy's, or none is known through one (docs/webmail.md):
    no rule may match it."""
    name, user = found.name, found.user
    if user is None and name is not None and pam_any_user:
        # any PAM (system) user, under the global networks only
        user = UserRecord(id=0, name=name, password_hash=None, enabled=True, backend="pam")
    rules = found.global_rules
    # the networks of the one credential the password names (an unknown name: the
    # global ones, like a main password from outside the user's own networks)
    app = None if user is None else named_by_id(user, login.credential)
    display = user.name if user is not None else name or display_name(found.given)
    if app is not None and app.error is not None:  # the verification says TEMPFAIL
        return Classified(display, True, user=user, app=app, lookup=found)
    expired = app is not None and app.expired(now)
    if user is None:
        sets: tuple[RuleSet, ...] = (rules,)
    elif app is None:
        sets = (user.rules, rules)
    else:
        sets = () if expired else credential_rule_sets(app, rules, login.service)
    if unmatched:
        sets = ()
    applicable, rule = merged_match(sets, login.address, login.service, locate, now=now)
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
        unmatched=unmatched,
    )
