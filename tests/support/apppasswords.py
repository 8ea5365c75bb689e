"""What the app-password tests of the unit and database tiers share: a main password,
a user network rule and an app password added through the store."""

from __future__ import annotations

from datetime import datetime

from saslnetauth.credentials.apptokens import new_token
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.store import SqlStore

PW = "main pass word"


def user_net(text: str, services: str | None = None) -> NetworkRule:
    return NetworkRule.parse(text, services, scope="user")


def add_app_password(
    store: SqlStore,
    user: str,
    label: str,
    *nets: str,
    services: str | None = None,
    expires: datetime | None = None,
) -> str:
    """The token of a new app password LABEL of USER with these networks."""
    svc = frozenset(services.split(",")) if services else None
    rules = [NetworkRule.parse(n, svc, scope=f"app password {label}") for n in nets]
    return store.add_app_password(
        user,
        label,
        new_token,
        services=svc,
        networks=rules,
        expires=expires.timestamp() if expires else None,
    )
