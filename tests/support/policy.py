"""The policy endpoint's shared secret in tests: the shipped Dovecot snippets with it
filled in, and saslnetauth configuration files that carry it (mode 0600, as ``serve``
demands of a file holding a secret)."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "POLICY_HEADER",
    "POLICY_KEYS",
    "POLICY_SECRET",
    "SNIPPETS",
    "policy_snippet",
    "write_secret_config",
]

ROOT = Path(__file__).resolve().parents[2] / "dovecot-examples"
SNIPPETS = {
    "2.3": ROOT / "dovecot" / "auth-policy-saslnetauth.conf.ext",
    "2.4": ROOT / "dovecot-2.4" / "auth-policy-saslnetauth.conf.ext",
}
POLICY_SECRET = "test-policy-secret-8f3a61c2d9e04b7a"
#: The header line as Dovecot sends it and saslnetauth expects it.
POLICY_HEADER = f"X-API-Key: {POLICY_SECRET}"
#: The [policy] key of a configuration file (a line of its own).
POLICY_KEYS = f'api_header = "{POLICY_HEADER}"\n'
#: The shipped snippets' header line, whose placeholder the admin replaces.
SHIPPED_HEADER = "auth_policy_server_api_header = X-API-Key: CHANGE-ME\n"


def policy_snippet(version: str, port: int, header: str = POLICY_HEADER) -> str:
    """The shipped snippet of Dovecot ``version`` asking 127.0.0.1:``port`` with ``header``."""
    snippet = SNIPPETS[version].read_text()
    assert "http://127.0.0.1:4001/" in snippet and SHIPPED_HEADER in snippet
    snippet = snippet.replace("http://127.0.0.1:4001/", f"http://127.0.0.1:{port}/")
    return snippet.replace(SHIPPED_HEADER, f"auth_policy_server_api_header = {header}\n")


def write_secret_config(path: Path, text: str) -> Path:
    """``text`` into ``path``, readable by its owner only."""
    path.write_text(text)
    path.chmod(0o600)
    return path
