"""The warning of ``net add`` and ``user net add`` for a network that overlaps a
trusted proxy's (``[proxies] networks``; docs/webmail.md): the proxy's addresses in
it are never matched, so the rule does not admit what its author may think."""

from __future__ import annotations

import click

from saslnetauth.cli.common import AppContext
from saslnetauth.policy.proxies import ProxyNetworks
from saslnetauth.policy.rules.netrules import NetworkRule

__all__ = ["warn_if_proxy"]


def warn_if_proxy(app: AppContext, rule: NetworkRule) -> None:
    """Warn on standard error when ``rule`` overlaps a trusted proxy's network."""
    hits = ProxyNetworks.parse(app.config.proxies.networks).overlapping(rule.networks)
    if hits:
        click.echo(
            f"saslnetauth: warning: {rule.spec} overlaps the trusted proxies "
            f"{', '.join(hits)} ([proxies] networks): a proxy's address is never a "
            "client's, so this rule never admits a login from it (docs/webmail.md)",
            err=True,
        )
