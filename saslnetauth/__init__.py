"""saslnetauth: reject valid SASL logins that come from outside a user's networks.

The package is layered (see ``docs/design.md``):

* pure, no I/O: :mod:`saslnetauth.policy.rules.netrules`, :mod:`saslnetauth.policy.verdict`,
  :mod:`saslnetauth.logfmt` (and the wire codec modules);
* storage: :mod:`saslnetauth.store` (the only place importing SQLAlchemy);
* credentials: :mod:`saslnetauth.credentials.passwords`;
* the one decision engine: :mod:`saslnetauth.policy.engine`;
* frontends: :mod:`saslnetauth.cli` and the servers.
"""

__version__ = "0.1.0"

# Exports are imported lazily so that light entry points (the checkpassword
# fast path) do not pay for modules they never use.
_EXPORTS = {
    "BackendError": "saslnetauth.errors",
    "ConfigError": "saslnetauth.errors",
    "InvalidHashError": "saslnetauth.errors",
    "InvalidNetworkError": "saslnetauth.errors",
    "InvalidUsernameError": "saslnetauth.errors",
    "SaslNetAuthError": "saslnetauth.errors",
    "SchemaOutdatedError": "saslnetauth.errors",
    "Decision": "saslnetauth.policy.verdict",
    "Reason": "saslnetauth.policy.verdict",
    "Verdict": "saslnetauth.policy.verdict",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saslnetauth' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "BackendError",
    "ConfigError",
    "Decision",
    "InvalidHashError",
    "InvalidNetworkError",
    "InvalidUsernameError",
    "Reason",
    "SaslNetAuthError",
    "SchemaOutdatedError",
    "Verdict",
    "__version__",
]
