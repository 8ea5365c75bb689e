"""Dovecot's auth policy requests as the policy endpoint reads them
(docs/dovecot.md, "Policy endpoint"): the fields it uses, parsed and bounded, and
the network half of the policy for them. Pure but for the GeoIP lookup it is given."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from saslnetauth.policy.login import Login
from saslnetauth.policy.mainpassword import main_password_allows
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import Locate, RuleSet, merged_match
from saslnetauth.policy.verdict import Reason

__all__ = ["MAX_FIELD", "PolicyRequest", "decide_network", "parse_request"]

MAX_FIELD = 512


@dataclass(frozen=True)
class PolicyRequest:
    login: str
    remote: str
    protocol: str
    success: bool | None = None  # report only
    policy_reject: bool = False
    fail_type: str | None = None  # 2.4 only: "", "policy", "credentials", "account"
    #: The connecting address (the snippets send %{real_rip}; docs/webmail.md).
    real_remote: str = ""

    @functools.cached_property
    def attempt(self) -> Login:
        """The login the request is about (no password), its address parsed once."""
        return Login.of(self.login, b"", self.remote, self.protocol, real_rip=self.real_remote)


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
        real_remote=_text(data, "real_remote") or _text(data, "real_rip"),
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
    addr = req.attempt.address
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
