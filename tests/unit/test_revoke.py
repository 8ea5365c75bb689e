"""The revoke command's arguments and environment (saslnetauth.events.revoke), the shared
command runner's bounds (saslnetauth.events.commands) and the server's expiry watcher
(saslnetauth.serve.revokewatch) against a real SQLite database."""

from __future__ import annotations

import pytest

from saslnetauth.events.revoke import (
    RevokeEvent,
    kick_network,
    revoke_argv,
    revoke_environment,
)

KICK = ["doveadm", "kick", "{user}", "{network}"]


@pytest.mark.parametrize(
    ("spec", "kick"),
    [
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("192.0.2.7", "192.0.2.7"),
        ("192.0.2.7/32", "192.0.2.7"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("any", ""),
        ("0.0.0.0/0", ""),
        ("local", ""),
        ("country:DE", ""),
        ("asn:64496", ""),
    ],
)
def test_kick_network(spec: str, kick: str) -> None:
    assert kick_network(spec) == kick


def test_argv_fills_placeholders_and_drops_empty_ones() -> None:
    assert revoke_argv(KICK, RevokeEvent("user_disabled", "alice")) == ["doveadm", "kick", "alice"]
    grant = RevokeEvent("network_expired", "alice", network="192.0.2.0/24")
    assert revoke_argv(KICK, grant) == ["doveadm", "kick", "alice", "192.0.2.0/24"]
    app = RevokeEvent("app_password_deleted", "alice", credential="phone")
    assert revoke_argv(["kick", "--who={user}/{credential}"], app) == ["kick", "--who=alice/phone"]
    assert revoke_argv([], app) is None


def test_argv_without_a_user_needs_the_network() -> None:
    """A global grant has no user: only a command naming {network} may act on it (else
    ``doveadm kick`` with no user would be an error, a custom command a surprise)."""
    glob = RevokeEvent("network_expired", "", network="203.0.113.0/24")
    assert revoke_argv(KICK, glob) == ["doveadm", "kick", "203.0.113.0/24"]
    assert revoke_argv(["doveadm", "kick", "{user}"], glob) is None
    assert revoke_argv(KICK, RevokeEvent("network_expired", "", network="")) is None


def test_environment_is_only_path_lang_and_ours() -> None:
    parent = {"PATH": "/bin", "LANG": "C.UTF-8", "SASLNETAUTH_DATABASE_URL": "sqlite:///x"}
    env = revoke_environment(RevokeEvent("kick", "al\x1bice", credential="phone"), parent)
    assert env == {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "SASLNETAUTH_USER": "al?ice",
        "SASLNETAUTH_EVENT": "kick",
        "SASLNETAUTH_CREDENTIAL": "phone",
        "SASLNETAUTH_NETWORK": "",
    }
